//! The chunk placement seam: where chunk bytes live.
//!
//! Every chunk is one object under `chunks/` (format 1). Everything that
//! stores, fetches, checks, lists or deletes chunk bytes goes through
//! here, and nothing else builds or parses chunk keys for storage: backup,
//! restore, verify, stats, gc and repair call these methods, so that
//! grouping chunks into pack objects changes this module, not them.
//! Chunk objects are put with [`ObjectClass::Data`], which a backend may
//! keep in a colder storage class.
//!
//! The pack layout (format 2, issue 11) is built beside it but not yet
//! used by any command: [`packer`] fills and stores packs, [`pack_read`]
//! reads trailers and coalesced runs of chunks with ranged GETs,
//! [`lookup`] finds chunks in index objects (batched, with a local cache),
//! [`known`] adds a session's own packs to it and writes a session's
//! index object, [`rebuild`] derives the index from pack trailers alone.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;

use crate::backend::{Backend, ObjectClass, ObjectMeta, PutMode, PutOptions};
use crate::codec::Codec;
use crate::damage::Health;
use crate::error::{Error, Result};
use crate::frame;
use crate::id::ObjectId;
use crate::keys;
use crate::repo::{Stored, missing, put_once_as};

pub mod index;
pub mod known;
pub mod lookup;
pub mod pack;
pub mod pack_read;
pub mod packer;
pub mod rebuild;
pub mod sweep;

/// A chunk's id in an unencrypted repository (plain BLAKE3). Code that
/// names chunks of a repository asks its codec
/// ([`crate::codec::Codec::chunk_id`]): keyed when encrypted.
pub fn chunk_id(plain: &[u8]) -> ObjectId {
    ObjectId::of(plain)
}

/// A stored chunk as a listing shows it.
#[derive(Clone, Debug)]
pub struct StoredChunk {
    pub id: ObjectId,
    /// Its object (key, size, the store's time).
    pub meta: ObjectMeta,
}

#[derive(Debug, Clone)]
pub struct Placement {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
}

impl Placement {
    pub fn new(backend: Arc<dyn Backend>, codec: Arc<Codec>) -> Self {
        Placement { backend, codec }
    }

    /// True for keys under which this module stores chunks (for callers
    /// that walk the whole key space, like `stats`).
    pub fn owns(key: &str) -> bool {
        key.starts_with(keys::CHUNKS)
    }

    /// Stores a framed chunk create-only, as chunk data.
    pub async fn put(&self, id: &ObjectId, framed: Bytes) -> Result<Stored> {
        let stored = self.codec.seal_chunk(id, framed);
        put_once_as(&*self.backend, &keys::chunk(id), stored, ObjectClass::Data).await
    }

    /// Stores a framed chunk over a damaged copy under its key (its id
    /// fixes the right bytes, so replacing them is safe).
    pub async fn replace(&self, id: &ObjectId, framed: Bytes) -> Result<()> {
        let opts = PutOptions::data(PutMode::Overwrite);
        let stored = self.codec.seal_chunk(id, framed);
        self.backend
            .put_opts(&keys::chunk(id), stored, opts)
            .await?;
        Ok(())
    }

    /// Whether the chunk is stored (its object exists; not read).
    pub async fn exists(&self, id: &ObjectId) -> Result<bool> {
        match self.backend.head(&keys::chunk(id)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams every stored chunk (memory stays bounded however many).
    pub fn list(&self) -> BoxStream<'_, Result<StoredChunk>> {
        Box::pin(
            self.backend
                .list(keys::CHUNKS)
                .map_err(crate::Error::from)
                .try_filter_map(|meta| async move {
                    // Anything else under the prefix is not a chunk.
                    let id = keys::parse_content(&meta.key);
                    Ok(id.map(|id| StoredChunk { id, meta }))
                }),
        )
    }

    /// The sorted ids of every stored chunk.
    pub async fn list_ids(&self) -> Result<Vec<ObjectId>> {
        let mut v: Vec<ObjectId> = self.list().map_ok(|c| c.id).try_collect().await?;
        v.sort_unstable();
        Ok(v)
    }

    /// Deletes listed chunks (missing ones count as deleted).
    pub async fn delete(&self, chunks: &[StoredChunk]) -> Result<()> {
        let keys: Vec<String> = chunks.iter().map(|c| c.meta.key.clone()).collect();
        self.backend.delete_many(&keys).await?;
        Ok(())
    }

    /// Fetches the stored bytes of a chunk (not yet opened or verified).
    pub async fn get_raw(&self, id: &ObjectId) -> Result<Bytes> {
        let key = keys::chunk(id);
        self.backend.get(&key).await.map_err(|e| missing(e, &key))
    }

    /// Opens stored chunk bytes into `out` (the chunk's length) and
    /// checks that they hash to `id`. CPU-bound: call from a blocking
    /// context.
    pub fn open_into(&self, id: &ObjectId, stored: &[u8], out: &mut [u8]) -> Result<()> {
        let key = keys::chunk(id);
        let framed = self.codec.open_chunk(id, stored).map_err(|e| match e {
            Error::Corrupt { reason, .. } => Error::corrupt(&key, reason),
            e => e,
        })?;
        frame::decode_chunk_into(&key, &framed, out)?;
        if self.codec.chunk_id(out) != *id {
            return Err(Error::corrupt(key, "content does not match its id"));
        }
        Ok(())
    }

    /// Fetches a chunk of at most `max` bytes and checks it against its id.
    pub async fn check(&self, id: &ObjectId, max: usize) -> Result<Health> {
        let key = keys::chunk(id);
        // The size first: a hostile object is not read whole.
        match self.backend.head(&key).await {
            Ok(m) if m.size > (max + max / 16 + 4096) as u64 => {
                return Ok(Health::Damaged(format!(
                    "{} bytes: larger than any chunk",
                    m.size
                )));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(Health::Gone),
            Err(e) => return Health::of_error(e.into()),
        }
        let framed = match self.backend.get(&key).await {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(Health::Gone),
            Err(e) => return Health::of_error(e.into()),
        };
        let (id, codec) = (*id, self.codec.clone());
        crate::task::blocking("checking a chunk", move || {
            let opened = match codec.open_chunk(&id, &framed) {
                Ok(o) => o,
                Err(e) => return Health::of_error(e),
            };
            match frame::decode(frame::Kind::Chunk, &key, &opened, max) {
                Ok(plain) if codec.chunk_id(&plain) == id => Ok(Health::Sound),
                Ok(_) => Ok(Health::Damaged("content does not match its id".into())),
                Err(e) => Health::of_error(e),
            }
        })
        .await?
    }
}
