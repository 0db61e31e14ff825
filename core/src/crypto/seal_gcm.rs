//! Mode 3 of the sealed-object envelope (crypto/seal.rs): chunk data
//! under AES-256-GCM, with the key of one writer (crypto/data.rs) and a
//! nonce from that writer's counter.
//!
//! Why a counter and not a random nonce: AES-GCM's nonce is 96 bits, so
//! random nonces are limited to about 2^32 objects per key before a
//! repeat becomes likely enough to matter, and one repeat under a key
//! gives away the authentication key. A data key lives in one
//! [`GcmSealer`] (it is derived from an ephemeral key exchange and never
//! stored), so counting from zero makes every nonce under it unique; the
//! sealer is not `Clone` so its counter cannot be duplicated. Metadata,
//! sealed by many hosts under one long-lived key, stays XChaCha20-Poly1305
//! with random 192-bit nonces.
//!
//! GCM's other limits, at the volumes one writer seals: the bound on an
//! attacker's advantage grows with (blocks sealed under the key)^2 / 2^128;
//! a writer that seals 16 TiB (2^40 blocks) stays below 2^-48. Messages
//! must be under 64 GiB; objects are at most a chunk. GCM does not commit
//! to its key, which matters where one ciphertext may be tried under
//! several keys: here each object names its one key (its ephemeral public
//! key, bound into the associated data), and its plaintext must hash to
//! its chunk id.

use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::KeyInit;
use aes_gcm::{Aes256Gcm, Nonce};

use crate::crypto::seal::{EPK_LEN, Envelope, GCM_NONCE_LEN, SealKind, SealMode, header, seal_in};
use crate::crypto::secret::SecretKey;
use crate::error::{Error, Result};

/// An AES-256-GCM key, expanded once.
pub(crate) fn cipher(key: &SecretKey) -> Aes256Gcm {
    Aes256Gcm::new(key.as_bytes().into())
}

/// One writer's data key and nonce counter.
pub(crate) struct GcmSealer {
    epk: [u8; EPK_LEN],
    cipher: Aes256Gcm,
    next: AtomicU64,
}

impl std::fmt::Debug for GcmSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcmSealer")
            .field("epk", &hex::encode(&self.epk[..6]))
            .field("sealed", &self.next.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GcmSealer {
    pub(crate) fn new(epk: [u8; EPK_LEN], key: &SecretKey) -> Self {
        GcmSealer {
            epk,
            cipher: cipher(key),
            next: AtomicU64::new(0),
        }
    }

    /// Seals `plaintext`, an object of `kind` named `name`.
    pub(crate) fn seal(&self, kind: SealKind, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 2^64 objects under one key cannot happen; a wrap would repeat.
        assert_ne!(n, u64::MAX, "nonce counter exhausted");
        seal_under_nonce(&self.cipher, kind, self.epk, name, plaintext, nonce_of(n))
    }
}

/// The nonce of the `n`th object a writer seals: 4 zero bytes, then `n`
/// big-endian.
fn nonce_of(n: u64) -> [u8; GCM_NONCE_LEN] {
    let mut nonce = [0u8; GCM_NONCE_LEN];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

fn seal_under_nonce(
    cipher: &Aes256Gcm,
    kind: SealKind,
    epk: [u8; EPK_LEN],
    name: &str,
    plaintext: &[u8],
    nonce: [u8; GCM_NONCE_LEN],
) -> Vec<u8> {
    let out = header(kind, SealMode::DataGcm { epk }, plaintext.len());
    seal_in(cipher, out, name, plaintext, &Nonce::from(nonce))
}

/// Opens a mode 3 envelope expected to be `kind` into `out` (resized to
/// the plaintext), decrypting from the stored bytes straight into it.
pub(crate) fn open_into(
    env: &Envelope<'_>,
    cipher: &Aes256Gcm,
    kind: SealKind,
    name: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    if !matches!(env.mode, SealMode::DataGcm { .. }) {
        return Err(Error::Internal(format!(
            "{name}: an XChaCha20-Poly1305 envelope opened as AES-256-GCM"
        )));
    }
    env.open_in(cipher, kind, name, out)
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::inout::InOutBuf;
    use aes_gcm::aead::{Aead, AeadInOut, Payload};

    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn open(cipher: &Aes256Gcm, kind: SealKind, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        open_into(
            &Envelope::parse(name, sealed)?,
            cipher,
            kind,
            name,
            &mut out,
        )?;
        Ok(out)
    }

    /// A NIST CAVS vector (gcmEncryptExtIV256.rsp, 128-bit plaintext and
    /// associated data) through the calls this module makes (detached
    /// tag, in place; opened from one buffer into another): the primitive
    /// is the published one.
    #[test]
    fn aes_256_gcm_known_answer() {
        let key: [u8; 32] =
            unhex("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b")
                .try_into()
                .unwrap();
        let nonce: [u8; 12] = unhex("ac93a1a6145299bde902f21a").try_into().unwrap();
        let aad = unhex("1e0889016f67601c8ebea4943bc23ad6");
        let plaintext = unhex("2d71bcfa914e4ac045b2aa60955fad24");
        let cipher = cipher(&SecretKey::from_bytes(key));
        let mut buf = plaintext.clone();
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into())
            .unwrap();
        assert_eq!(hex::encode(&buf), "8995ae2e6df3dbf96fac7b7137bae67f");
        assert_eq!(hex::encode(tag), "eca5aa77d51d4a0a14d9c51e1da474ab");
        let mut out = vec![1u8; buf.len()];
        cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &aad,
                InOutBuf::new(&buf, &mut out).unwrap(),
                &tag,
            )
            .unwrap();
        assert_eq!(out, plaintext);
    }

    /// The mode 3 envelope is what crypto/seal.rs's comment says, worked
    /// out with the crate's plain API and pinned as bytes.
    #[test]
    fn the_envelope_known_answer() {
        let key = SecretKey::from_bytes([7; 32]);
        let (name, plaintext, epk) = ("0123abcd", b"xfull", [5u8; EPK_LEN]);
        let got = seal_under_nonce(
            &cipher(&key),
            SealKind::Chunk,
            epk,
            name,
            plaintext,
            nonce_of(2),
        );
        let mut header = b"XFS1".to_vec();
        header.extend_from_slice(&[SealKind::Chunk.letter(), 3]);
        header.extend_from_slice(&epk);
        let mut aad = b"xfull sealed object v1\0".to_vec();
        aad.extend_from_slice(&header);
        aad.extend_from_slice(&(name.len() as u64).to_le_bytes());
        aad.extend_from_slice(name.as_bytes());
        let nonce = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let ct = Aes256Gcm::new(&[7u8; 32].into())
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        let mut want = header;
        want.extend_from_slice(&nonce);
        want.extend_from_slice(&ct);
        assert_eq!(got, want);
        assert_eq!(
            hex::encode(&got[38..]),
            "000000000000000000000002890dc14f8d6cddbedf2b51ce9c529105203b580f80"
        );
        let c = cipher(&key);
        assert_eq!(open(&c, SealKind::Chunk, name, &got).unwrap(), plaintext);
    }

    #[test]
    fn nonces_count_up_and_never_repeat_under_a_key() {
        let s = GcmSealer::new([1; EPK_LEN], &SecretKey::from_bytes([2; 32]));
        let nonces: Vec<Vec<u8>> = (0..3)
            .map(|_| s.seal(SealKind::Chunk, "c", b"same")[38..50].to_vec())
            .collect();
        assert_eq!(nonces[0], nonce_of(0));
        assert_eq!(nonces[2], nonce_of(2));
        assert_ne!(nonces[0], nonces[1]);
    }

    #[test]
    fn threads_sharing_a_sealer_never_share_a_nonce() {
        // A backup seals from several worker threads through one sealer.
        let s = GcmSealer::new([1; EPK_LEN], &SecretKey::from_bytes([2; 32]));
        let nonces: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..500)
                            .map(|_| s.seal(SealKind::Chunk, "c", b"x")[38..50].to_vec())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<_> = nonces.iter().collect();
        assert_eq!(distinct.len(), 2000);
    }

    #[test]
    fn tampering_is_damage_naming_the_object() {
        let key = SecretKey::from_bytes([9; 32]);
        let s = GcmSealer::new([1; EPK_LEN], &key);
        let c = cipher(&key);
        let name = "ab01";
        let sealed = s.seal(SealKind::Chunk, name, b"guest data");
        assert_eq!(
            sealed.len(),
            10 + crate::crypto::seal::overhead(SealMode::DataGcm { epk: [0; 32] })
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            let e = open(&c, SealKind::Chunk, name, &t).unwrap_err();
            match i {
                3 => assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}"),
                // Mode 2: for the opener (crypto/data.rs) an XChaCha20-
                // Poly1305 object, whose tag then fails (tested there).
                5 => {}
                _ => assert!(
                    e.is_damage() && e.to_string().contains(name),
                    "byte {i}: {e}"
                ),
            }
        }
        for n in 0..sealed.len() {
            assert!(open(&c, SealKind::Chunk, name, &sealed[..n]).is_err());
        }
        assert!(open(&c, SealKind::Chunk, "ab02", &sealed).is_err());
        assert!(open(&c, SealKind::Node, name, &sealed).is_err());
        let other = cipher(&SecretKey::from_bytes([8; 32]));
        assert!(open(&other, SealKind::Chunk, name, &sealed).is_err());
    }
}
