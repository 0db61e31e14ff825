//! The chunk placement seam: chunk id -> stored bytes.
//!
//! Today every chunk is one object under `chunks/`. Everything that stores
//! or fetches chunk bytes goes through here, so that grouping small chunks
//! into pack objects can be added later without touching nodes, manifests,
//! backup or restore.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Backend;
use crate::damage::Health;
use crate::error::{Error, Result};
use crate::frame;
use crate::id::ObjectId;
use crate::keys;
use crate::repo::{Stored, missing, put_once};

#[derive(Debug, Clone)]
pub struct ChunkStore {
    backend: Arc<dyn Backend>,
}

impl ChunkStore {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        ChunkStore { backend }
    }

    /// Stores a framed chunk create-only.
    pub async fn put(&self, id: &ObjectId, framed: Bytes) -> Result<Stored> {
        put_once(self.backend.as_ref(), &keys::chunk(id), framed).await
    }

    /// Stores a framed chunk over a damaged copy under its key (its id
    /// fixes the right bytes, so replacing them is safe).
    pub async fn replace(&self, id: &ObjectId, framed: Bytes) -> Result<()> {
        self.backend
            .put(&keys::chunk(id), framed, crate::backend::PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// Fetches the framed bytes of a chunk (not yet verified).
    pub async fn get_raw(&self, id: &ObjectId) -> Result<Bytes> {
        let key = keys::chunk(id);
        self.backend.get(&key).await.map_err(|e| missing(e, &key))
    }

    /// Decodes framed chunk bytes into `out` (the chunk's length) and
    /// checks that they hash to `id`. CPU-bound: call from a blocking
    /// context.
    pub fn open_into(id: &ObjectId, framed: &[u8], out: &mut [u8]) -> Result<()> {
        let key = keys::chunk(id);
        frame::decode_chunk_into(&key, framed, out)?;
        if ObjectId::of(out) != *id {
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
        let id = *id;
        crate::task::blocking("checking a chunk", move || {
            match frame::decode(frame::Kind::Chunk, &key, &framed, max) {
                Ok(plain) if ObjectId::of(&plain) == id => Ok(Health::Sound),
                Ok(_) => Ok(Health::Damaged("content does not match its id".into())),
                Err(e) => Health::of_error(e),
            }
        })
        .await?
    }
}
