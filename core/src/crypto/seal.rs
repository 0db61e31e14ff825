//! Sealed objects: an AEAD over an object's bytes, with the object's kind
//! and name as associated data.
//!
//! ```text
//! magic  4   "XFS1": a sealed object, envelope version 1
//! kind   1   the kind letter (SealKind::letter)
//! mode   1   1 = XChaCha20-Poly1305 under the metadata key;
//!            2 = XChaCha20-Poly1305 under a data key sealed to the
//!                repository's data public key (crypto/data.rs);
//!            3 = AES-256-GCM under such a data key (crypto/seal_gcm.rs)
//! epk    32  modes 2 and 3: the writer's ephemeral X25519 public key
//! nonce  24  random (modes 1 and 2); 12, the writer's counter (mode 3)
//! ct     ..  ciphertext, then the 16-byte tag
//! ```
//!
//! Associated data = a domain label, the header above (magic to epk), and
//! the length-prefixed name. So an object moved to another name, read as
//! another kind, cut short, or written under another repository's keys
//! does not open: the tag check fails, and the reader reports damage.
//!
//! Why XChaCha20-Poly1305 for metadata: many hosts seal objects under one
//! metadata key for years with no shared counter, so nonces must be
//! random; its 192-bit nonce makes random nonces safe for any number of
//! objects a repository will hold (AES-GCM's 96-bit random nonces are
//! limited to about 2^32 messages per key). It is constant-time in
//! software, needs no AES hardware, and RustCrypto's implementation was
//! audited (NCC Group). Chunk data, where the bulk of the bytes is, has a
//! fresh key per writer, so a counter gives unique nonces and AES-256-GCM
//! (2.9x faster here with AES-NI/VAES and CLMUL) fits: format 4 seals data
//! with mode 3; repositories of formats 2 and 3 keep mode 2 (see
//! `DataCipher`).

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit, Nonce, Tag};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::crypto::secret::{SecretKey, random_array};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"XFS1";
const AAD_LABEL: &[u8] = b"xfull sealed object v1\0";
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const EPK_LEN: usize = 32;
/// Mode 3's nonce: AES-GCM's 96 bits.
pub(crate) const GCM_NONCE_LEN: usize = 12;

/// What a sealed object is; bound into its seal, so a node cannot be read
/// as a manifest. Letters follow the frame magic (`core/src/frame.rs`),
/// with `P` and `I` for the pack format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealKind {
    Chunk,
    Pack,
    Node,
    Manifest,
    Index,
    Lease,
    Marker,
    Damage,
}

impl SealKind {
    pub const ALL: [SealKind; 8] = [
        SealKind::Chunk,
        SealKind::Pack,
        SealKind::Node,
        SealKind::Manifest,
        SealKind::Index,
        SealKind::Lease,
        SealKind::Marker,
        SealKind::Damage,
    ];

    pub const fn letter(self) -> u8 {
        match self {
            SealKind::Chunk => b'C',
            SealKind::Pack => b'P',
            SealKind::Node => b'N',
            SealKind::Manifest => b'M',
            SealKind::Index => b'I',
            SealKind::Lease => b'L',
            SealKind::Marker => b'G',
            SealKind::Damage => b'D',
        }
    }

    fn from_letter(b: u8) -> Option<Self> {
        SealKind::ALL.into_iter().find(|k| k.letter() == b)
    }

    pub fn name(self) -> &'static str {
        match self {
            SealKind::Chunk => "chunk",
            SealKind::Pack => "pack",
            SealKind::Node => "node",
            SealKind::Manifest => "manifest",
            SealKind::Index => "index",
            SealKind::Lease => "lease",
            SealKind::Marker => "gc marker",
            SealKind::Damage => "damage record",
        }
    }
}

/// Which key sealed an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealMode {
    /// The metadata key: every key slot, backup-only ones too, opens it.
    Metadata,
    /// A data key sealed to the repository's data public key: only a
    /// full-access key opens it. XChaCha20-Poly1305 (mode 2).
    Data { epk: [u8; EPK_LEN] },
    /// The same, AES-256-GCM with a counter nonce (mode 3).
    DataGcm { epk: [u8; EPK_LEN] },
}

impl SealMode {
    pub(crate) const fn byte(self) -> u8 {
        match self {
            SealMode::Metadata => 1,
            SealMode::Data { .. } => 2,
            SealMode::DataGcm { .. } => 3,
        }
    }

    const fn nonce_len(self) -> usize {
        match self {
            SealMode::DataGcm { .. } => GCM_NONCE_LEN,
            _ => NONCE_LEN,
        }
    }
}

/// A sealed object, split but not yet opened.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub kind: SealKind,
    pub mode: SealMode,
    header: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// Bytes a seal adds to an object's size: header, nonce and tag.
pub const fn overhead(mode: SealMode) -> usize {
    let epk = match mode {
        SealMode::Metadata => 0,
        _ => EPK_LEN,
    };
    6 + epk + mode.nonce_len() + TAG_LEN
}

/// [`overhead`] of a metadata object.
pub const META_OVERHEAD: usize = overhead(SealMode::Metadata);

/// Whether `bytes` begin like a sealed object of any envelope version (no
/// frame magic starts with `XFS`: frame kinds are other letters).
pub fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC[..3])
}

impl<'a> Envelope<'a> {
    /// Splits `bytes`, the object stored under `name`, checking its layout
    /// (never panics, allocates nothing).
    pub fn parse(name: &str, bytes: &'a [u8]) -> Result<Self> {
        let bad = |reason: &str| Error::corrupt(name, reason.to_string());
        if bytes.len() < 6 {
            return Err(bad("too short to be a sealed object"));
        }
        if &bytes[..4] != MAGIC {
            return Err(if bytes.starts_with(b"XFS") {
                Error::UnsupportedFormat {
                    what: format!("sealed object {name}"),
                    found: String::from_utf8_lossy(&bytes[..4]).into_owned(),
                    supported: "XFS1".into(),
                }
            } else {
                bad("not a sealed object (an unencrypted or foreign object?)")
            });
        }
        let kind = SealKind::from_letter(bytes[4]).ok_or_else(|| bad("unknown object kind"))?;
        let epk = || -> Result<[u8; EPK_LEN]> {
            let epk = bytes
                .get(6..6 + EPK_LEN)
                .ok_or_else(|| bad("truncated in its header"))?;
            epk.try_into().map_err(|_| bad("bad header"))
        };
        let (mode, header_len) = match bytes[5] {
            1 => (SealMode::Metadata, 6),
            2 => (SealMode::Data { epk: epk()? }, 6 + EPK_LEN),
            3 => (SealMode::DataGcm { epk: epk()? }, 6 + EPK_LEN),
            _ => return Err(bad("unknown seal mode")),
        };
        if bytes.len() < header_len + mode.nonce_len() + TAG_LEN {
            return Err(bad("truncated: shorter than its nonce and tag"));
        }
        let (header, rest) = bytes.split_at(header_len);
        let (nonce, ciphertext) = rest.split_at(mode.nonce_len());
        Ok(Envelope {
            kind,
            mode,
            header,
            nonce,
            ciphertext,
        })
    }

    /// Refuses an envelope of another kind than the one expected.
    fn check_kind(&self, kind: SealKind, name: &str) -> Result<()> {
        if self.kind != kind {
            return Err(Error::corrupt(
                name,
                format!(
                    "is a sealed {}, expected a {}",
                    self.kind.name(),
                    kind.name()
                ),
            ));
        }
        Ok(())
    }

    /// Opens an XChaCha20-Poly1305 envelope (modes 1 and 2) with `key`,
    /// for an object expected to be `kind`.
    fn open_with(&self, kind: SealKind, key: &SecretKey, name: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(kind, key, name, &mut out)?;
        Ok(out)
    }

    /// [`Envelope::open_with`] into `out` (resized to the plaintext):
    /// decrypted from the stored bytes straight into it, no other copy.
    pub(crate) fn open_into(
        &self,
        kind: SealKind,
        key: &SecretKey,
        name: &str,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if matches!(self.mode, SealMode::DataGcm { .. }) {
            return Err(Error::Internal(format!(
                "{name}: an AES-256-GCM envelope opened as XChaCha20-Poly1305"
            )));
        }
        let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
        self.open_in(&cipher, kind, name, out)
    }

    /// Opens the envelope with `cipher` (the AEAD of its mode, keyed),
    /// for an object expected to be `kind`, into `out` (resized to the
    /// plaintext), decrypting from the stored bytes straight into it. Any
    /// change to the bytes, the name or the kind is damage naming `name`.
    pub(crate) fn open_in<C: AeadInOut>(
        &self,
        cipher: &C,
        kind: SealKind,
        name: &str,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.check_kind(kind, name)?;
        let aad = associated_data(self.header, name);
        let (ct, tag) = self.ciphertext.split_at(self.ciphertext.len() - TAG_LEN);
        let nonce =
            Nonce::<C>::try_from(self.nonce).map_err(|_| Error::corrupt(name, "bad nonce"))?;
        let tag = Tag::<C>::try_from(tag).map_err(|_| Error::corrupt(name, "bad tag"))?;
        cipher
            .decrypt_inout_detached(&nonce, &aad, sized(out, ct, name)?, &tag)
            .map_err(|_| does_not_open(kind, name))
    }
}

/// `out` resized to `input`'s length (zeroing only what it grows by), as
/// the output half of an in/out buffer over `input`.
fn sized<'i, 'o>(
    out: &'o mut Vec<u8>,
    input: &'i [u8],
    name: &str,
) -> Result<InOutBuf<'i, 'o, u8>> {
    out.resize(input.len(), 0);
    InOutBuf::new(input, out).map_err(|_| Error::Internal(format!("{name}: buffer sizes differ")))
}

/// The damage a tag that does not check is.
fn does_not_open(kind: SealKind, name: &str) -> Error {
    Error::corrupt(
        name,
        format!(
            "the sealed {} does not open: altered, truncated, moved from another \
             name, or written with another repository's keys",
            kind.name()
        ),
    )
}

fn associated_data(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + 8 + name.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(name.len() as u64).to_le_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Seals `plaintext` as an object of `kind` stored as `name` (its key, or
/// for a blob inside a pack, the name the index gives it).
pub(crate) fn seal_with(
    kind: SealKind,
    mode: SealMode,
    key: &SecretKey,
    name: &str,
    plaintext: &[u8],
) -> Vec<u8> {
    debug_assert!(
        !matches!(mode, SealMode::DataGcm { .. }),
        "crypto/seal_gcm.rs"
    );
    seal_under_nonce(
        header(kind, mode, plaintext.len()),
        key,
        name,
        plaintext,
        random_array(),
    )
}

/// A new object's buffer holding its header, with room for the rest.
pub(crate) fn header(kind: SealKind, mode: SealMode, plain_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain_len + overhead(mode));
    out.extend_from_slice(MAGIC);
    out.push(kind.letter());
    out.push(mode.byte());
    if let SealMode::Data { epk } | SealMode::DataGcm { epk } = mode {
        out.extend_from_slice(&epk);
    }
    out
}

/// The rest of [`seal_with`] once the header is in `out`. (A fixed nonce
/// only in the known-answer tests.)
fn seal_under_nonce(
    out: Vec<u8>,
    key: &SecretKey,
    name: &str,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    seal_in(&cipher, out, name, plaintext, &XNonce::from(nonce))
}

/// The body of every mode once the header is in `out`: the nonce, then
/// the plaintext sealed in place with `cipher` (the AEAD of the mode,
/// keyed), then the tag.
pub(crate) fn seal_in<C: AeadInOut>(
    cipher: &C,
    mut out: Vec<u8>,
    name: &str,
    plaintext: &[u8],
    nonce: &Nonce<C>,
) -> Vec<u8> {
    let aad = associated_data(&out, name);
    out.extend_from_slice(nonce);
    // Encrypted in place in `out`: `Aead::encrypt` would return the
    // ciphertext in a second buffer to be copied here, which cost 1.4x the
    // CPU of sealing a 70 KB chunk (bench/results/crypto-backup.md).
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(nonce, &aad, out[start..].as_mut().into())
        // Only messages beyond 64 GiB (AES-GCM; 256 GiB XChaCha20-Poly1305)
        // fail; objects are far smaller.
        .expect("the AEAD seals any object size xfull writes");
    out.extend_from_slice(&tag);
    out
}

/// Seals metadata (a node, manifest, index, lease, marker) under the
/// metadata key.
pub fn seal(kind: SealKind, key: &SecretKey, name: &str, plaintext: &[u8]) -> Vec<u8> {
    seal_with(kind, SealMode::Metadata, key, name, plaintext)
}

/// Opens metadata sealed by [`seal`]; any change to the bytes, the name or
/// the kind is damage ([`Error::Corrupt`] naming `name`).
pub fn open(kind: SealKind, key: &SecretKey, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    let env = Envelope::parse(name, sealed)?;
    if env.mode != SealMode::Metadata {
        return Err(Error::corrupt(
            name,
            format!(
                "is sealed as data, expected a {} under the metadata key",
                kind.name()
            ),
        ));
    }
    env.open_with(kind, key, name)
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;
