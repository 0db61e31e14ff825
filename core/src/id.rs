//! Typed identifiers: content ids (BLAKE3) and point ids.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A 32-byte BLAKE3 hash naming a chunk or node by its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    /// The id of `data`: its BLAKE3 hash.
    pub fn of(data: &[u8]) -> Self {
        ObjectId(*blake3::hash(data).as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ObjectId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as used in object keys.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short prefix for messages where the full id would be noise.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// The first 8 bytes as a number, ordered as the ids are: how sets of
    /// millions of ids (gc's marks, verify's referenced chunks, a
    /// backup's present nodes, a rebuild's indexed packs) hold them, at a
    /// prefix collision's odds (about 2^-64 per pair).
    pub fn prefix(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

impl FromStr for ObjectId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidName {
            kind: "object id",
            name: s.to_string(),
            reason: "expected 64 hex digits".into(),
        })?;
        Ok(ObjectId(out))
    }
}

// Ids are stored as CBOR byte strings (34 bytes), not as arrays of 32
// integers (up to 66 bytes): nodes are mostly ids, so this halves them.
impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ObjectId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-byte id")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ObjectId, E> {
                let arr: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(ObjectId(arr))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ObjectId, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A point id: UTC time plus a short random suffix, e.g.
/// `20261125T194155Z-3fa2`. Sorting ids sorts points by time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PointId(String);

const POINT_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl PointId {
    /// A fresh id for a point taken at `time`.
    pub fn new(time: DateTime<Utc>) -> Self {
        let suffix: u16 = rand::rng().random();
        PointId(format!("{}-{suffix:04x}", time.format(POINT_TIME_FORMAT)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `s` if it is an id exactly as [`PointId::new`] writes them. The
    /// parser takes more: shorter time fields (`0261125T194155Z-3fa2`, a
    /// suffix of a real id) and upper-case hex, which no stored id has.
    pub fn parse_whole(s: &str) -> Option<PointId> {
        let id: PointId = s.parse().ok()?;
        let (time, suffix) = s.split_once('-')?;
        let written = id.time().format(POINT_TIME_FORMAT).to_string();
        (time == written && !suffix.bytes().any(|b| b.is_ascii_uppercase())).then_some(id)
    }

    /// The time in the id (to the second).
    pub fn time(&self) -> DateTime<Utc> {
        let t = self.0.split('-').next().unwrap_or_default();
        chrono::NaiveDateTime::parse_from_str(t, POINT_TIME_FORMAT)
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PointId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidName {
            kind: "point id",
            name: s.to_string(),
            reason: reason.to_string(),
        };
        let (time, suffix) = s
            .split_once('-')
            .ok_or_else(|| bad("expected TIME-SUFFIX, e.g. 20261125T194155Z-3fa2"))?;
        chrono::NaiveDateTime::parse_from_str(time, POINT_TIME_FORMAT)
            .map_err(|_| bad("the time part must look like 20261125T194155Z"))?;
        if suffix.len() != 4 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the suffix must be 4 hex digits"));
        }
        Ok(PointId(s.to_string()))
    }
}

impl TryFrom<String> for PointId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<PointId> for String {
    fn from(p: PointId) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_hex_round_trip() {
        let id = ObjectId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ObjectId>().unwrap(), id);
        assert!("zz".parse::<ObjectId>().is_err());
    }

    #[test]
    fn point_ids_sort_by_time_and_validate() {
        let a = PointId::new("2026-01-01T00:00:00Z".parse().unwrap());
        let b = PointId::new("2026-01-02T00:00:00Z".parse().unwrap());
        assert!(a < b);
        assert_eq!(a.as_str().parse::<PointId>().unwrap(), a);
        assert_eq!(
            b.time(),
            "2026-01-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        for bad in [
            "",
            "x",
            "20261125T194155Z",
            "20261125T194155Z-xyz1",
            "2026-3fa2",
        ] {
            assert!(bad.parse::<PointId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_ids_as_written_are_whole() {
        // A fixed suffix with letters: a random one may be digits only,
        // which have no upper case.
        let whole = "20261125T194155Z-3fa2";
        assert_eq!(PointId::parse_whole(whole), whole.parse().ok());
        assert!(PointId::parse_whole(whole).is_some());
        for not in [&whole[1..], "20261125T194155Z-3FA2", "3fa2"] {
            assert_eq!(PointId::parse_whole(not), None, "{not}");
        }
    }
}
