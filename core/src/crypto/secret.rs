//! Secret material: 32-byte keys and the user's password or key file,
//! wiped from memory when dropped and never shown by `Debug`.

use std::fmt;

use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A 32-byte symmetric key (an AEAD key, the keyed-hash key, an X25519
/// secret scalar).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A fresh key from the operating system's generator (through `rand`'s
    /// thread generator, reseeded from it).
    pub fn random() -> Self {
        SecretKey(random_array())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// `N` random bytes (nonces, salts, keys).
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

/// What the user unlocks a repository with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A password: stretched with argon2id before use.
    Password,
    /// The content of a key file: 32 random bytes, used as they are.
    KeyFile,
}

/// A password or key file, with where it came from (for messages: "the
/// password from XFULL_PASSWORD_FILE (/root/pw)").
#[derive(Clone)]
pub struct Secret {
    kind: SecretKind,
    bytes: Zeroizing<Vec<u8>>,
    source: String,
}

impl Secret {
    pub fn password(bytes: Vec<u8>, source: impl Into<String>) -> Self {
        Secret {
            kind: SecretKind::Password,
            bytes: Zeroizing::new(bytes),
            source: source.into(),
        }
    }

    /// The secret of a key file (see [`crate::crypto::keyfile`]).
    pub fn key_file(key: &SecretKey, source: impl Into<String>) -> Self {
        Secret {
            kind: SecretKind::KeyFile,
            bytes: Zeroizing::new(key.as_bytes().to_vec()),
            source: source.into(),
        }
    }

    pub fn kind(&self) -> &SecretKind {
        &self.kind
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where the secret came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let k = SecretKey::from_bytes([0x41; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(..)");
        let s = Secret::password(b"hunter2".to_vec(), "the password from XFULL_PASSWORD");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("XFULL_PASSWORD"), "{shown}");
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(SecretKey::random(), SecretKey::random());
    }
}
