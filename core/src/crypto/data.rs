//! Chunk data sealed so that a backup-only key can write it but not read
//! it.
//!
//! The repository has an X25519 key pair for data. Full-access key slots
//! hold its secret; backup-only slots hold only its public key. A writer
//! (one backup session, or one pack) draws an ephemeral X25519 key pair,
//! does Diffie-Hellman with the repository's public key, and derives a
//! data key with HKDF-SHA256 over the shared secret and both public keys:
//! the key encapsulation of HPKE (RFC 9180, DHKEM(X25519, HKDF-SHA256)).
//! It seals each chunk under that key with XChaCha20-Poly1305
//! (crypto/seal.rs, mode 2) and writes its ephemeral public key into each
//! object's header; then it forgets the ephemeral secret. Only the holder
//! of the repository's data secret can redo the Diffie-Hellman and derive
//! the key again, so a host that only backs up cannot read what other
//! sessions, or its own earlier sessions, wrote.

use std::collections::HashMap;
use std::sync::Mutex;

use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::crypto::seal::{EPK_LEN, Envelope, SealKind, SealMode, seal_with};
use crate::crypto::secret::{SecretKey, random_array};
use crate::error::{Error, Result};

const HKDF_INFO: &[u8] = b"xfull data key v1";

/// The repository's data public key: lets a writer seal chunk data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DataPublicKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for DataPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataPublicKey({})", hex::encode(&self.0[..6]))
    }
}

impl DataPublicKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The repository's data secret: opens chunk data. Only full-access slots
/// hold it.
#[derive(Clone, Debug)]
pub struct DataSecretKey(pub(crate) SecretKey);

impl DataSecretKey {
    pub fn random() -> Self {
        DataSecretKey(SecretKey::random())
    }

    pub fn public(&self) -> DataPublicKey {
        let secret = StaticSecret::from(*self.0.as_bytes());
        DataPublicKey(PublicKey::from(&secret).to_bytes())
    }
}

/// HKDF-SHA256 from the shared secret, with both public keys in the info
/// (as HPKE's kem_context), so a key is bound to its exchange.
fn derive(shared: &[u8; 32], epk: &[u8; 32], recipient: &DataPublicKey) -> SecretKey {
    let mut info = Vec::with_capacity(HKDF_INFO.len() + 64);
    info.extend_from_slice(HKDF_INFO);
    info.extend_from_slice(epk);
    info.extend_from_slice(&recipient.0);
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, shared)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey::from_bytes(okm)
}

/// Seals chunk data for one writer (a session or a pack): one ephemeral
/// key exchange, then one AEAD key for every object it seals.
#[derive(Debug)]
pub struct DataSealer {
    epk: [u8; EPK_LEN],
    key: SecretKey,
}

impl DataSealer {
    pub fn new(recipient: &DataPublicKey) -> Self {
        // A fresh ephemeral secret (zeroized when dropped, at the end of
        // this function).
        let ephemeral = StaticSecret::from(random_array::<32>());
        let epk = PublicKey::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&PublicKey::from(recipient.0));
        let key = derive(shared.as_bytes(), &epk, recipient);
        DataSealer { epk, key }
    }

    /// Seals `plaintext`, an object of `kind` named `name`.
    pub fn seal(&self, kind: SealKind, name: &str, plaintext: &[u8]) -> Vec<u8> {
        seal_with(
            kind,
            SealMode::Data { epk: self.epk },
            &self.key,
            name,
            plaintext,
        )
    }
}

/// Opens chunk data; made from a full-access key only.
#[derive(Debug)]
pub struct DataOpener {
    secret: DataSecretKey,
    public: DataPublicKey,
    /// Data keys by ephemeral public key: one exchange per writer, not
    /// per chunk. Bounded: cleared when full.
    keys: Mutex<HashMap<[u8; EPK_LEN], SecretKey>>,
}

const KEY_CACHE: usize = 4096;

impl DataOpener {
    pub fn new(secret: DataSecretKey) -> Self {
        let public = secret.public();
        DataOpener {
            secret,
            public,
            keys: Mutex::default(),
        }
    }

    fn key_for(&self, name: &str, epk: &[u8; EPK_LEN]) -> Result<SecretKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = keys.get(epk) {
            return Ok(k.clone());
        }
        let secret = StaticSecret::from(*self.secret.0.as_bytes());
        let shared = secret.diffie_hellman(&PublicKey::from(*epk));
        // A low-order point makes the shared secret independent of our
        // key (all zeros): no honest writer sends one.
        if !shared.was_contributory() {
            return Err(Error::corrupt(
                name,
                "its ephemeral public key is a low-order point",
            ));
        }
        let key = derive(shared.as_bytes(), epk, &self.public);
        if keys.len() >= KEY_CACHE {
            keys.clear();
        }
        keys.insert(*epk, key.clone());
        Ok(key)
    }

    /// Opens chunk data sealed by a [`DataSealer`]; any change to the
    /// bytes, the name or the kind is damage naming `name`.
    pub fn open(&self, kind: SealKind, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let env = Envelope::parse(name, sealed)?;
        let SealMode::Data { epk } = env.mode else {
            return Err(Error::corrupt(
                name,
                format!(
                    "is sealed under the metadata key, expected {} data",
                    kind.name()
                ),
            ));
        };
        let key = self.key_for(name, &epk)?;
        env.open_with(kind, &key, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::seal::{self, overhead};

    #[test]
    fn sealed_data_opens_only_with_the_data_secret() {
        let secret = DataSecretKey::random();
        let sealer = DataSealer::new(&secret.public());
        let name = "chunks/ab/ab01";
        let s = sealer.seal(SealKind::Chunk, name, b"guest data");
        assert_eq!(s.len(), 10 + overhead(true));
        let opener = DataOpener::new(secret);
        assert_eq!(
            opener.open(SealKind::Chunk, name, &s).unwrap(),
            b"guest data"
        );
        // Another repository's secret does not open it.
        let other = DataOpener::new(DataSecretKey::random());
        assert!(
            other
                .open(SealKind::Chunk, name, &s)
                .unwrap_err()
                .is_damage()
        );
        // Nor under another name, or as another kind.
        assert!(opener.open(SealKind::Chunk, "chunks/ab/ab02", &s).is_err());
        assert!(opener.open(SealKind::Node, name, &s).is_err());
    }

    #[test]
    fn one_exchange_per_writer_distinct_writers_distinct_keys() {
        let secret = DataSecretKey::random();
        let a = DataSealer::new(&secret.public());
        let b = DataSealer::new(&secret.public());
        assert_ne!(a.epk, b.epk);
        assert_ne!(a.key.as_bytes(), b.key.as_bytes());
        let opener = DataOpener::new(secret);
        for (i, sealer) in [&a, &b, &a].into_iter().enumerate() {
            let name = format!("c{i}");
            let s = sealer.seal(SealKind::Chunk, &name, name.as_bytes());
            assert_eq!(
                opener.open(SealKind::Chunk, &name, &s).unwrap(),
                name.as_bytes()
            );
        }
        assert_eq!(opener.keys.lock().unwrap().len(), 2);
    }

    #[test]
    fn data_and_metadata_modes_do_not_mix() {
        let secret = DataSecretKey::random();
        let meta = SecretKey::random();
        let m = seal::seal(SealKind::Chunk, &meta, "c", b"x");
        assert!(
            DataOpener::new(secret.clone())
                .open(SealKind::Chunk, "c", &m)
                .is_err()
        );
        let d = DataSealer::new(&secret.public()).seal(SealKind::Chunk, "c", b"x");
        assert!(seal::open(SealKind::Chunk, &meta, "c", &d).is_err());
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        let secret = DataSecretKey::random();
        let mut s = DataSealer::new(&secret.public()).seal(SealKind::Chunk, "c", b"x");
        s[6..6 + EPK_LEN].fill(0); // the point of order 1 (u = 0)
        let e = DataOpener::new(secret)
            .open(SealKind::Chunk, "c", &s)
            .unwrap_err();
        assert!(e.to_string().contains("low-order"), "{e}");
    }
}
