//! Finding chunks in the repository's index objects: batches of ids,
//! sorted, with ranged GETs of single blocks and a local cache that is
//! only a cache.
//!
//! An id is looked up in the index objects that can hold it: those of
//! any ids (as backups write them; their heads are read at open) and
//! those of its shard prefix (`placement::shard`; a shard object's head
//! is read the first time an id of its prefix is looked up, then kept).
//! A lookup of a batch costs, per object consulted, about one block read
//! per distinct block the batch's ids fall in (consecutive sorted ids in
//! one block share the read), plus the heads read (32 bytes per pack and
//! per 1,024 entries).
//!
//! Decoded blocks are also kept in memory, up to [`DECODED_ENTRIES`]
//! entries (about 20 MiB), oldest out first: a restore or a backup looks
//! up one segment's ids at a time, and a batch of random ids falls in
//! most blocks of an object, so without it every batch read, checked and
//! (encrypted) opened every block again (7% of an encrypted 2 GiB
//! restore's CPU samples). An index of more entries than that (over
//! about 16 GiB of unique data at 64 KiB chunks) holds only that share
//! of its blocks: beyond it, batches read blocks again as before.
//!
//! The cache (`$XDG_CACHE_HOME/xfull/<repo id>/`) keeps blocks as files
//! named by index object and block number. A cached block is used only
//! after it matched the sum in the object's head, which is always read
//! from the store; a block that does not match, or a cache that cannot be
//! read or written, is bypassed and the store read instead.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use tokio::sync::OnceCell;

use super::index::{IndexEntry, IndexHead, Step};
use super::shard;
use super::sweep::read_head_if_present;
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

/// The local cache directory of a repository: `$XDG_CACHE_HOME/xfull/<repo
/// id>/`, else `$HOME/.cache/xfull/<repo id>/`; `None` without either.
pub fn default_cache_dir(repo_id: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("xfull").join(repo_id))
}

#[derive(Debug)]
struct IndexObject {
    name: ObjectId,
    key: String,
    /// Its shard prefix ("": any ids).
    prefix: String,
    size: u64,
    /// Read on first use; `None` once the object turned out gone.
    head: OnceCell<Option<IndexHead>>,
}

/// The index objects of a repository, their heads read and checked as
/// they are needed.
#[derive(Debug)]
pub struct ChunkIndex {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    objects: Vec<IndexObject>,
    cache: Option<PathBuf>,
    decoded: Mutex<Decoded>,
    /// Blocks (a head: block `usize::MAX`) met damaged by a lookup, and
    /// why the first was: not read again by later lookups.
    damaged: Mutex<Damaged>,
}

/// What [`ChunkIndex::lookup`] met damaged.
#[derive(Debug, Default)]
struct Damaged {
    blocks: std::collections::HashSet<BlockAt>,
    first: Option<String>,
}

/// The "block" of a damaged head in [`Damaged::blocks`].
const HEAD: usize = usize::MAX;

/// Most index entries kept decoded in memory (80 bytes each).
pub const DECODED_ENTRIES: usize = 256 * 1024;

/// Index heads read at once when opening: a hundred objects in about
/// seven round trips, with at most 16 first reads (20 KiB each) in flight.
const HEADS_AT_ONCE: usize = 16;

/// A block: (position in `objects`, block number).
type BlockAt = (usize, usize);

/// Decoded blocks, oldest first out, at most [`DECODED_ENTRIES`] entries.
#[derive(Debug, Default)]
struct Decoded {
    blocks: HashMap<BlockAt, Arc<Vec<IndexEntry>>>,
    order: VecDeque<BlockAt>,
    entries: usize,
}

impl Decoded {
    fn get(&self, at: BlockAt) -> Option<Arc<Vec<IndexEntry>>> {
        self.blocks.get(&at).cloned()
    }

    /// Keeps `block`, dropping the oldest while over `limit` entries.
    fn keep(&mut self, at: BlockAt, block: Arc<Vec<IndexEntry>>, limit: usize) {
        if self.blocks.contains_key(&at) || block.len() > limit {
            return; // decoded by two lookups at once, or over the bound
        }
        while self.entries + block.len() > limit {
            let Some(old) = self.order.pop_front() else {
                return;
            };
            self.entries -= self.blocks.remove(&old).map_or(0, |b| b.len());
        }
        self.entries += block.len();
        self.order.push_back(at);
        self.blocks.insert(at, block);
    }
}

impl ChunkIndex {
    /// Lists `index/` and reads the head of every object of any ids (one
    /// ranged GET each, two for a head over 64 KiB; shard objects' heads
    /// wait for a lookup that needs them). A damaged head is left for the
    /// lookups, which pass it over (see [`ChunkIndex::lookup`]) or fail
    /// on it naming the object; `xfull index rebuild` replaces it.
    pub async fn open(
        backend: Arc<dyn Backend>,
        codec: Arc<Codec>,
        cache: Option<PathBuf>,
    ) -> Result<Self> {
        let listed: Vec<_> = backend.list(keys::INDEX).try_collect().await?;
        // Backups since the last gc each left an unsharded object whose
        // head is read now: together, not a round trip after another.
        let opened: Vec<Option<IndexObject>> = futures::stream::iter(listed)
            .map(|meta| {
                let (backend, codec) = (&backend, &codec);
                async move {
                    let Some((prefix, name)) = keys::parse_index_in(&meta.key) else {
                        return Ok(None);
                    };
                    let head = OnceCell::new();
                    if prefix.is_empty() {
                        // Gone since the listing: a sweep replaced it by
                        // an object holding its live entries, which a
                        // later open sees.
                        let read = read_head_if_present(&**backend, codec, &meta.key, meta.size);
                        match read.await {
                            Ok(Some(h)) => {
                                let _ = head.set(Some(h));
                            }
                            Ok(None) => return Ok(None),
                            // Left unread: a lookup reads it again and
                            // passes it over as it does a damaged block
                            // (one such object stopped every restore and
                            // backup at open, stop 50); `lookup_all`
                            // still fails on it.
                            Err(e) if e.is_damage() => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok::<_, crate::error::Error>(Some(IndexObject {
                        name,
                        key: meta.key,
                        prefix,
                        size: meta.size,
                        head,
                    }))
                }
            })
            .buffered(HEADS_AT_ONCE)
            .try_collect()
            .await?;
        let mut objects: Vec<IndexObject> = opened.into_iter().flatten().collect();
        objects.sort_unstable_by(|a, b| (&a.prefix, a.name).cmp(&(&b.prefix, b.name)));
        Ok(ChunkIndex {
            backend,
            codec,
            objects,
            cache,
            decoded: Mutex::default(),
            damaged: Mutex::default(),
        })
    }

    /// The head of `object`, read now if it was not yet; `None` if the
    /// object is gone.
    async fn head<'a>(&self, object: &'a IndexObject) -> Result<Option<&'a IndexHead>> {
        let head = object
            .head
            .get_or_try_init(|| {
                read_head_if_present(&*self.backend, &self.codec, &object.key, object.size)
            })
            .await?;
        Ok(head.as_ref())
    }

    /// An index of nothing (for a writer that must not deduplicate).
    pub fn empty(backend: Arc<dyn Backend>) -> Self {
        ChunkIndex {
            backend,
            codec: Arc::new(Codec::plain()),
            objects: Vec::new(),
            cache: None,
            decoded: Mutex::default(),
            damaged: Mutex::default(),
        }
    }

    /// Entries of all index objects (from their heads: every one is
    /// read).
    pub async fn entries(&self) -> Result<u64> {
        let mut n = 0;
        for object in &self.objects {
            n += self.head(object).await?.map_or(0, |h| h.entries());
        }
        Ok(n)
    }

    /// The store the index objects are read from.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How many index objects are listed.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// Looks up every id (any order; looked up sorted) and answers in the
    /// order given: where the chunk is stored, or `None` (the first place
    /// found; objects are consulted in name order). A block or shard head
    /// that is damaged is passed over, the other objects still consulted
    /// ([`ChunkIndex::damage_seen`] says so): an id only it placed is
    /// `None`, which readers report as damage of that chunk (a restore
    /// with `--ignore-damage` goes on; one damaged block stopped every
    /// restore that looked an id up in it, found by review at stop 49)
    /// and writers store again.
    pub async fn lookup(&self, ids: &[ObjectId]) -> Result<Vec<Option<IndexEntry>>> {
        let all = self.find(ids, true, true).await?;
        Ok(all.into_iter().map(|v| v.first().copied()).collect())
    }

    /// Every place of every id, in every index object (for a reader whose
    /// first copy of a chunk was damaged: a repair or a later backup may
    /// have stored it again elsewhere). A damaged block is an error here:
    /// its callers judge a chunk by all its places.
    pub async fn lookup_all(&self, ids: &[ObjectId]) -> Result<Vec<Vec<IndexEntry>>> {
        self.find(ids, false, false).await
    }

    /// As [`ChunkIndex::lookup_all`], passing over damaged blocks as
    /// [`ChunkIndex::lookup`] does: for a reader after any copy that
    /// opens.
    pub async fn lookup_readable(&self, ids: &[ObjectId]) -> Result<Vec<Vec<IndexEntry>>> {
        self.find(ids, false, true).await
    }

    /// Why the first damaged block or head a lookup passed over was, if
    /// one was.
    pub fn damage_seen(&self) -> Option<String> {
        self.damaged().first.clone()
    }

    fn damaged(&self) -> std::sync::MutexGuard<'_, Damaged> {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `at` damaged, with why, if the lookup passes damage over
    /// and `e` is damage; else gives the error back.
    fn pass_over(&self, at: BlockAt, pass: bool, e: Error) -> Result<()> {
        if !pass || !e.is_damage() {
            return Err(e);
        }
        let mut d = self.damaged();
        d.blocks.insert(at);
        d.first.get_or_insert_with(|| e.to_string());
        Ok(())
    }

    async fn find(
        &self,
        ids: &[ObjectId],
        first_only: bool,
        pass: bool,
    ) -> Result<Vec<Vec<IndexEntry>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&k| ids[k]);
        let mut found: Vec<Vec<IndexEntry>> = vec![Vec::new(); ids.len()];
        for (at, object) in self.objects.iter().enumerate() {
            // The ids this object can hold: all, or its shard's (a run of
            // the sorted ids). An object no id falls in is never read.
            let mine = if object.prefix.is_empty() {
                &order[..]
            } else {
                let from = shard::first_id(&object.prefix);
                let lo = order.partition_point(|&k| ids[k] < from);
                let n = order[lo..].partition_point(|&k| shard::holds(&object.prefix, &ids[k]));
                &order[lo..lo + n]
            };
            if mine.iter().all(|&k| first_only && !found[k].is_empty()) {
                continue;
            }
            if pass && self.damaged().blocks.contains(&(at, HEAD)) {
                continue;
            }
            let head = match self.head(object).await {
                Ok(Some(head)) => head,
                // Gone since it was listed: see below.
                Ok(None) => continue,
                Err(e) => {
                    self.pass_over((at, HEAD), pass, e)?;
                    continue;
                }
            };
            // The last block read: sorted ids mostly fall in it again.
            let mut held: Option<(usize, Arc<Vec<IndexEntry>>)> = None;
            for &k in mine {
                if first_only && !found[k].is_empty() {
                    continue;
                }
                let id = &ids[k];
                let Some(mut i) = head.first_block(id) else {
                    break;
                };
                let mut dir = None;
                let hit = loop {
                    if held.as_ref().is_none_or(|(at, _)| *at != i) {
                        if pass && self.damaged().blocks.contains(&(at, i)) {
                            break None;
                        }
                        match self.block((at, i), object, head).await {
                            Ok(Some(b)) => held = Some((i, b)),
                            // Gone since it was listed: a sweep replaced
                            // it by one this index was opened too early
                            // to see. Its chunks count as not found here
                            // (stored again: waste, never a loss).
                            Ok(None) => break None,
                            Err(e) => {
                                self.pass_over((at, i), pass, e)?;
                                break None;
                            }
                        }
                    }
                    let block = held.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default();
                    match head.step(id, i, block, &mut dir) {
                        Step::Done(hit) => break hit,
                        Step::Read(next) => i = next,
                    }
                };
                found[k].extend(hit);
            }
        }
        Ok(found)
    }

    /// Block `i` of `object` (at `(_, i)`), decoded: from memory, else
    /// from the cache if it holds it intact, else from the store (and
    /// then cached).
    async fn block(
        &self,
        (at, i): BlockAt,
        object: &IndexObject,
        head: &IndexHead,
    ) -> Result<Option<Arc<Vec<IndexEntry>>>> {
        let decoded = || self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(block) = decoded().get((at, i)) {
            return Ok(Some(block));
        }
        let block = self.read_block(object, head, i).await?.map(Arc::new);
        if let Some(b) = &block {
            decoded().keep((at, i), b.clone(), DECODED_ENTRIES);
        }
        Ok(block)
    }

    async fn read_block(
        &self,
        object: &IndexObject,
        head: &IndexHead,
        i: usize,
    ) -> Result<Option<Vec<IndexEntry>>> {
        let path = self.cache.as_ref().map(|c| block_path(c, &object.key, i));
        let cached = path.as_ref().and_then(|p| std::fs::read(p).ok());
        if let Some(block) = cached.and_then(|b| head.decode_block(i, &b).ok()) {
            return Ok(Some(block));
        }
        let bytes = match self
            .backend
            .get_range(&object.key, head.block_range(i))
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let block = head.decode_block(i, &bytes)?;
        if let Some(p) = &path {
            // Best effort: a cache that cannot be written is bypassed.
            let _ = write_atomically(p, &bytes);
        }
        Ok(Some(block))
    }
}

fn block_path(cache: &Path, key: &str, i: usize) -> PathBuf {
    // `index/<prefix>-<name>`: a shard object is sealed under its key, so
    // the same name under two prefixes is two caches.
    let file = key.strip_prefix(keys::INDEX).unwrap_or(key);
    cache.join("index").join(file).join(i.to_string())
}

/// Writes a cache file under a temporary name and renames it into place,
/// so a concurrent reader sees a whole block or none (and a torn one would
/// fail its sum anyway).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
