//! The repository's codec: how content is named and how a framed object
//! becomes stored bytes and back. The one place that knows whether the
//! repository is encrypted (docs/design.md, "Encryption").
//!
//! - ids: [`Codec::chunk_id`] and [`Codec::node_id`]: plain BLAKE3, or
//!   keyed BLAKE3 under the id key;
//! - metadata (nodes, manifests, leases, markers, damage records, and the
//!   pack format's indexes and trailers): [`Codec::seal_meta`] after
//!   framing, [`Codec::open_meta`] before decoding, with the object's name
//!   as associated data;
//! - chunk data: [`Codec::seal_chunk`] / [`Codec::open_chunk`], named by
//!   the chunk id (so a chunk means the same in its own object or as a
//!   blob in a pack); sealed to the data public key by one [`DataSealer`]
//!   per opened repository (one writer: a process), with the cipher of
//!   the repository's format, opened only with a full-access key. Callers
//!   check the keyed id of what they open.
//!
//! Unencrypted, sealing is the identity: stored bytes are the framed ones,
//! as in format 1.

use std::borrow::Cow;
use std::cell::RefCell;

use bytes::Bytes;

use crate::crypto::{Access, DataCipher, DataOpener, DataSealer, IdHasher, MasterKeys, SealKind};
use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::id::ObjectId;

/// What a repository's objects are made with; see the module doc.
#[derive(Debug)]
pub struct Codec {
    ids: IdHasher,
    keys: Option<Keys>,
}

#[derive(Debug)]
struct Keys {
    master: MasterKeys,
    sealer: DataSealer,
    /// `None` with a backup-only key: chunk data cannot be read.
    opener: Option<DataOpener>,
}

impl Codec {
    /// An unencrypted repository (`--encryption none`).
    pub fn plain() -> Self {
        Codec {
            ids: IdHasher::plain(),
            keys: None,
        }
    }

    /// An encrypted repository, with the keys unlocked from one slot;
    /// chunk data is sealed with `cipher` (`RepoConfig::data_cipher`).
    pub fn encrypted(master: MasterKeys, cipher: DataCipher) -> Self {
        let opener = master.data_opener("reading chunk data").ok();
        Codec {
            ids: master.id_hasher(),
            keys: Some(Keys {
                sealer: master.data_sealer(cipher),
                opener,
                master,
            }),
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The master keys (for key management), if encrypted.
    pub fn master_keys(&self) -> Option<&MasterKeys> {
        self.keys.as_ref().map(|k| &k.master)
    }

    /// The access of the unlocked key (`Full` when unencrypted).
    pub fn access(&self) -> Access {
        self.keys
            .as_ref()
            .map_or(Access::Full, |k| k.master.access())
    }

    /// Refuses `operation` (e.g. "restore") unless chunk data can be read:
    /// called before an operation starts, so it fails at once and names
    /// itself rather than at its first chunk.
    pub fn require_data(&self, operation: &str) -> Result<()> {
        match &self.keys {
            Some(k) if k.opener.is_none() => k.master.data_opener(operation).map(drop),
            _ => Ok(()),
        }
    }

    /// The id of a chunk's plaintext.
    pub fn chunk_id(&self, plain: &[u8]) -> ObjectId {
        self.ids.id(plain)
    }

    /// The id of a node's plaintext.
    pub fn node_id(&self, plain: &[u8]) -> ObjectId {
        self.ids.id(plain)
    }

    /// Stored bytes of a framed metadata object named `name` (its object
    /// key; for a manifest, its key under `points/` wherever it lies).
    pub fn seal_meta(&self, kind: SealKind, name: &str, framed: Vec<u8>) -> Vec<u8> {
        match &self.keys {
            Some(k) => k.master.seal_meta(kind, name, &framed),
            None => framed,
        }
    }

    /// The framed bytes of a stored metadata object; a changed, moved,
    /// truncated or foreign object is damage naming `name`.
    pub fn open_meta<'a>(
        &self,
        kind: SealKind,
        name: &str,
        stored: &'a [u8],
    ) -> Result<Cow<'a, [u8]>> {
        match &self.keys {
            Some(k) => Ok(Cow::Owned(k.master.open_meta(kind, name, stored)?)),
            None => plain_object(name, stored),
        }
    }

    /// Stored bytes of a framed chunk (`frame::encode(Kind::Chunk, ..)`).
    pub fn seal_chunk(&self, id: &ObjectId, framed: Bytes) -> Bytes {
        match &self.keys {
            Some(k) => Bytes::from(k.sealer.seal(SealKind::Chunk, &id.to_hex(), &framed)),
            None => framed,
        }
    }

    /// The framed bytes of a stored chunk; needs a full-access key
    /// ([`Error::MissingCapability`] otherwise). The caller checks the
    /// plaintext against `id`.
    pub fn open_chunk(&self, id: &ObjectId, stored: &[u8]) -> Result<Vec<u8>> {
        self.with_chunk(id, stored, |framed| Ok(framed.to_vec()))
    }

    /// Calls `f` with the framed bytes of a stored chunk (as
    /// [`Codec::open_chunk`]). Opened into a buffer of the calling thread
    /// that is reused from chunk to chunk: a restore opens every chunk it
    /// writes, and a new buffer each time cost an allocation, a copy and
    /// the page faults of fresh memory per chunk.
    pub fn with_chunk<R>(
        &self,
        id: &ObjectId,
        stored: &[u8],
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        thread_local! {
            // The last chunk opened on this thread; one larger than
            // KEEP_OPENED is not kept (a hostile pack may list a huge blob).
            static OPENED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        const KEEP_OPENED: usize = 4 << 20;
        match &self.keys {
            Some(Keys {
                opener: Some(o), ..
            }) => OPENED.with(|cell| {
                // A re-entrant call (none today) gets a buffer of its own.
                let mut own = Vec::new();
                let mut guard = cell.try_borrow_mut();
                let buf = match &mut guard {
                    Ok(b) => &mut **b,
                    Err(_) => &mut own,
                };
                let opened = o.open_into(SealKind::Chunk, &id.to_hex(), stored, buf);
                let out = opened.and_then(|()| f(buf));
                if buf.capacity() > KEEP_OPENED {
                    *buf = Vec::new();
                }
                out
            }),
            Some(k) => Err(k
                .master
                .data_opener("reading chunk data")
                .err()
                .unwrap_or_else(|| Error::Internal("data opener missing".into()))),
            None => f(&plain_object(&id.to_hex(), stored)?),
        }
    }

    /// Frames and seals a metadata object: what writers of nodes, leases,
    /// markers and damage records call.
    pub fn encode_meta(&self, kind: Kind, name: &str, plain: &[u8], level: i32) -> Result<Vec<u8>> {
        Ok(self.seal_meta(seal_kind(kind), name, frame::encode(kind, plain, level)?))
    }

    /// Opens and unframes a metadata object (at most `limit` bytes of
    /// plaintext).
    pub fn decode_meta(
        &self,
        kind: Kind,
        name: &str,
        stored: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>> {
        let framed = self.open_meta(seal_kind(kind), name, stored)?;
        frame::decode(kind, name, &framed, limit)
    }

    /// Frames (compressed at `level`) and seals a chunk.
    pub fn encode_chunk(&self, id: &ObjectId, plain: &[u8], level: i32) -> Result<Bytes> {
        Ok(self.seal_chunk(id, frame::encode(Kind::Chunk, plain, level)?.into()))
    }
}

/// A stored object of an unencrypted repository. A sealed one there
/// means the config was rewritten to say "unencrypted" (or the object
/// came from an encrypted repository): damage that says so, rather than
/// an undecodable frame.
fn plain_object<'a>(name: &str, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    if crate::crypto::seal::looks_sealed(stored) {
        return Err(Error::corrupt(
            name,
            "is sealed (encrypted), but the config says the repository is unencrypted: \
             the config may have been replaced",
        ));
    }
    Ok(Cow::Borrowed(stored))
}

/// The seal kind of a frame kind (the config is never sealed: it says
/// whether the repository is encrypted).
pub fn seal_kind(kind: Kind) -> SealKind {
    match kind {
        Kind::Chunk => SealKind::Chunk,
        Kind::Node => SealKind::Node,
        Kind::Manifest | Kind::Config => SealKind::Manifest,
        Kind::Lease => SealKind::Lease,
        Kind::Marker => SealKind::Marker,
        Kind::Damage => SealKind::Damage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_the_identity_and_plain_blake3() {
        let c = Codec::plain();
        assert_eq!(c.chunk_id(b"x"), ObjectId::of(b"x"));
        assert_eq!(c.seal_meta(SealKind::Node, "n", b"abc".to_vec()), b"abc");
        assert_eq!(&*c.open_chunk(&ObjectId::of(b"x"), b"abc").unwrap(), b"abc");
        c.require_data("restore").unwrap();
    }

    #[test]
    fn sealed_bytes_met_by_a_plain_codec_are_damage_that_says_so() {
        // A config rewritten to say "unencrypted" must not let sealed
        // objects pass as (undecodable) plain ones without a word.
        let sealed = Codec::encrypted(MasterKeys::generate(), DataCipher::Aes256Gcm);
        let plain = Codec::plain();
        let stored = sealed
            .encode_meta(Kind::Node, "nodes/aa/a1", b"x", 3)
            .unwrap();
        let id = sealed.chunk_id(b"data");
        let chunk = sealed.encode_chunk(&id, b"data", 3).unwrap();
        for e in [
            plain
                .open_meta(SealKind::Node, "nodes/aa/a1", &stored)
                .unwrap_err(),
            plain
                .decode_meta(Kind::Node, "nodes/aa/a1", &stored, 1 << 20)
                .unwrap_err(),
            plain.open_chunk(&id, &chunk).unwrap_err(),
        ] {
            assert!(e.is_damage(), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("sealed") && msg.contains("config"), "{msg}");
        }
    }

    #[test]
    fn encrypted_names_and_seals_bound_to_kind_and_name() {
        let keys = MasterKeys::generate();
        let c = Codec::encrypted(keys.clone(), DataCipher::Aes256Gcm);
        assert_ne!(c.chunk_id(b"x"), ObjectId::of(b"x"));
        let framed = frame::encode(Kind::Node, b"node plaintext", 3).unwrap();
        let stored = c.seal_meta(SealKind::Node, "nodes/aa/a1", framed.clone());
        assert!(!stored.windows(5).any(|w| w == b"plain"));
        assert_eq!(
            &*c.open_meta(SealKind::Node, "nodes/aa/a1", &stored).unwrap(),
            &framed[..]
        );
        for (kind, name) in [
            (SealKind::Node, "nodes/aa/a2"),
            (SealKind::Manifest, "nodes/aa/a1"),
        ] {
            assert!(c.open_meta(kind, name, &stored).unwrap_err().is_damage());
        }
        assert!(
            c.open_meta(SealKind::Node, "nodes/aa/a1", &stored[..stored.len() - 1])
                .unwrap_err()
                .is_damage()
        );
        // Another repository's keys do not open it.
        let other = Codec::encrypted(MasterKeys::generate(), DataCipher::Aes256Gcm);
        assert!(
            other
                .open_meta(SealKind::Node, "nodes/aa/a1", &stored)
                .is_err()
        );

        let id = c.chunk_id(b"guest data");
        let sealed = c.encode_chunk(&id, b"guest data", 3).unwrap();
        let opened = c.open_chunk(&id, &sealed).unwrap();
        assert_eq!(
            frame::decode_chunk(&id.to_hex(), &opened, 10).unwrap(),
            b"guest data"
        );
        assert!(
            c.open_chunk(&c.chunk_id(b"other"), &sealed)
                .unwrap_err()
                .is_damage()
        );
    }

    #[test]
    fn chunk_data_of_either_cipher_opens() {
        // A repository's format fixes the cipher its writers use; readers
        // open both, so nothing depends on which build wrote a chunk.
        let keys = MasterKeys::generate();
        let x = Codec::encrypted(keys.clone(), DataCipher::XChaCha20Poly1305);
        let a = Codec::encrypted(keys, DataCipher::Aes256Gcm);
        let id = x.chunk_id(b"guest data");
        let by_x = x.encode_chunk(&id, b"guest data", 3).unwrap();
        let by_a = a.encode_chunk(&id, b"guest data", 3).unwrap();
        assert_eq!((by_x[5], by_a[5]), (2, 3), "envelope modes");
        for reader in [&x, &a] {
            for stored in [&by_x, &by_a] {
                let n = reader
                    .with_chunk(&id, stored, |framed| {
                        frame::decode_chunk(&id.to_hex(), framed, 10)
                    })
                    .unwrap();
                assert_eq!(n, b"guest data");
            }
        }
    }

    #[test]
    fn a_backup_only_key_writes_chunks_it_cannot_read() {
        let full = MasterKeys::generate();
        let c = Codec::encrypted(full.backup_only(), DataCipher::Aes256Gcm);
        assert_eq!(c.access(), Access::BackupOnly);
        let id = c.chunk_id(b"x");
        let sealed = c.encode_chunk(&id, b"x", 3).unwrap();
        let e = c.require_data("restore").unwrap_err();
        assert!(
            matches!(&e, Error::MissingCapability { operation, .. } if operation == "restore"),
            "{e}"
        );
        assert!(matches!(
            c.open_chunk(&id, &sealed),
            Err(Error::MissingCapability { .. })
        ));
        assert!(
            Codec::encrypted(full, DataCipher::Aes256Gcm)
                .open_chunk(&id, &sealed)
                .is_ok()
        );
    }
}
