//! Key slots: `keys/<16 hex>`, each wrapping the master keys under a key
//! derived from one password (argon2id) or one key file.
//!
//! ```text
//! magic  4   "XFK1"
//! CBOR   {header: bytes, nonce: bytes(24), wrapped: bytes, auth: bytes(32)}
//!   header  CBOR {access, created, kdf}; kdf is {argon2id: {m_kib, t, p,
//!           salt}} or {key-file: {salt}}
//!   wrapped XChaCha20-Poly1305 of the master keys (crypto/master.rs) under
//!           the slot's key; associated data: a label, the slot's object
//!           key and the header bytes, so a header edited to another
//!           access level or moved to another slot name does not open
//!   auth    keyed BLAKE3 of everything above under a key only full-access
//!           holders derive: proves, without the slot's password, that a
//!           full-access holder of this repository's keys wrote the slot
//! ```
//!
//! Hostile slots: the object is at most [`MAX_SLOT_LEN`] bytes, checked
//! before it is parsed; every byte field has a bounded length; argon2
//! costs are bounded (memory at most [`MAX_M_KIB`]) before any is spent.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::cbor_bytes;
use crate::crypto::master::{Access, MasterKeys};
use crate::crypto::secret::{Secret, SecretKey, SecretKind, random_array};
use crate::error::{Error, Result};

/// Where key slots live.
pub const SLOTS: &str = "keys/";
const MAGIC: &[u8; 4] = b"XFK1";
const WRAP_LABEL: &[u8] = b"xfull key slot v1\0";
const AUTH_LABEL: &[u8] = b"xfull key slot auth v1\0";
/// Longest key slot object: xfull writes about 400 bytes.
pub const MAX_SLOT_LEN: usize = 4096;
/// Largest argon2 memory cost accepted from a slot (1 GiB): a hostile slot
/// must not make `unlock` exhaust the machine.
pub const MAX_M_KIB: u32 = 1 << 20;
/// Largest argon2 time cost and lane count accepted from a slot.
pub const MAX_T: u32 = 64;
pub const MAX_P: u32 = 16;

/// The key of slot `id`.
pub fn slot_key(id: &str) -> String {
    format!("{SLOTS}{id}")
}

/// Refuses a slot object longer than [`MAX_SLOT_LEN`]: its listed size
/// before it is read, its bytes before they are parsed.
pub fn check_len(key: &str, len: u64) -> Result<()> {
    if len > MAX_SLOT_LEN as u64 {
        return Err(Error::corrupt(
            key,
            format!("{len} bytes, more than a key slot's {MAX_SLOT_LEN}"),
        ));
    }
    Ok(())
}

/// The slot id of a `keys/` key, if it is named like one (16 hex digits).
pub fn parse_slot_key(key: &str) -> Option<&str> {
    let id = key.strip_prefix(SLOTS)?;
    (id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(id)
}

/// A fresh slot id.
pub fn new_slot_id() -> String {
    hex::encode(random_array::<8>())
}

/// argon2id costs, stored in each password slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Argon2Params {
    /// About 0.5 s of CPU and 64 MiB on the project's 2-core VM
    /// (`bench/crypto`, `bench/results/crypto.md`): costly for guessing,
    /// bearable once per command. One lane: the argon2 crate is built
    /// without threads, so more lanes would only cost more time.
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_kib: 64 * 1024,
        t: 6,
        p: 1,
    };

    /// Refuses costs argon2 rejects or this build will not spend.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(1..=MAX_P).contains(&self.p) {
            return Err(format!("argon2 lanes {} must be 1 to {MAX_P}", self.p));
        }
        if !(1..=MAX_T).contains(&self.t) {
            return Err(format!("argon2 time cost {} must be 1 to {MAX_T}", self.t));
        }
        if self.m_kib < 8 * self.p || self.m_kib > MAX_M_KIB {
            return Err(format!(
                "argon2 memory cost {} KiB must be 8 KiB per lane to {MAX_M_KIB} KiB",
                self.m_kib
            ));
        }
        Ok(())
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> std::result::Result<SecretKey, String> {
        self.check()?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, salt, &mut *out)
            .map_err(|e| format!("argon2: {e}"))?;
        Ok(SecretKey::from_bytes(*out))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kdf {
    Argon2id {
        #[serde(flatten)]
        params: Argon2Params,
        #[serde(with = "cbor_bytes::fixed")]
        salt: [u8; 16],
    },
    KeyFile {
        #[serde(with = "cbor_bytes::fixed")]
        salt: [u8; 16],
    },
}

impl Kdf {
    fn fits(&self, secret: &Secret) -> bool {
        matches!(
            (self, secret.kind()),
            (Kdf::Argon2id { .. }, SecretKind::Password)
                | (Kdf::KeyFile { .. }, SecretKind::KeyFile)
        )
    }

    /// The order key slots are tried in (`manage::in_trial_order`): memory
    /// times passes, fewer passes than the default's counted as the
    /// default's (0 for a key file: no stretching). By the product alone,
    /// a planted slot of one pass and nearly six times the default
    /// memory sorted before a default slot and cost that memory on every
    /// unlock (review, 2026-12-07); now a slot tried before one of
    /// default cost needs at most its memory.
    pub fn cost(&self) -> u64 {
        match self {
            Kdf::Argon2id { params, .. } => {
                u64::from(params.m_kib) * u64::from(params.t.max(Argon2Params::DEFAULT.t))
            }
            Kdf::KeyFile { .. } => 0,
        }
    }

    /// The slot's wrapping key from `secret` (CPU- and memory-heavy for
    /// passwords: run it off the async runtime).
    fn wrapping_key(&self, secret: &Secret) -> std::result::Result<SecretKey, String> {
        match self {
            Kdf::Argon2id { params, salt } => params.derive(secret.bytes(), salt),
            // A key file is 32 random bytes: no stretching, only a
            // per-slot key from HKDF.
            Kdf::KeyFile { salt } => {
                let mut okm = [0u8; 32];
                Hkdf::<Sha256>::new(Some(salt), secret.bytes())
                    .expand(b"xfull key file slot v1", &mut okm)
                    .map_err(|e| format!("hkdf: {e}"))?;
                Ok(SecretKey::from_bytes(okm))
            }
        }
    }
}

/// What a slot says about itself, readable without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHeader {
    pub access: Access,
    pub created: DateTime<Utc>,
    pub kdf: Kdf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(with = "cbor_bytes::bounded")]
    header: Vec<u8>,
    #[serde(with = "cbor_bytes::fixed")]
    nonce: [u8; 24],
    #[serde(with = "cbor_bytes::bounded")]
    wrapped: Vec<u8>,
    #[serde(with = "cbor_bytes::fixed")]
    auth: [u8; 32],
}

/// A decoded key slot (not yet opened).
#[derive(Debug, Clone)]
pub struct KeySlot {
    pub id: String,
    pub header: SlotHeader,
    header_bytes: Vec<u8>,
    nonce: [u8; 24],
    wrapped: Vec<u8>,
    auth: [u8; 32],
}

fn wrap_aad(key: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_LABEL.len() + 8 + key.len() + header.len());
    aad.extend_from_slice(WRAP_LABEL);
    aad.extend_from_slice(&(key.len() as u64).to_le_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad.extend_from_slice(header);
    aad
}

fn auth_tag(
    auth_key: &SecretKey,
    key: &str,
    header: &[u8],
    nonce: &[u8],
    wrapped: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(auth_key.as_bytes());
    h.update(AUTH_LABEL);
    for part in [key.as_bytes(), header, nonce, wrapped] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    *h.finalize().as_bytes()
}

impl KeySlot {
    /// Wraps `keys` (with the access they have) for `secret`, as slot `id`.
    /// `full` is a full-access set of the same repository: it signs the
    /// slot. Runs argon2 for passwords: call off the async runtime.
    pub fn create(
        id: &str,
        keys: &MasterKeys,
        full: &MasterKeys,
        secret: &Secret,
        params: Argon2Params,
        created: DateTime<Utc>,
    ) -> Result<KeySlot> {
        let salt = random_array::<16>();
        let kdf = match secret.kind() {
            SecretKind::Password => Kdf::Argon2id { params, salt },
            SecretKind::KeyFile => Kdf::KeyFile { salt },
        };
        let header = SlotHeader {
            access: keys.access(),
            created,
            kdf,
        };
        let mut header_bytes = Vec::new();
        ciborium::into_writer(&header, &mut header_bytes)
            .map_err(|e| Error::Internal(format!("encoding key slot: {e}")))?;
        let wrapping = header
            .kdf
            .wrapping_key(secret)
            .map_err(|reason| Error::InvalidArgument(format!("key slot: {reason}")))?;
        let key = slot_key(id);
        let nonce = random_array::<24>();
        let wrapped = XChaCha20Poly1305::new(wrapping.as_bytes().into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &keys.encode(),
                    aad: &wrap_aad(&key, &header_bytes),
                },
            )
            .map_err(|_| Error::Internal("sealing a key slot failed".into()))?;
        let auth_key = full.slot_auth_key("adding a key slot")?;
        let auth = auth_tag(&auth_key, &key, &header_bytes, &nonce, &wrapped);
        Ok(KeySlot {
            id: id.to_string(),
            header,
            header_bytes,
            nonce,
            wrapped,
            auth,
        })
    }

    pub fn key(&self) -> String {
        slot_key(&self.id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            header: self.header_bytes.clone(),
            nonce: self.nonce,
            wrapped: self.wrapped.clone(),
            auth: self.auth,
        };
        let mut out = MAGIC.to_vec();
        ciborium::into_writer(&stored, &mut out).expect("encoding to memory does not fail");
        out
    }

    /// Decodes the slot stored under `key`; sizes and costs are checked
    /// before anything is allocated or spent. Never panics.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<KeySlot> {
        let id = parse_slot_key(key)
            .ok_or_else(|| Error::corrupt(key, "not a key slot name (keys/ and 16 hex digits)"))?;
        let bad = |reason: String| Error::corrupt(key, reason);
        check_len(key, bytes.len() as u64)?;
        let body = match bytes.strip_prefix(MAGIC) {
            Some(body) => body,
            None if bytes.starts_with(b"XFK") => {
                return Err(Error::UnsupportedFormat {
                    what: format!("key slot {key}"),
                    found: String::from_utf8_lossy(&bytes[..bytes.len().min(4)]).into_owned(),
                    supported: "XFK1".into(),
                });
            }
            None => return Err(bad("not a key slot".into())),
        };
        let stored: Stored =
            ciborium::from_reader(body).map_err(|e| bad(format!("undecodable: {e}")))?;
        let header: SlotHeader = ciborium::from_reader(&stored.header[..])
            .map_err(|e| bad(format!("undecodable header: {e}")))?;
        if let Kdf::Argon2id { params, .. } = &header.kdf {
            params.check().map_err(&bad)?;
        }
        Ok(KeySlot {
            id: id.to_string(),
            header,
            header_bytes: stored.header,
            nonce: stored.nonce,
            wrapped: stored.wrapped,
            auth: stored.auth,
        })
    }

    /// True when the slot can be opened with this kind of secret.
    pub fn fits(&self, secret: &Secret) -> bool {
        self.header.kdf.fits(secret)
    }

    /// The master keys, if `secret` is this slot's; `Ok(None)` when it is
    /// not (a wrong password is not damage). Runs argon2 for passwords.
    pub fn open(&self, secret: &Secret) -> Result<Option<MasterKeys>> {
        if !self.fits(secret) {
            return Ok(None);
        }
        let key = self.key();
        let wrapping = self
            .header
            .kdf
            .wrapping_key(secret)
            .map_err(|reason| Error::corrupt(&key, reason))?;
        let Ok(plain) = XChaCha20Poly1305::new(wrapping.as_bytes().into()).decrypt(
            &XNonce::from(self.nonce),
            Payload {
                msg: &self.wrapped,
                aad: &wrap_aad(&key, &self.header_bytes),
            },
        ) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let keys = MasterKeys::decode(&key, &plain)?;
        if keys.access() != self.header.access {
            return Err(Error::corrupt(
                &key,
                "its header and its keys disagree on access",
            ));
        }
        Ok(Some(keys.with_slot(&self.id)))
    }

    /// True when a full-access holder of `full`'s repository wrote this
    /// slot (checked without the slot's secret).
    pub fn is_authentic(&self, full: &MasterKeys) -> Result<bool> {
        let auth_key = full.slot_auth_key("checking key slots")?;
        let expected = blake3::Hash::from(auth_tag(
            &auth_key,
            &self.key(),
            &self.header_bytes,
            &self.nonce,
            &self.wrapped,
        ));
        // blake3::Hash compares in constant time.
        Ok(expected == blake3::Hash::from(self.auth))
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
