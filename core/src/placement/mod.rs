//! The chunk placement seam: where chunk bytes live.
//!
//! Chunks live in pack objects (`packs/`), found through index objects
//! (`index/`); see docs/design.md, "Pack layout". Everything that stores,
//! fetches, checks or lists chunk bytes goes through here: backup,
//! restore, serve, verify, stats, gc and repair call these functions and
//! never build a pack or index key themselves.
//!
//! - [`session`]: a backup's writer: dedup against the index before
//!   compressing, a packer per disk, one index object per session;
//! - [`fetch`]: reading chunks in coalesced runs, every chunk checked
//!   against its id, a damaged copy replaced by another if the index
//!   knows one;
//! - [`packer`], [`pack`], [`pack_read`], [`index`], [`lookup`],
//!   [`known`]: the formats and their readers and writers;
//! - [`rebuild`]: the index derived again from pack trailers alone;
//! - [`transfer`]: chunks moved as stored to a repository with the same
//!   keys (`xfull copy`), each checked on arrival.
//!
//! Packs are put with [`crate::backend::ObjectClass::Data`] (a backend may keep them in a
//! colder storage class); index objects are metadata.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::backend::Backend;
use crate::codec::Codec;
use crate::damage::Health;
use crate::error::{Error, Result};
use crate::frame;
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;

pub mod archive;
mod check_packs;
pub mod fetch;
pub mod fetch_into;
pub use check_packs::{PackCheck, Soundness};
pub(crate) mod ids;
pub mod index;
mod index_encode;
pub mod index_write;
pub mod known;
pub mod lookup;
pub mod merge;
pub mod pack;

pub mod pack_read;
pub mod packer;
pub mod rebuild;
pub mod salvage;
pub mod shard;
pub mod sweep;
pub mod transfer;

pub mod session;

/// A chunk's id in an unencrypted repository (plain BLAKE3). Code that
/// names chunks of a repository asks its codec
/// ([`crate::codec::Codec::chunk_id`]): keyed when encrypted.
pub fn chunk_id(plain: &[u8]) -> ObjectId {
    ObjectId::of(plain)
}

/// Pack size of a backup (see [`packer::DEFAULT_TARGET`]).
pub const PACK_TARGET: u64 = packer::DEFAULT_TARGET;
/// Packs uploading at once per disk (memory: this many sealed packs
/// besides the open one).
pub const PACKS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct Placement {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    /// The local cache of index blocks (only a cache).
    cache: Option<PathBuf>,
    /// The repository's largest chunk (decoders refuse larger ones).
    max_chunk: u32,
}

impl Placement {
    pub fn new(
        backend: Arc<dyn Backend>,
        codec: Arc<Codec>,
        cache: Option<PathBuf>,
        max_chunk: u32,
    ) -> Self {
        Placement {
            backend,
            codec,
            cache,
            max_chunk,
        }
    }

    /// True for keys under which this module stores chunks and their
    /// index (for callers that walk the whole key space, like `stats`).
    pub fn owns(key: &str) -> bool {
        key.starts_with(keys::PACKS) || key.starts_with(keys::INDEX)
    }

    /// The repository's chunk index as it is now: one LIST and a read of
    /// each index object's head. Open it again to see later sessions.
    pub async fn open_index(&self) -> Result<Arc<lookup::ChunkIndex>> {
        let index =
            lookup::ChunkIndex::open(self.backend.clone(), self.codec.clone(), self.cache.clone())
                .await?;
        Ok(Arc::new(index))
    }

    /// A backup session's writer over `index` (see [`session`]).
    pub fn session(&self, index: Arc<lookup::ChunkIndex>) -> Arc<session::SessionPacks> {
        Arc::new(session::SessionPacks::new(
            self.backend.clone(),
            self.codec.clone(),
            index,
        ))
    }

    /// Stored bytes of a chunk: framed at `level`, sealed. CPU-bound.
    pub fn encode_chunk(&self, id: &ObjectId, plain: &[u8], level: i32) -> Result<Bytes> {
        self.codec.encode_chunk(id, plain, level)
    }

    /// Opens stored chunk bytes into `out` (replacing what it held with
    /// the chunk's `len` bytes) and checks that they hash to `id`.
    /// CPU-bound: call from a blocking context.
    pub fn open_into(
        &self,
        id: &ObjectId,
        stored: &[u8],
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let name = chunk_name(id);
        self.codec
            .with_chunk(id, stored, |framed| {
                frame::decode_chunk_into(&name, framed, len, out)
            })
            .map_err(|e| match e {
                Error::Corrupt { reason, .. } => Error::corrupt(&name, reason),
                e => e,
            })?;
        if self.codec.chunk_id(out) != *id {
            return Err(Error::corrupt(name, "content does not match its id"));
        }
        Ok(())
    }

    /// Stores chunks (id, plain length, stored bytes from
    /// [`Placement::encode_chunk`]) in new packs and one index object,
    /// whatever the index says: for repairs, which store again chunks
    /// whose copies are gone or damaged. Returns the packs and index
    /// objects found already stored (named by their bytes, they may be
    /// another writer's, which a sweep may be about to delete: the
    /// caller's lease must name them).
    pub async fn store(&self, chunks: Vec<(ObjectId, usize, Bytes)>) -> Result<Vec<ObjectRef>> {
        let index = Arc::new(lookup::ChunkIndex::empty(self.backend.clone()));
        let session = self.session(index);
        let mut disk = session.disk();
        for (id, len, blob) in chunks {
            disk.add(id, len, &blob).await?;
        }
        disk.finish().await?;
        session.finish().await?;
        Ok(session.take_existed())
    }

    /// The ids among `ids` that cannot be read from the store as it is
    /// now: in no index object, or only in packs that are gone (one HEAD
    /// per pack). Reads no chunk data.
    pub async fn absent(&self, ids: &[ObjectId]) -> Result<Vec<ObjectId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.absent_in(&*self.open_index().await?, ids).await
    }

    /// As [`Placement::absent`], with an index the caller opened (after
    /// the event it checks for).
    pub async fn absent_in(
        &self,
        index: &lookup::ChunkIndex,
        ids: &[ObjectId],
    ) -> Result<Vec<ObjectId>> {
        Ok(self.presence_in(index, ids, None).await?.absent)
    }

    /// As [`Placement::absent_in`], and the packs a session that began at
    /// `began` (the store's clock) relies on for the chunks found: for
    /// each, a pack that holds it, stored before `began`, when none
    /// stored since holds it. A sweep's cutoff spares packs younger than
    /// a live lease; an older one goes unless a lease names it, and a
    /// chunk of a point not yet committed is marked by no sweep.
    pub async fn presence_in(
        &self,
        index: &lookup::ChunkIndex,
        ids: &[ObjectId],
        began: Option<DateTime<Utc>>,
    ) -> Result<Presence> {
        let places = index.lookup_all(ids).await?;
        let mut packs: Vec<ObjectId> = places.iter().flatten().map(|e| e.pack).collect();
        packs.sort_unstable();
        packs.dedup();
        // Each listed pack that is there: whether it is older than `began`.
        let mut there = std::collections::HashMap::new();
        for p in packs {
            match self.backend.head(&keys::pack(&p)).await {
                Ok(meta) => {
                    there.insert(p, began.is_some_and(|b| meta.last_modified < b));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut out = Presence::default();
        for (id, ps) in ids.iter().zip(places) {
            let found: Vec<(ObjectId, bool)> = ps
                .iter()
                .filter_map(|e| there.get(&e.pack).map(|old| (e.pack, *old)))
                .collect();
            match found.iter().find(|(_, old)| !old).or(found.first()) {
                None => out.absent.push(*id),
                Some(&(pack, true)) if !out.relied.contains(&pack) => out.relied.push(pack),
                Some(_) => {}
            }
        }
        Ok(out)
    }

    /// Fetches the plaintext of chunks (see [`fetch::fetch`]).
    pub async fn fetch(
        &self,
        index: &lookup::ChunkIndex,
        ids: &[ObjectId],
    ) -> std::result::Result<fetch::Fetched, fetch::FetchError> {
        fetch::fetch(&*self.backend, &self.codec, index, ids).await
    }

    /// Fetches chunks into the slots of a buffer (see
    /// [`fetch_into::fetch_into`]).
    pub async fn fetch_into(
        &self,
        index: &lookup::ChunkIndex,
        asks: Vec<fetch_into::Ask>,
        buf: Vec<u8>,
    ) -> std::result::Result<fetch_into::Placed, fetch::FetchError> {
        fetch_into::fetch_into(&*self.backend, &self.codec, index, asks, buf).await
    }

    /// Fetches and checks one chunk of at most `max` bytes (any copy the
    /// index knows), for repair's fresh look at a damage record and
    /// `verify --read-data`'s second look at a copy that did not open. A
    /// damaged index block is passed over, as a restore does: what only
    /// it places no reader finds. (Failing on it, `lookup_all` stopped
    /// every repair and such a verify while the object was there: review.)
    pub async fn check(&self, id: &ObjectId, max: usize) -> Result<Health> {
        self.check_in(&*self.open_index().await?, id, max).await
    }

    /// [`Self::check`] with the index opened once for many chunks: one
    /// open is a listing of `index/` and a read of each unsharded head,
    /// which thousands of re-checked chunks paid each (review 100).
    pub async fn check_in(
        &self,
        index: &lookup::ChunkIndex,
        id: &ObjectId,
        max: usize,
    ) -> Result<Health> {
        let places = index.lookup_readable(std::slice::from_ref(id)).await?;
        let places = places.into_iter().next().unwrap_or_default();
        if places.is_empty() {
            return Ok(Health::Gone);
        }
        // A place of a length no chunk has is no copy, but others may be:
        // judging the chunk by it took a sound chunk for damaged, on
        // every repair (review 100).
        let (places, oversized): (Vec<_>, Vec<_>) = places
            .into_iter()
            .partition(|e| e.entry.plain_len as usize <= max);
        let mut last = if oversized.is_empty() {
            Health::Gone
        } else {
            Health::Damaged("larger than any chunk".into())
        };
        for e in places {
            match fetch::read_one(&*self.backend, &self.codec, &e).await {
                Ok(Some(_)) => return Ok(Health::Sound),
                Ok(None) => {} // that pack is gone
                Err(err) => last = Health::of_error(err)?,
            }
        }
        Ok(last)
    }

    /// The sorted ids of every chunk an index object lists in a pack that
    /// exists (small test repositories: they are all held).
    #[cfg(test)]
    pub async fn list_ids(&self) -> Result<Vec<ObjectId>> {
        let mut v = Vec::new();
        let walked = self
            .walk_index(&Default::default(), &mut |e| {
                v.push(e.entry.id);
                Ok(())
            })
            .await?;
        assert!(!walked.vanished && walked.damaged.is_empty(), "{walked:?}");
        Ok(v)
    }

    /// Derives the index from the packs' trailers and stores it as one
    /// new index object (see [`rebuild`]).
    pub async fn rebuild(&self, progress: &crate::progress::Progress) -> Result<rebuild::Rebuilt> {
        rebuild::rebuild(self.backend.clone(), &self.codec, self.max_chunk, progress).await
    }

    /// The sorted names of the packs in the store.
    pub async fn list_packs(&self) -> Result<Vec<ObjectId>> {
        use futures::TryStreamExt;
        let mut v: Vec<ObjectId> = sweep::list_packs(&*self.backend)
            .map_ok(|(name, _)| name)
            .try_collect()
            .await?;
        v.sort_unstable();
        Ok(v)
    }
}

/// How a chunk is named in messages and damage records: a logical key
/// (`chunks/<2 hex>/<64 hex>`; in format 2 no object has it, the index
/// says which pack holds the chunk).
pub fn chunk_name(id: &ObjectId) -> String {
    keys::chunk(id)
}

/// An unencrypted codec, for the placement tests.
#[cfg(test)]
pub(crate) fn test_codec() -> Arc<Codec> {
    Arc::new(Codec::plain())
}

/// What [`Placement::presence_in`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// Chunks in no pack that is there.
    pub absent: Vec<ObjectId>,
    /// Older packs relied on for chunks found (each once).
    pub relied: Vec<ObjectId>,
}
