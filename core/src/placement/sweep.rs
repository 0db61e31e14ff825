//! What gc needs of the pack layout, with bounded memory: index objects
//! read a head and then a few blocks at a time, new index objects written
//! in parts of bounded size, and a pack's live blobs moved verbatim into
//! new packs (no data key: a blob is the chunk's sealed frame, opened by
//! its chunk id wherever it lies).
//!
//! Deciding what is live and what goes is gc's (`crate::gc`); nothing here
//! deletes anything.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use super::index::{self, IndexEntry, IndexHead};
use super::pack::{PackEntry, PackWriter, decode_trailer};
use crate::backend::{Backend, ObjectClass, ObjectMeta};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::repo::{missing, put_once, put_once_as};

/// Bytes read from an index object's start to get its head in one request.
const HEAD_GUESS: u64 = 64 << 10;

/// Blocks of index entries read per ranged GET while streaming an index
/// object: 16 x 52 KiB = 832 KiB in memory, whatever the object's size.
pub const BLOCKS_PER_READ: usize = 16;

/// Entries per index object gc writes: 2^19 x 52 bytes = 26 MiB buffered
/// (twice while encoding); more entries go to further objects.
pub const MAX_WRITTEN_ENTRIES: usize = 1 << 19;

/// An index object as listed, its head read and checked.
#[derive(Clone, Debug)]
pub struct IndexObject {
    pub name: ObjectId,
    pub meta: ObjectMeta,
    pub head: IndexHead,
}

/// The index objects under `index/` (anything else there is not ours).
pub async fn list_index(backend: &dyn Backend) -> Result<Vec<(ObjectId, ObjectMeta)>> {
    let listed: Vec<ObjectMeta> = backend.list(keys::INDEX).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|m| Some((keys::parse_index(&m.key)?, m)))
        .filter(|(name, m)| keys::index(name) == m.key)
        .collect())
}

/// Streams the packs under `packs/` (name and listing), named as xfull
/// names them.
pub fn list_packs(
    backend: &dyn Backend,
) -> impl futures::Stream<Item = Result<(ObjectId, ObjectMeta)>> + '_ {
    backend
        .list(keys::PACKS)
        .map_err(Error::from)
        .try_filter_map(|m| async move {
            Ok(keys::parse_pack(&m.key)
                .filter(|name| keys::pack(name) == m.key)
                .map(|name| (name, m)))
        })
}

/// Reads and checks an index object's head (one ranged GET, two for a
/// head over 64 KiB).
pub async fn read_head(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    name: ObjectId,
    meta: ObjectMeta,
) -> Result<IndexObject> {
    let key = meta.key.clone();
    let size = meta.size;
    let get = |end: u64| {
        let key = key.clone();
        async move {
            backend
                .get_range(&key, 0..end)
                .await
                .map_err(|e| missing(e, &key))
        }
    };
    let first: Bytes = get(size.min(HEAD_GUESS)).await?;
    let len = IndexHead::head_len(&key, &first, size)?;
    let head = if len <= first.len() as u64 {
        first.slice(..len as usize)
    } else {
        get(len).await?
    };
    let head = IndexHead::decode(codec, &key, &head, size)?;
    Ok(IndexObject { name, meta, head })
}

/// Reads an index object's entries a few blocks at a time
/// ([`BLOCKS_PER_READ`] per request), each block checked against its sum;
/// a block that fails is damage of the object, named.
#[derive(Debug)]
pub struct EntryReader<'a> {
    object: &'a IndexObject,
    next: usize,
}

impl<'a> EntryReader<'a> {
    pub fn new(object: &'a IndexObject) -> Self {
        EntryReader { object, next: 0 }
    }

    /// The entries of the next blocks; `None` once all were read.
    pub async fn next(&mut self, backend: &dyn Backend) -> Result<Option<Vec<IndexEntry>>> {
        let head = &self.object.head;
        let key = &self.object.meta.key;
        let first = self.next;
        if first >= head.blocks() {
            return Ok(None);
        }
        let end = (first + BLOCKS_PER_READ).min(head.blocks());
        let range = head.block_range(first).start..head.block_range(end - 1).end;
        let start = range.start;
        let bytes = backend
            .get_range(key, range)
            .await
            .map_err(|e| missing(e, key))?;
        let mut out = Vec::with_capacity((end - first) * index::BLOCK_ENTRIES);
        for i in first..end {
            let r = head.block_range(i);
            let (a, b) = ((r.start - start) as usize, (r.end - start) as usize);
            let block = bytes.get(a..b).ok_or_else(|| {
                Error::corrupt(
                    key,
                    format!("{} bytes read for blocks {first}..{end}", bytes.len()),
                )
            })?;
            out.extend(head.decode_block(i, block)?);
        }
        self.next = end;
        Ok(Some(out))
    }
}

/// Writes index objects of at most [`MAX_WRITTEN_ENTRIES`] entries each,
/// create-only (named by their bytes).
#[derive(Debug)]
pub struct IndexWriter {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    max: usize,
    buf: Vec<IndexEntry>,
    /// Keys of the objects written (or found already there).
    pub written: Vec<String>,
}

impl IndexWriter {
    pub fn new(backend: Arc<dyn Backend>, codec: Arc<Codec>) -> Self {
        IndexWriter::with_max(backend, codec, MAX_WRITTEN_ENTRIES)
    }

    pub fn with_max(backend: Arc<dyn Backend>, codec: Arc<Codec>, max: usize) -> Self {
        IndexWriter {
            backend,
            codec,
            max: max.max(1),
            buf: Vec::new(),
            written: Vec::new(),
        }
    }

    pub async fn push(&mut self, e: IndexEntry) -> Result<()> {
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
        let mut entries = std::mem::take(&mut self.buf);
        // The same place read from two old objects is one entry; two
        // places of one chunk both stay (every copy of a chunk is kept).
        entries.sort_unstable_by_key(|e| (e.entry.id, e.pack));
        entries.dedup_by_key(|e| (e.entry.id, e.pack));
        let object = index::encode(&self.codec, entries);
        let key = keys::index(&index::index_name(&object));
        put_once(&*self.backend, &key, object).await?;
        self.written.push(key);
        Ok(())
    }

    /// Writes what is buffered; returns the keys of every object written.
    pub async fn finish(mut self) -> Result<Vec<String>> {
        self.flush().await?;
        Ok(self.written)
    }
}

/// A pack written by a repack.
#[derive(Clone, Debug)]
pub struct NewPack {
    pub name: ObjectId,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

/// What moving a pack's live blobs did.
#[derive(Clone, Debug, Default)]
pub struct Moved {
    pub packs: Vec<NewPack>,
    /// Stored bytes of the blobs moved.
    pub bytes: u64,
    pub chunks: u64,
}

/// Reads the pack `name` whole and copies every blob whose chunk `live`
/// says is live, verbatim, into new packs of about `target` bytes of
/// blobs, stored create-only as chunk data. The pack's own trailer (not
/// the index) says where its blobs are: a wrong index entry cannot make a
/// repack copy the wrong bytes under a chunk's id. A pack whose trailer
/// is damaged is an error of that pack (damage, named); `None` if the
/// pack is gone.
pub async fn move_live(
    backend: &dyn Backend,
    codec: &Codec,
    name: &ObjectId,
    max_chunk: u32,
    target: u64,
    live: impl Fn(&ObjectId) -> bool,
) -> Result<Option<Moved>> {
    let key = keys::pack(name);
    let bytes = match backend.get(&key).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let entries = decode_trailer(codec, &key, &bytes, bytes.len() as u64, max_chunk)?;
    let mut out = Moved::default();
    let mut writer = PackWriter::new();
    for e in entries.iter().filter(|e| live(&e.id)) {
        let r = e.range();
        writer.push_stored(
            e.id,
            e.plain_len as usize,
            &bytes[r.start as usize..r.end as usize],
        )?;
        out.bytes += u64::from(e.stored_len);
        out.chunks += 1;
        if writer.len() >= target {
            let full = std::mem::take(&mut writer);
            out.packs.push(store(backend, codec, full).await?);
        }
    }
    if !writer.is_empty() {
        out.packs.push(store(backend, codec, writer).await?);
    }
    Ok(Some(out))
}

async fn store(backend: &dyn Backend, codec: &Codec, writer: PackWriter) -> Result<NewPack> {
    let (name, bytes, entries) = writer.finish(codec);
    let size = bytes.len() as u64;
    put_once_as(backend, &keys::pack(&name), bytes, ObjectClass::Data).await?;
    Ok(NewPack {
        name,
        size,
        entries,
    })
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
