//! Byte fields as CBOR byte strings (not arrays of integers), with their
//! lengths checked while decoding: `#[serde(with = "cbor_bytes::fixed")]`
//! for `[u8; N]`, `fixed_opt` for `Option<[u8; N]>`, `bounded` for a
//! `Vec<u8>` of at most [`bounded::MAX`] bytes.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

struct Fixed<const N: usize>;

impl<const N: usize> Visitor<'_> for Fixed<N> {
    type Value = [u8; N];
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string of {N} bytes")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }
}

pub mod fixed {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_bytes(Fixed::<N>)
    }
}

pub mod fixed_opt {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(
        v: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    struct Bytes<'a>(&'a [u8]);
    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct Opt<const N: usize>;
    impl<'de, const N: usize> Visitor<'de> for Opt<N> {
        type Value = Option<[u8; N]>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "null or a byte string of {N} bytes")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_bytes(Fixed::<N>).map(Some)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        d.deserialize_option(Opt::<N>)
    }
}

pub mod bounded {
    use super::*;

    /// Longest byte field of a key slot: more is not something xfull wrote.
    pub const MAX: usize = 1024;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct Bounded;
    impl Visitor<'_> for Bounded {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a byte string of at most {MAX} bytes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > MAX {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            if v.len() > MAX {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(Bounded)
    }
}
