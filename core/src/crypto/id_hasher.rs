//! Content ids: plain BLAKE3 in an unencrypted repository, keyed BLAKE3
//! in an encrypted one. Every place that names a chunk or node by its
//! content goes through one [`IdHasher`], so turning encryption on changes
//! the hasher and nothing else.
//!
//! Why keyed: with plain BLAKE3, anyone who can list the bucket confirms
//! whether a file they know is stored (hash its chunks, look for the
//! names). With the key, names are a PRF of the content (BLAKE3's keyed
//! mode is a PRF/MAC by design), so they say nothing to whoever lacks the
//! key, yet equal content still gets equal ids: points of different VMs
//! still deduplicate.

use crate::crypto::secret::SecretKey;
use crate::id::ObjectId;

/// Names content: `IdHasher::plain()` or `IdHasher::keyed(key)`.
#[derive(Clone, Debug)]
pub struct IdHasher(Mode);

#[derive(Clone, Debug)]
enum Mode {
    Plain,
    Keyed(SecretKey),
}

impl IdHasher {
    /// Plain BLAKE3, as in a repository made with `--encryption none`
    /// (equal to [`ObjectId::of`]).
    pub fn plain() -> Self {
        IdHasher(Mode::Plain)
    }

    /// BLAKE3 in keyed mode under the repository's id key.
    pub fn keyed(key: SecretKey) -> Self {
        IdHasher(Mode::Keyed(key))
    }

    pub fn is_keyed(&self) -> bool {
        matches!(self.0, Mode::Keyed(_))
    }

    /// The id of `data`.
    pub fn id(&self, data: &[u8]) -> ObjectId {
        let hash = match &self.0 {
            Mode::Plain => blake3::hash(data),
            Mode::Keyed(key) => blake3::keyed_hash(key.as_bytes(), data),
        };
        ObjectId::from_bytes(*hash.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_the_unencrypted_id() {
        assert_eq!(IdHasher::plain().id(b"abc"), ObjectId::of(b"abc"));
        assert!(!IdHasher::plain().is_keyed());
    }

    #[test]
    fn keyed_ids_depend_on_the_key_and_hide_the_plain_hash() {
        let a = IdHasher::keyed(SecretKey::from_bytes([1; 32]));
        let b = IdHasher::keyed(SecretKey::from_bytes([2; 32]));
        assert!(a.is_keyed());
        assert_eq!(a.id(b"abc"), a.id(b"abc"), "equal content, equal id: dedup");
        assert_ne!(a.id(b"abc"), a.id(b"abd"));
        assert_ne!(a.id(b"abc"), b.id(b"abc"), "two repositories, two names");
        assert_ne!(a.id(b"abc"), ObjectId::of(b"abc"));
        // The BLAKE3 reference test vector for keyed mode (key = the
        // 32 bytes "whats the Elvish word for friend", empty input), so
        // that the mode is the standard one, not something of our own.
        let k = IdHasher::keyed(SecretKey::from_bytes(*b"whats the Elvish word for friend"));
        assert_eq!(
            k.id(b"").to_hex(),
            "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"
        );
    }
}
