//! Filling and storing packs: the write side of the pack layout.
//!
//! A backup gives the chunks of one disk, in disk order, to one
//! [`Packer`] (CPU: compression into the open pack) and the packs it
//! seals to one [`PackUploads`] (I/O: create-only puts, a bounded number
//! in flight). Chunks written together then die together, and a restore
//! reads them as long runs.
//!
//! The rule that keeps "nothing references what is not stored": a chunk
//! may be named by a node only once [`PackUploads`] returned the
//! [`StoredPack`] holding it. Until then it is only in memory or in a
//! put that may still fail.
//!
//! Memory: the open pack (at most the target plus one chunk) and at most
//! `max_in_flight` sealed packs, i.e. about (`max_in_flight` + 1) x target
//! per disk, whatever the disk's size.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::pack::{PackEntry, PackWriter};
use crate::backend::{Backend, ObjectClass};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::repo::{Stored, put_once_as};

/// Pack size a packer seals at unless told otherwise: 32 MiB, about 500
/// chunks of 64 KiB. Measured against 16 and 64 MiB
/// (`bench/results/pack-size.md`): a quarter fewer objects per TiB than
/// 16 MiB and one PUT fewer per small incremental backup, the same wall
/// time and peak RSS; 64 MiB saves little more, puts a small backup's
/// whole upload after its compression (one pack), and raised peak RSS.
pub const DEFAULT_TARGET: u64 = 32 << 20;

/// A pack ready to be stored.
#[derive(Debug)]
pub struct SealedPack {
    pub name: ObjectId,
    pub bytes: Bytes,
    pub entries: Vec<PackEntry>,
}

/// A pack that is durably in the store: its chunks may be referenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPack {
    pub name: ObjectId,
    pub size: u64,
    pub entries: Vec<PackEntry>,
    /// Whether this put wrote it (two equal packs are one object).
    pub stored: Stored,
}

/// Appends chunks to the open pack and seals it at the target size.
#[derive(Debug)]
pub struct Packer {
    codec: Arc<Codec>,
    target: u64,
    level: i32,
    open: PackWriter,
    /// Ids in the open pack: a pack never lists a chunk twice.
    open_ids: HashSet<ObjectId>,
}

impl Packer {
    /// A packer sealing packs once their blobs reach `target` bytes, and
    /// compressing at zstd `level` (0: stored).
    pub fn new(codec: Arc<Codec>, target: u64, level: i32) -> Self {
        Packer {
            codec,
            target: target.max(1),
            level,
            open: PackWriter::new(),
            open_ids: HashSet::new(),
        }
    }

    /// Compresses `plain` (whose id is `id`) into the open pack; returns
    /// the pack if this chunk filled it. A chunk already in the open pack
    /// is skipped. CPU-bound: call from a worker or blocking thread.
    pub fn push(&mut self, id: ObjectId, plain: &[u8]) -> Result<Option<SealedPack>> {
        if !self.open_ids.insert(id) {
            return Ok(None);
        }
        self.open.push(&self.codec, id, plain, self.level)?;
        Ok(self.seal_if_full())
    }

    /// Appends a blob already made by `Codec::encode_chunk` (compressed
    /// and sealed on a worker thread) of a chunk of `plain_len` bytes;
    /// returns the pack if it filled it. A chunk already in the open pack
    /// is skipped.
    pub fn push_stored(
        &mut self,
        id: ObjectId,
        plain_len: usize,
        blob: &[u8],
    ) -> Result<Option<SealedPack>> {
        if !self.open_ids.insert(id) {
            return Ok(None);
        }
        self.open.push_stored(id, plain_len, blob)?;
        Ok(self.seal_if_full())
    }

    /// Whether the open pack holds chunk `id`.
    pub fn holds(&self, id: &ObjectId) -> bool {
        self.open_ids.contains(id)
    }

    fn seal_if_full(&mut self) -> Option<SealedPack> {
        if self.open.len() >= self.target {
            return self.seal();
        }
        None
    }

    /// Seals the open pack, if it holds anything (the end of a disk).
    pub fn seal(&mut self) -> Option<SealedPack> {
        if self.open.is_empty() {
            return None;
        }
        self.open_ids.clear();
        let (name, bytes, entries) = std::mem::take(&mut self.open).finish(&self.codec);
        Some(SealedPack {
            name,
            bytes,
            entries,
        })
    }
}

/// Stores sealed packs, at most `max_in_flight` at a time.
#[derive(Debug)]
pub struct PackUploads {
    backend: Arc<dyn Backend>,
    max_in_flight: usize,
    running: JoinSet<Result<StoredPack>>,
    done: Vec<StoredPack>,
    /// The first failed put, until returned.
    failed: Option<Error>,
}

impl PackUploads {
    pub fn new(backend: Arc<dyn Backend>, max_in_flight: usize) -> Self {
        PackUploads {
            backend,
            max_in_flight: max_in_flight.max(1),
            running: JoinSet::new(),
            done: Vec::new(),
            failed: None,
        }
    }

    /// Starts storing `pack`, first waiting while `max_in_flight` puts run
    /// (the memory bound). A failed put is returned here or by `finish`;
    /// dropping `PackUploads` aborts the puts still running.
    pub async fn send(&mut self, pack: SealedPack) -> Result<()> {
        self.failed.take().map_or(Ok(()), Err)?;
        while self.running.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let backend = self.backend.clone();
        self.running.spawn(async move {
            let size = pack.bytes.len() as u64;
            let key = keys::pack(&pack.name);
            let stored = put_once_as(&*backend, &key, pack.bytes, ObjectClass::Data).await?;
            Ok(StoredPack {
                name: pack.name,
                size,
                entries: pack.entries,
                stored,
            })
        });
        Ok(())
    }

    /// Packs stored since the last call: their chunks may now be
    /// referenced. A failure met here is returned by the next `send` or
    /// by `finish`.
    pub fn take_stored(&mut self) -> Vec<StoredPack> {
        while let Some(r) = self.running.try_join_next() {
            self.record(r);
        }
        std::mem::take(&mut self.done)
    }

    /// Waits for every put; returns the packs not yet taken.
    pub async fn finish(mut self) -> Result<Vec<StoredPack>> {
        while !self.running.is_empty() {
            self.join_one().await?;
        }
        self.failed.take().map_or(Ok(()), Err)?;
        Ok(std::mem::take(&mut self.done))
    }

    async fn join_one(&mut self) -> Result<()> {
        if let Some(r) = self.running.join_next().await {
            self.record(r);
        }
        self.failed.take().map_or(Ok(()), Err)
    }

    fn record(&mut self, r: std::result::Result<Result<StoredPack>, tokio::task::JoinError>) {
        match r {
            Ok(Ok(p)) => self.done.push(p),
            Ok(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                let e = Error::Internal(format!("a pack upload died: {e}"));
                self.failed.get_or_insert(e);
            }
        }
    }
}

#[cfg(test)]
#[path = "packer_tests.rs"]
mod tests;
