//! What gc needs of the pack layout, with bounded memory: index objects
//! read a head and then a few blocks at a time (new ones are written by
//! `index_write`), and a pack's live blobs moved verbatim into
//! new packs (no data key: a blob is the chunk's sealed frame, opened by
//! its chunk id wherever it lies).
//!
//! Deciding what is live and what goes is gc's (`crate::gc`); nothing here
//! deletes anything.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use super::index::{self, IndexEntry, IndexHead};
use super::pack::{self, PackEntry, decode_trailer, open_blob};
use super::packer::{Packer, SealedPack};
use crate::backend::{Backend, ObjectClass, ObjectMeta};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::repo::{Stored, missing, put_once_as};

/// Bytes read from an index object's start to get its head in one
/// request: the head of an object of 2^19 entries (a shard, or what a
/// backup or gc writes at most) is 16.4 KB. (64 KiB was read before: 140
/// KB per new chunk in the scale example, of which 64 KiB were wasted.)
const HEAD_GUESS: u64 = 20 << 10;

/// Blocks of index entries read per ranged GET while streaming an index
/// object: 16 x 80 KiB = 1.25 MiB in memory, whatever the object's size.
pub const BLOCKS_PER_READ: usize = 16;

/// An index object as listed, its head read and checked.
#[derive(Clone, Debug)]
pub struct IndexObject {
    pub name: ObjectId,
    /// Its shard prefix ("": any ids; see `placement::shard`).
    pub prefix: String,
    pub meta: ObjectMeta,
    pub head: IndexHead,
}

/// The index objects under `index/`, sharded or not (anything else there
/// is not ours).
pub async fn list_index(backend: &dyn Backend) -> Result<Vec<(ObjectId, ObjectMeta)>> {
    let listed: Vec<ObjectMeta> = backend.list(keys::INDEX).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|m| Some((keys::parse_index_in(&m.key)?.1, m)))
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
/// head over 64 KiB); an object gone is an error naming it.
pub async fn read_head(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    name: ObjectId,
    meta: ObjectMeta,
) -> Result<IndexObject> {
    let prefix = keys::parse_index_in(&meta.key)
        .map(|(p, _)| p)
        .unwrap_or_default();
    match read_head_if_present(backend, codec, &meta.key, meta.size).await? {
        Some(head) => Ok(IndexObject {
            name,
            prefix,
            meta,
            head,
        }),
        None => Err(Error::corrupt(&meta.key, "missing from the repository")),
    }
}

/// [`read_head`], with `None` for an object gone since it was listed (a
/// sweep replaced it).
pub async fn read_head_if_present(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    key: &str,
    size: u64,
) -> Result<Option<IndexHead>> {
    let get = |end: u64| async move {
        match backend.get_range(key, 0..end).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::from(e)),
        }
    };
    let Some(first): Option<Bytes> = get(size.min(HEAD_GUESS)).await? else {
        return Ok(None);
    };
    let len = IndexHead::head_len(key, &first, size)?;
    let head = if len <= first.len() as u64 {
        first.slice(..len as usize)
    } else {
        match get(len).await? {
            Some(h) => h,
            None => return Ok(None),
        }
    };
    IndexHead::decode(codec, key, &head, size).map(Some)
}

/// Reads and checks an index object's table of packs (the packs its
/// entries name, sorted; one ranged GET). Gone, it is damage naming it.
pub async fn read_table(backend: &dyn Backend, object: &IndexObject) -> Result<Vec<ObjectId>> {
    let key = &object.meta.key;
    let bytes = backend
        .get_range(key, object.head.table_range())
        .await
        .map_err(|e| missing(e, key))?;
    object.head.decode_table(&bytes)
}

/// Reads an index object's entries a few blocks at a time
/// ([`BLOCKS_PER_READ`] per request), each block checked against its sum;
/// a block that fails is damage of the object, named.
#[derive(Debug)]
pub struct EntryReader<'a> {
    object: &'a IndexObject,
    next: usize,
    per_read: usize,
}

impl<'a> EntryReader<'a> {
    pub fn new(object: &'a IndexObject) -> Self {
        EntryReader::with_blocks(object, BLOCKS_PER_READ)
    }

    /// A reader of `per_read` blocks per request (a merge of many objects
    /// reads fewer at a time from each).
    pub fn with_blocks(object: &'a IndexObject, per_read: usize) -> Self {
        EntryReader {
            object,
            next: 0,
            per_read: per_read.clamp(1, BLOCKS_PER_READ),
        }
    }

    /// The entries of the next blocks; `None` once all were read.
    pub async fn next(&mut self, backend: &dyn Backend) -> Result<Option<Vec<IndexEntry>>> {
        let head = &self.object.head;
        let key = &self.object.meta.key;
        let first = self.next;
        if first >= head.blocks() {
            return Ok(None);
        }
        let end = (first + self.per_read).min(head.blocks());
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
    /// Chunks whose blob here was left out as it did not open
    /// ([`Repacker::take`]).
    pub damaged: Vec<ObjectId>,
}

/// Moves the live blobs of the packs a sweep rewrites into new packs of
/// about `target` bytes of blobs, filled from one pack after another (a
/// pack moved alone made a new pack of its live part only: packs shrank
/// with every rewrite and their count never fell, bench/max-waste).
/// New packs are stored create-only as chunk data as they fill; the last
/// one by [`Repacker::finish`]. Nothing names a new pack before the
/// sweep's index object does, so blobs still in the open pack when a
/// sweep stops are simply not moved (their old packs stay).
#[derive(Debug)]
pub struct Repacker {
    codec: Arc<Codec>,
    /// The open pack. It skips a chunk it already holds: one stored in two
    /// packs a sweep rewrites (two backups stored it at once, or a repair
    /// stored it again) goes into a new pack once, as a pack listing a
    /// chunk twice is damage.
    open: Packer,
}

impl Repacker {
    pub fn new(codec: Arc<Codec>, target: u64) -> Repacker {
        Repacker {
            // Blobs are copied as stored: no level is used.
            open: Packer::new(codec.clone(), target, 0),
            codec,
        }
    }

    /// Reads the pack `name` whole and copies every blob whose chunk
    /// `live` says is live, verbatim, into the open pack. The pack's own
    /// trailer (not the index) says where its blobs are: a wrong index
    /// entry cannot make a repack copy the wrong bytes under a chunk's id.
    ///
    /// A live chunk `check` names is opened first and left out if it does
    /// not open ([`Moved::damaged`]): for a chunk gc found a damaged copy
    /// of. Copied verbatim, a damaged blob taken first stood for the chunk
    /// in the open pack, and a good copy taken later was skipped as held
    /// (`gc/copies.rs`).
    ///
    /// The inner result is this pack's: damage of its trailer (named),
    /// "archived", or `None` if it is gone; nothing of it was copied then.
    /// The outer error is a failure to store a new pack that filled: it
    /// may hold blobs of packs taken before, so the sweep must stop (it
    /// has deleted nothing yet). The packs that filled are in `packs`.
    pub async fn take(
        &mut self,
        backend: &dyn Backend,
        name: &ObjectId,
        max_chunk: u32,
        live: impl Fn(&ObjectId) -> bool,
        check: impl Fn(&ObjectId) -> bool,
    ) -> Result<Result<Option<Moved>>> {
        let key = keys::pack(name);
        let bytes = match backend.get_at_most(&key, pack::MAX_PACK).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Ok(None)),
            Err(e) => return Ok(Err(e.into())),
        };
        let entries = match decode_trailer(&self.codec, &key, &bytes, bytes.len() as u64, max_chunk)
        {
            Ok(entries) => entries,
            Err(e) => return Ok(Err(e)),
        };
        let blob_of = |e: &PackEntry| {
            let r = e.range();
            &bytes[r.start as usize..r.end as usize]
        };
        // The copies to check are opened before anything is copied: an
        // error that is not damage (a key that cannot open chunk data)
        // is this pack's, with nothing of it moved.
        let mut out = Moved::default();
        for e in entries.iter().filter(|e| live(&e.id) && check(&e.id)) {
            match open_blob(&self.codec, &key, e, blob_of(e), &mut Vec::new()) {
                Ok(()) => {}
                Err(error) if error.is_damage() => out.damaged.push(e.id),
                Err(error) => return Ok(Err(error)),
            }
        }
        for e in entries.iter().filter(|e| live(&e.id)) {
            if self.open.holds(&e.id) || out.damaged.contains(&e.id) {
                continue;
            }
            out.bytes += u64::from(e.stored_len);
            out.chunks += 1;
            if let Some(full) = self
                .open
                .push_stored(e.id, e.plain_len as usize, blob_of(e))?
            {
                out.packs.push(store(backend, &self.codec, full).await?);
            }
        }
        Ok(Ok(Some(out)))
    }

    /// Stores the open pack, if it holds anything.
    pub async fn finish(mut self, backend: &dyn Backend) -> Result<Option<NewPack>> {
        match self.open.seal() {
            Some(last) => Ok(Some(store(backend, &self.codec, last).await?)),
            None => Ok(None),
        }
    }
}

/// Stores a new pack. Blobs move verbatim, so a rewrite of the same
/// packs makes the same pack again (the same blobs and table; a sealed
/// table differs in its nonce), and one a killed sweep left may be there
/// already: it must then hold these blobs and this table, else (damaged
/// since) the chunks would be entrusted to it and their old packs
/// deleted (a chunk lost, found by review). A pack there that differs is
/// damage: the sweep holds its deletions.
pub(super) async fn store(
    backend: &dyn Backend,
    codec: &Codec,
    pack: SealedPack,
) -> Result<NewPack> {
    let size = pack.bytes.len() as u64;
    let key = keys::pack(&pack.name);
    let stored = put_once_as(backend, &key, pack.bytes.clone(), ObjectClass::Data).await?;
    if stored == Stored::Existed {
        let there = backend
            .get_at_most(&key, pack::MAX_PACK)
            .await
            .map_err(|e| missing(e, &key))?;
        if !holds(codec, &key, &there, &pack) {
            return Err(Error::corrupt(
                &key,
                "a rewrite made this pack again and the one stored under its name \
                 holds other blobs or another table (damaged?); the packs it was made \
                 from are kept",
            ));
        }
    }
    Ok(NewPack {
        name: pack.name,
        size,
        entries: pack.entries,
    })
}

/// Whether the stored pack `there` holds the blobs and table of `pack`.
fn holds(codec: &Codec, key: &str, there: &[u8], pack: &SealedPack) -> bool {
    let Ok(entries) = decode_trailer(codec, key, there, there.len() as u64, u32::MAX) else {
        return false;
    };
    let end = pack.entries.last().map_or(0, |e| e.range().end) as usize;
    entries == pack.entries && there.get(..end) == pack.bytes.get(..end)
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
