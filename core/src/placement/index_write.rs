//! Writing index objects in bounded memory: entries buffered up to
//! [`MAX_WRITTEN_ENTRIES`], cut at shard boundaries, and every place of
//! a chunk kept (an object holds one place per chunk, so further places
//! go to further objects: [`index::rounds`]).

use std::sync::Arc;

use super::index::{self, IndexEntry};
use super::shard;
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::Result;
use crate::keys;
use crate::repo::{Stored, put_once};

/// Entries per index object written: 2^19 x 80 bytes = 40 MiB buffered
/// (twice while encoding); more entries go to further objects.
pub const MAX_WRITTEN_ENTRIES: usize = shard::SHARD_ENTRIES as usize;

/// Stores `entries` (any order) as index objects of shard `prefix`,
/// create-only (named by their bytes): one, or more when a chunk has
/// several places. Returns each key and whether it was new.
pub async fn store_entries(
    backend: &dyn Backend,
    codec: &Codec,
    prefix: &str,
    entries: Vec<IndexEntry>,
) -> Result<Vec<(String, Stored)>> {
    let mut out = Vec::new();
    for round in index::rounds(entries) {
        let object = index::encode_in(codec, prefix, round);
        let key = keys::index_in(prefix, &index::index_name(&object));
        let stored = put_once(backend, &key, object).await?;
        out.push((key, stored));
    }
    Ok(out)
}

/// Writes index objects of at most [`MAX_WRITTEN_ENTRIES`] entries each.
/// At depth 0 entries come in any order and objects hold any ids; at a
/// shard depth they must come sorted by id, and an object is cut where
/// the shard prefix changes (unsorted input would only make more, smaller
/// objects: never a wrong one).
#[derive(Debug)]
pub struct IndexWriter {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    max: usize,
    depth: usize,
    prefix: String,
    buf: Vec<IndexEntry>,
    /// Keys of the objects written (or found already there).
    pub written: Vec<String>,
}

impl IndexWriter {
    /// Objects of any ids.
    pub fn new(backend: Arc<dyn Backend>, codec: Arc<Codec>) -> Self {
        IndexWriter::with_max(backend, codec, MAX_WRITTEN_ENTRIES)
    }

    pub fn with_max(backend: Arc<dyn Backend>, codec: Arc<Codec>, max: usize) -> Self {
        IndexWriter {
            backend,
            codec,
            max: max.max(1),
            depth: 0,
            prefix: String::new(),
            buf: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Objects of one shard each, `depth` hex digits (sorted input).
    pub fn sharded(backend: Arc<dyn Backend>, codec: Arc<Codec>, depth: usize) -> Self {
        IndexWriter {
            depth: depth.min(shard::MAX_DEPTH),
            ..IndexWriter::new(backend, codec)
        }
    }

    pub async fn push(&mut self, e: IndexEntry) -> Result<()> {
        let outside = self.prefix.len() != self.depth || !shard::holds(&self.prefix, &e.entry.id);
        if self.depth > 0 && outside {
            self.flush().await?;
            self.prefix = shard::prefix_of(&e.entry.id, self.depth);
        }
        self.buf.push(e);
        if self.buf.len() >= self.max {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.buf);
        for (key, _) in store_entries(&*self.backend, &self.codec, &self.prefix, entries).await? {
            self.written.push(key);
        }
        Ok(())
    }

    /// Writes what is buffered; returns the keys of every object written.
    pub async fn finish(mut self) -> Result<Vec<String>> {
        self.flush().await?;
        Ok(self.written)
    }
}

#[cfg(test)]
#[path = "index_write_tests.rs"]
mod tests;
