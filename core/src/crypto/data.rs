//! Chunk data sealed so that a backup-only key can write it but not read
//! it.
//!
//! The repository has an X25519 key pair for data. Full-access key slots
//! hold its secret; backup-only slots hold only its public key. A writer
//! (one backup session, or one pack) draws an ephemeral X25519 key pair,
//! does Diffie-Hellman with the repository's public key, and derives a
//! data key with HKDF-SHA256 over the shared secret and both public keys:
//! the key encapsulation of HPKE (RFC 9180, DHKEM(X25519, HKDF-SHA256)).
//! It seals each chunk under that key, with AES-256-GCM and a counter
//! nonce (crypto/seal_gcm.rs, mode 3; repository format 4) or
//! XChaCha20-Poly1305 (crypto/seal.rs, mode 2; formats 2 and 3), and
//! writes its ephemeral public key into each object's header; then it
//! forgets the ephemeral secret. Only the holder
//! of the repository's data secret can redo the Diffie-Hellman and derive
//! the key again, so a host that only backs up cannot read what other
//! sessions, or its own earlier sessions, wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aes_gcm::Aes256Gcm;
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::crypto::seal::{EPK_LEN, Envelope, SealKind, SealMode, seal_with};
use crate::crypto::seal_gcm::{self, GcmSealer};
use crate::crypto::secret::{SecretKey, random_array};
use crate::error::{Error, Result};

/// The AEAD that seals chunk data: decided by the repository's format
/// (`RepoConfig::data_cipher`). Readers open both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataCipher {
    /// Formats 2 and 3 (envelope mode 2).
    XChaCha20Poly1305,
    /// Format 4 (envelope mode 3).
    Aes256Gcm,
}

impl DataCipher {
    /// Its name in `init --encryption` and init's JSON.
    pub fn name(self) -> &'static str {
        match self {
            DataCipher::XChaCha20Poly1305 => "xchacha20-poly1305",
            DataCipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The HKDF info: each cipher gets its own key from an exchange, so
    /// no key is ever used with two ciphers.
    fn info(self) -> &'static [u8] {
        match self {
            DataCipher::XChaCha20Poly1305 => b"xfull data key v1",
            DataCipher::Aes256Gcm => b"xfull data key v2 aes-256-gcm",
        }
    }
}

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
fn derive(
    cipher: DataCipher,
    shared: &[u8; 32],
    epk: &[u8; 32],
    recipient: &DataPublicKey,
) -> SecretKey {
    let mut info = Vec::with_capacity(cipher.info().len() + 64);
    info.extend_from_slice(cipher.info());
    info.extend_from_slice(epk);
    info.extend_from_slice(&recipient.0);
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, shared)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey::from_bytes(okm)
}

/// Seals chunk data for one writer (a session or a pack): one ephemeral
/// key exchange, then one AEAD key for every object it seals. Not `Clone`
/// (an AES-GCM writer's nonce counter must not be duplicated).
#[derive(Debug)]
pub struct DataSealer(Sealing);

#[derive(Debug)]
enum Sealing {
    XChaCha { epk: [u8; EPK_LEN], key: SecretKey },
    Gcm(Box<GcmSealer>),
}

impl DataSealer {
    pub fn new(recipient: &DataPublicKey, cipher: DataCipher) -> Self {
        // A fresh ephemeral secret (zeroized when dropped, at the end of
        // this function).
        let ephemeral = StaticSecret::from(random_array::<32>());
        let epk = PublicKey::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&PublicKey::from(recipient.0));
        let key = derive(cipher, shared.as_bytes(), &epk, recipient);
        DataSealer(match cipher {
            DataCipher::XChaCha20Poly1305 => Sealing::XChaCha { epk, key },
            DataCipher::Aes256Gcm => Sealing::Gcm(Box::new(GcmSealer::new(epk, &key))),
        })
    }

    /// Seals `plaintext`, an object of `kind` named `name`.
    pub fn seal(&self, kind: SealKind, name: &str, plaintext: &[u8]) -> Vec<u8> {
        match &self.0 {
            Sealing::XChaCha { epk, key } => {
                seal_with(kind, SealMode::Data { epk: *epk }, key, name, plaintext)
            }
            Sealing::Gcm(g) => g.seal(kind, name, plaintext),
        }
    }
}

/// A writer's key as a reader keeps it.
#[derive(Clone)]
enum OpenKey {
    XChaCha(SecretKey),
    Gcm(Arc<Aes256Gcm>),
}

/// Opens chunk data; made from a full-access key only.
#[derive(Debug)]
pub struct DataOpener {
    secret: DataSecretKey,
    public: DataPublicKey,
    /// Data keys by ephemeral public key and cipher: one exchange per
    /// writer, not per chunk. Bounded: cleared when full.
    keys: Mutex<HashMap<([u8; EPK_LEN], DataCipher), OpenKey>>,
}

impl std::fmt::Debug for OpenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenKey::XChaCha(_) => "OpenKey::XChaCha(..)",
            OpenKey::Gcm(_) => "OpenKey::Gcm(..)",
        })
    }
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

    fn key_for(&self, name: &str, epk: &[u8; EPK_LEN], cipher: DataCipher) -> Result<OpenKey> {
        let slot = (*epk, cipher);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = keys.get(&slot) {
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
        let key = derive(cipher, shared.as_bytes(), epk, &self.public);
        let key = match cipher {
            DataCipher::XChaCha20Poly1305 => OpenKey::XChaCha(key),
            DataCipher::Aes256Gcm => OpenKey::Gcm(Arc::new(seal_gcm::cipher(&key))),
        };
        if keys.len() >= KEY_CACHE {
            keys.clear();
        }
        keys.insert(slot, key.clone());
        Ok(key)
    }

    /// Opens chunk data sealed by a [`DataSealer`]; any change to the
    /// bytes, the name or the kind is damage naming `name`.
    pub fn open(&self, kind: SealKind, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(kind, name, sealed, &mut out)?;
        Ok(out)
    }

    /// [`DataOpener::open`] into `out` (resized to the plaintext): the
    /// stored bytes are decrypted straight into it, so a reader that
    /// reuses `out` copies and allocates nothing per chunk. On an error
    /// `out` holds nothing to use (stale or partial bytes).
    pub fn open_into(
        &self,
        kind: SealKind,
        name: &str,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let env = Envelope::parse(name, sealed)?;
        let (epk, cipher) = match env.mode {
            SealMode::Data { epk } => (epk, DataCipher::XChaCha20Poly1305),
            SealMode::DataGcm { epk } => (epk, DataCipher::Aes256Gcm),
            SealMode::Metadata => {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "is sealed under the metadata key, expected {} data",
                        kind.name()
                    ),
                ));
            }
        };
        match self.key_for(name, &epk, cipher)? {
            OpenKey::XChaCha(key) => env.open_into(kind, &key, name, out),
            OpenKey::Gcm(c) => seal_gcm::open_into(&env, &c, kind, name, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::seal::{self, overhead};

    const BOTH: [DataCipher; 2] = [DataCipher::Aes256Gcm, DataCipher::XChaCha20Poly1305];

    #[test]
    fn sealed_data_opens_only_with_the_data_secret() {
        for cipher in BOTH {
            let secret = DataSecretKey::random();
            let sealer = DataSealer::new(&secret.public(), cipher);
            let name = "chunks/ab/ab01";
            let s = sealer.seal(SealKind::Chunk, name, b"guest data");
            let mode = match cipher {
                DataCipher::Aes256Gcm => SealMode::DataGcm { epk: [0; 32] },
                DataCipher::XChaCha20Poly1305 => SealMode::Data { epk: [0; 32] },
            };
            assert_eq!(s[5], mode.byte());
            assert_eq!(s.len(), 10 + overhead(mode));
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
    }

    #[test]
    fn every_change_to_sealed_data_is_damage_naming_it() {
        for cipher in BOTH {
            let secret = DataSecretKey::random();
            let name = "ab01";
            let s = DataSealer::new(&secret.public(), cipher).seal(SealKind::Chunk, name, b"data");
            let opener = DataOpener::new(secret);
            for i in 0..s.len() {
                let mut t = s.clone();
                t[i] ^= 0x01;
                let e = opener.open(SealKind::Chunk, name, &t).unwrap_err();
                if i == 3 {
                    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
                    continue;
                }
                // The mode byte too: 3 read as 2 (and 2 as 3) is opened
                // with the other cipher's key and fails its tag.
                assert!(
                    e.is_damage() && e.to_string().contains(name),
                    "byte {i}: {e}"
                );
            }
        }
    }

    #[test]
    fn one_exchange_per_writer_distinct_writers_distinct_keys() {
        for cipher in BOTH {
            let secret = DataSecretKey::random();
            let a = DataSealer::new(&secret.public(), cipher);
            let b = DataSealer::new(&secret.public(), cipher);
            // Distinct ephemeral keys (bytes 6..38 of every object).
            let (sa, sb) = (
                a.seal(SealKind::Chunk, "c", b"x"),
                b.seal(SealKind::Chunk, "c", b"x"),
            );
            assert_ne!(sa[6..38], sb[6..38]);
            let opener = DataOpener::new(secret);
            let mut out = Vec::new();
            for (i, sealer) in [&a, &b, &a].into_iter().enumerate() {
                let name = format!("c{i}");
                let s = sealer.seal(SealKind::Chunk, &name, name.as_bytes());
                opener
                    .open_into(SealKind::Chunk, &name, &s, &mut out)
                    .unwrap();
                assert_eq!(out, name.as_bytes());
            }
            assert_eq!(opener.keys.lock().unwrap().len(), 2);
        }
    }

    #[test]
    fn an_exchange_gives_each_cipher_its_own_key() {
        let secret = DataSecretKey::random();
        let (epk, public) = ([9u8; 32], secret.public());
        let a = derive(DataCipher::Aes256Gcm, &[1; 32], &epk, &public);
        let x = derive(DataCipher::XChaCha20Poly1305, &[1; 32], &epk, &public);
        assert_ne!(a.as_bytes(), x.as_bytes());
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
        for cipher in BOTH {
            let d = DataSealer::new(&secret.public(), cipher).seal(SealKind::Chunk, "c", b"x");
            assert!(seal::open(SealKind::Chunk, &meta, "c", &d).is_err());
        }
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        for cipher in BOTH {
            let secret = DataSecretKey::random();
            let mut s = DataSealer::new(&secret.public(), cipher).seal(SealKind::Chunk, "c", b"x");
            s[6..6 + EPK_LEN].fill(0); // the point of order 1 (u = 0)
            let e = DataOpener::new(secret)
                .open(SealKind::Chunk, "c", &s)
                .unwrap_err();
            assert!(e.to_string().contains("low-order"), "{e}");
        }
    }
}
