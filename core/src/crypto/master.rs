//! The repository's master keys, made once by `init` and wrapped by every
//! key slot.
//!
//! Three separate keys, so each capability can be handed out alone:
//! - the id key: keyed BLAKE3 for chunk and node ids (dedup needs it, so
//!   backup-only hosts hold it);
//! - the metadata key: seals nodes, manifests, indexes, leases, markers
//!   (incremental backups reuse their parents' nodes, so backup-only hosts
//!   hold it);
//! - the data key pair (X25519): chunk data is sealed to its public key
//!   (crypto/data.rs); only full-access slots hold its secret.

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::cbor_bytes;
use crate::crypto::data::{DataCipher, DataOpener, DataPublicKey, DataSealer, DataSecretKey};
use crate::crypto::id_hasher::IdHasher;
use crate::crypto::seal::{self, SealKind};
use crate::crypto::secret::SecretKey;
use crate::error::{Error, Result};

/// What a key slot lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Everything: back up, restore, verify data, manage keys.
    Full,
    /// Back up (incremental too) and read metadata; not chunk data.
    BackupOnly,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::BackupOnly => "backup-only",
        }
    }
}

/// The master keys of a repository, as unlocked from one key slot.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    id_key: SecretKey,
    meta_key: SecretKey,
    data_public: DataPublicKey,
    data_secret: Option<DataSecretKey>,
    /// The slot they were unlocked from (for messages), empty if new.
    slot: String,
}

impl MasterKeys {
    /// A fresh, random set (full access).
    pub fn generate() -> Self {
        let data_secret = DataSecretKey::random();
        MasterKeys {
            id_key: SecretKey::random(),
            meta_key: SecretKey::random(),
            data_public: data_secret.public(),
            data_secret: Some(data_secret),
            slot: String::new(),
        }
    }

    pub fn access(&self) -> Access {
        if self.data_secret.is_some() {
            Access::Full
        } else {
            Access::BackupOnly
        }
    }

    /// The key slot these keys came from.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    pub(crate) fn with_slot(mut self, slot: &str) -> Self {
        self.slot = slot.to_string();
        self
    }

    /// The same keys without the data secret: what a backup-only slot holds.
    pub fn backup_only(&self) -> Self {
        MasterKeys {
            data_secret: None,
            ..self.clone()
        }
    }

    /// Names content in this repository.
    pub fn id_hasher(&self) -> IdHasher {
        IdHasher::keyed(self.id_key.clone())
    }

    /// Seals a metadata object (node, manifest, index, lease, marker).
    pub fn seal_meta(&self, kind: SealKind, name: &str, plaintext: &[u8]) -> Vec<u8> {
        seal::seal(kind, &self.meta_key, name, plaintext)
    }

    /// Opens a metadata object sealed by [`MasterKeys::seal_meta`].
    pub fn open_meta(&self, kind: SealKind, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        seal::open(kind, &self.meta_key, name, sealed)
    }

    /// A sealer for chunk data with `cipher` (the repository format's);
    /// every key can write data.
    pub fn data_sealer(&self, cipher: DataCipher) -> DataSealer {
        DataSealer::new(&self.data_public, cipher)
    }

    /// An opener for chunk data: needs a full-access key. `operation`
    /// names what is refused ("restore", "verify --read-data").
    pub fn data_opener(&self, operation: &str) -> Result<DataOpener> {
        Ok(DataOpener::new(self.require_full(operation)?.clone()))
    }

    fn require_full(&self, operation: &str) -> Result<&DataSecretKey> {
        self.data_secret
            .as_ref()
            .ok_or_else(|| Error::MissingCapability {
                operation: operation.to_string(),
                slot: self.slot.clone(),
            })
    }

    /// The key that authenticates key slots (crypto/slot.rs): derived from
    /// the data secret, so a backup-only host cannot forge a slot that
    /// passes for a full-access one.
    pub(crate) fn slot_auth_key(&self, operation: &str) -> Result<SecretKey> {
        let secret = self.require_full(operation)?;
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret.0.as_bytes())
            .expand(b"xfull key slot authentication v1", &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(SecretKey::from_bytes(okm))
    }

    /// The CBOR a key slot wraps.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let m = Material {
            id_key: *self.id_key.as_bytes(),
            meta_key: *self.meta_key.as_bytes(),
            data_public: self.data_public.0,
            data_secret: self.data_secret.as_ref().map(|s| *s.0.as_bytes()),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(160));
        ciborium::into_writer(&m, &mut *out).expect("encoding to memory does not fail");
        out
    }

    /// Reads what a slot wrapped (already authenticated by its AEAD, yet
    /// checked: the data secret must match the public key).
    pub(crate) fn decode(key: &str, plain: &[u8]) -> Result<Self> {
        let m: Material = ciborium::from_reader(plain)
            .map_err(|e| Error::corrupt(key, format!("wrapped keys undecodable: {e}")))?;
        let data_secret = m
            .data_secret
            .map(|s| DataSecretKey(SecretKey::from_bytes(s)));
        let data_public = DataPublicKey(m.data_public);
        if let Some(s) = &data_secret
            && s.public() != data_public
        {
            return Err(Error::corrupt(key, "wrapped data key pair does not match"));
        }
        Ok(MasterKeys {
            id_key: SecretKey::from_bytes(m.id_key),
            meta_key: SecretKey::from_bytes(m.meta_key),
            data_public,
            data_secret,
            slot: String::new(),
        })
    }

    /// A public value that names this key set, for the repository config
    /// to record at `init`: keys unlocked from a slot that was planted (or
    /// copied from another repository) then fail to match. A PRF output
    /// under the id key and a label: it reveals nothing about the keys.
    pub fn check_value(&self) -> [u8; 32] {
        let mut input = Vec::with_capacity(64);
        input.extend_from_slice(b"xfull key check v1\0");
        input.extend_from_slice(&self.data_public.0);
        *blake3::keyed_hash(self.id_key.as_bytes(), &input).as_bytes()
    }

    /// True when both sets are the same repository's keys (the data
    /// secret aside).
    pub fn same_repository(&self, other: &MasterKeys) -> bool {
        self.id_key == other.id_key
            && self.meta_key == other.meta_key
            && self.data_public == other.data_public
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Material {
    #[serde(with = "cbor_bytes::fixed")]
    id_key: [u8; 32],
    #[serde(with = "cbor_bytes::fixed")]
    meta_key: [u8; 32],
    #[serde(with = "cbor_bytes::fixed")]
    data_public: [u8; 32],
    #[serde(with = "cbor_bytes::fixed_opt")]
    data_secret: Option<[u8; 32]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_round_trips_and_backup_only_drops_the_data_secret() {
        let k = MasterKeys::generate();
        let back = MasterKeys::decode("keys/x", &k.encode()).unwrap();
        assert!(back.same_repository(&k));
        assert_eq!(back.access(), Access::Full);
        let b = k.backup_only();
        assert_eq!(b.access(), Access::BackupOnly);
        let back = MasterKeys::decode("keys/x", &b.encode()).unwrap();
        assert_eq!(back.access(), Access::BackupOnly);
        assert!(back.same_repository(&k));
    }

    #[test]
    fn a_backup_only_key_writes_data_it_cannot_read() {
        let full = MasterKeys::generate();
        let backup = full.backup_only().with_slot("0123456789abcdef");
        let sealed =
            backup
                .data_sealer(DataCipher::Aes256Gcm)
                .seal(SealKind::Chunk, "c", b"secret");
        let e = backup.data_opener("restore").unwrap_err();
        assert!(
            matches!(&e, Error::MissingCapability { operation, slot }
                if operation == "restore" && slot == "0123456789abcdef"),
            "{e}"
        );
        assert!(e.to_string().contains("needs a full-access key"), "{e}");
        let opener = full.data_opener("restore").unwrap();
        assert_eq!(
            opener.open(SealKind::Chunk, "c", &sealed).unwrap(),
            b"secret"
        );
        // Metadata stays readable with the backup-only key.
        let node = full.seal_meta(SealKind::Node, "n", b"node");
        assert_eq!(
            backup.open_meta(SealKind::Node, "n", &node).unwrap(),
            b"node"
        );
        assert_eq!(full.id_hasher().id(b"x"), backup.id_hasher().id(b"x"));
        assert!(backup.slot_auth_key("key add").is_err());
    }

    #[test]
    fn the_check_value_is_the_same_for_every_slot_of_a_repository_only() {
        let k = MasterKeys::generate();
        assert_eq!(k.check_value(), k.backup_only().check_value());
        assert_ne!(k.check_value(), MasterKeys::generate().check_value());
    }

    #[test]
    fn a_mismatched_data_pair_is_refused() {
        let k = MasterKeys::generate();
        let mut m = k.clone();
        m.data_public = DataSecretKey::random().public();
        assert!(
            MasterKeys::decode("keys/x", &m.encode())
                .unwrap_err()
                .is_damage()
        );
    }
}
