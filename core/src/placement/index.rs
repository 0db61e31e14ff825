//! Chunk index objects: chunk id -> (pack, offset, lengths), sorted by id,
//! immutable, readable a block at a time.
//!
//! ```text
//! head    := "XFI2" entries:u64 packs:u32 block_entries:u32 (=1024) 0:u32
//!            block_sum:32 * ceil(entries / 1024)
//!            head_sum:32                  BLAKE3 of the head up to here
//! entries := entry * entries               strictly ascending by chunk id
//! entry   := chunk id:32 pack:32 offset:u64 stored_len:u32 plain_len:u32
//! packs   := entries:u64 pack_name:32 * packs  sum:32
//!            the packs the entries name, sorted, once each (for gc)
//! ```
//!
//! In an encrypted repository (the fixed part's last word is 1):
//!
//! ```text
//! head    := "XFI2" entries:u64 packs:u32 block_entries:u32 (=1024) 1:u32
//!            name:32                      the object's name
//! block i := seal(Index, "<key>#<i>", entry * (1024, or the rest))
//! packs   := seal(Index, "<key>#packs", entries:u64 pack_name:32 * packs)
//! ```
//!
//! Each entry names its pack in full, and the table of packs comes last:
//! a lookup reads a small head and one block, whatever the number of
//! packs. (In a shard object the chunks of one pack are spread over every
//! shard, so a shard names about as many packs as it has entries; a
//! table in the head made every shard head as large as 32 bytes per
//! entry: 1.5 MB per shard at 200 M chunks, read for each shard a backup
//! touched.) Only gc reads the table (which objects name a pack that
//! goes); its copy of the entry count, under the checksum or the seal,
//! makes an object cut short damage to gc.
//!
//! Each block is sealed on its own under the metadata key, bound to the
//! object's key and its number, so a ranged read of the head and of one
//! block still opens and checks alone, and a block moved within or
//! between objects, cut or edited does not open (damage naming the
//! object). Nobody without the metadata key sees chunk ids, packs,
//! offsets or lengths; the counts show, as the object's size shows them
//! anyway. The seals are bound to the name, so the name comes first: a
//! keyed hash (the id key) of the plain content, written in the head for
//! [`index_name`]; a rebuild from the same packs still gives the same
//! name, and nothing is written. Overhead: 56 bytes per object, 46 per
//! block of 1,024 entries (81,920 bytes) and 38 for the table.
//!
//! Integers are little-endian. The object's size must be exactly what the
//! counts say, so every count is bounded by the real size before anything
//! is allocated. Each block of 1,024 entries (80 KiB) has its own
//! checksum in the head (or its own seal), so a lookup reads the head
//! once (kept) and then one block with a ranged read, and still checks
//! everything it uses. Chunk ids are uniform BLAKE3 outputs, so the block
//! holding an id is guessed from the id's first 8 bytes (interpolation);
//! for n entries the guess is off by about sqrt(n)/2 entries, well inside
//! one block for index objects and shards of up to a few million entries,
//! and a miss walks to the neighbouring block in one direction only (a
//! hostile, unsorted object cannot make a lookup loop).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::pack::PackEntry;
use crate::chunker::LARGEST_CHUNK;
use crate::codec::Codec;
use crate::crypto::SealKind;
use crate::crypto::seal::META_OVERHEAD;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

pub(super) const MAGIC: &[u8; 4] = b"XFI2";
const FIXED: usize = 24;
/// Entries per checksummed block.
pub const BLOCK_ENTRIES: usize = 1024;
/// Bytes per entry.
pub const ENTRY_LEN: usize = 32 + 32 + 8 + 4 + 4;

/// The furthest offset an entry may give in its pack (1 PiB: packs are
/// tens of MiB); beyond it an entry is damage, and no range overflows.
const MAX_PACK_OFFSET: u64 = 1 << 50;
/// What sealing adds to the head and to each block.
const SEAL: usize = META_OVERHEAD;

pub use super::index_encode::{encode, encode_in, rounds};

/// One chunk's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub pack: ObjectId,
    pub entry: PackEntry,
}

/// The name the table of packs of the object at `key` is sealed under.
pub(super) fn table_name(key: &str) -> String {
    format!("{key}#packs")
}

/// The name block `i` of the object at `key` is sealed under.
pub(super) fn block_name(key: &str, i: usize) -> String {
    format!("{key}#{i}")
}

/// Whether the fixed part says the object is sealed.
fn is_sealed(first: &[u8]) -> bool {
    first.len() >= FIXED && first[20..24] == 1u32.to_le_bytes()
}

/// What a lookup does after reading one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The id's place, or that this object does not hold it.
    Done(Option<IndexEntry>),
    /// Read this block next.
    Read(usize),
}

/// The name of an index object: the BLAKE3 of its bytes (so it is put
/// create-only, and a rebuild that finds the same packs writes nothing).
pub fn index_name(object: &[u8]) -> ObjectId {
    if is_sealed(object) && object.len() >= FIXED + 32 {
        // Named before it was sealed (the seals are bound to the name).
        return ObjectId::from_bytes(object[FIXED..FIXED + 32].try_into().unwrap_or_default());
    }
    ObjectId::from_bytes(*blake3::hash(object).as_bytes())
}

/// The checked head of an index object.
#[derive(Clone, Debug)]
pub struct IndexHead {
    key: String,
    /// Hex digits of its shard prefix, which every id it holds shares:
    /// interpolation looks at the digits after them.
    depth: u32,
    entries: u64,
    packs: u64,
    /// One per block; empty when sealed (each block's seal checks it).
    block_sums: Vec<[u8; 32]>,
    blocks: usize,
    head_len: u64,
    /// The codec that opens sealed blocks (`None`: plain blocks).
    sealed: Option<Arc<Codec>>,
}

/// The lengths of an object's three parts, from its fixed part.
fn layout(entries: u64, packs: u64, sealed: bool) -> (u64, u64, u64) {
    let blocks = entries.div_ceil(BLOCK_ENTRIES as u64);
    let table = 8 + 32 * packs;
    if sealed {
        (
            FIXED as u64 + 32,
            entries * ENTRY_LEN as u64 + blocks * SEAL as u64,
            table + SEAL as u64,
        )
    } else {
        (
            FIXED as u64 + 32 * (blocks + 1),
            entries * ENTRY_LEN as u64,
            table + 32,
        )
    }
}

impl IndexHead {
    /// The head's length, from the object's first 24 bytes and its real
    /// size; refuses counts the size cannot hold.
    pub fn head_len(key: &str, first: &[u8], size: u64) -> Result<u64> {
        let bad = |why: String| Error::corrupt(key, why);
        if first.len() < FIXED || first[..4] != MAGIC[..] {
            return Err(bad("not a chunk index object (bad magic)".into()));
        }
        let entries = u64::from_le_bytes(first[4..12].try_into().unwrap_or_default());
        let packs = u64::from(u32::from_le_bytes(
            first[12..16].try_into().unwrap_or_default(),
        ));
        let block = u32::from_le_bytes(first[16..20].try_into().unwrap_or_default());
        let sealed = is_sealed(first);
        if block as usize != BLOCK_ENTRIES || !(sealed || first[20..24] == [0; 4]) {
            return Err(bad(format!("unsupported index layout (blocks of {block})")));
        }
        // Every pack holds an entry; the size bounds the entries.
        if entries > size / ENTRY_LEN as u64 || packs > entries {
            return Err(bad(format!(
                "declares {entries} entries in {packs} packs in {size} bytes"
            )));
        }
        let (head, body, table) = layout(entries, packs, sealed);
        if head + body + table != size {
            return Err(bad(format!(
                "{size} bytes, its {entries} entries and {packs} packs need {}",
                head + body + table
            )));
        }
        Ok(head)
    }

    /// Decodes the head (`head` is the object's first `head_len` bytes).
    pub fn decode(codec: &Arc<Codec>, key: &str, head: &[u8], size: u64) -> Result<IndexHead> {
        let len = IndexHead::head_len(key, head, size)?;
        if head.len() as u64 != len {
            return Err(Error::corrupt(
                key,
                format!("head of {} bytes read, {len} declared", head.len()),
            ));
        }
        let len = len as usize;
        let entries = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
        let packs = u64::from(u32::from_le_bytes(
            head[12..16].try_into().unwrap_or_default(),
        ));
        let blocks = entries.div_ceil(BLOCK_ENTRIES as u64) as usize;
        // An encrypted repository's codec refuses a plain head, and a
        // plain one a sealed head: each is damage.
        if is_sealed(head) != codec.is_encrypted() {
            return Err(Error::corrupt(
                key,
                if codec.is_encrypted() {
                    "a plain index object in an encrypted repository"
                } else {
                    "a sealed index object in an unencrypted repository"
                },
            ));
        }
        let mut out = IndexHead {
            key: key.to_string(),
            depth: keys::parse_index_in(key).map_or(0, |(p, _)| p.len() as u32),
            entries,
            packs,
            block_sums: Vec::new(),
            blocks,
            head_len: len as u64,
            sealed: None,
        };
        if is_sealed(head) {
            out.sealed = Some(codec.clone());
            return Ok(out);
        }
        if blake3::hash(&head[..len - 32]).as_bytes()[..] != head[len - 32..] {
            return Err(Error::corrupt(key, "index head checksum mismatch"));
        }
        out.block_sums = head[FIXED..len - 32]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or_default())
            .collect();
        Ok(out)
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// How many packs the object's table names.
    pub fn pack_count(&self) -> u64 {
        self.packs
    }

    /// The byte range of block `i` in the object.
    pub fn block_range(&self, i: usize) -> Range<u64> {
        let first = (i * BLOCK_ENTRIES) as u64;
        let end = (first + BLOCK_ENTRIES as u64).min(self.entries);
        let seal = if self.sealed.is_some() {
            SEAL as u64
        } else {
            0
        };
        let start = self.head_len + first * ENTRY_LEN as u64 + i as u64 * seal;
        start..start + end.saturating_sub(first) * ENTRY_LEN as u64 + seal
    }

    /// The byte range of the table of packs (the object's end).
    pub fn table_range(&self) -> Range<u64> {
        let (head, body, table) = layout(self.entries, self.packs, self.sealed.is_some());
        head + body..head + body + table
    }

    /// Decodes and checks the table of packs (exactly
    /// [`Self::table_range`]): the packs the entries name, sorted, once
    /// each, and the entry count the head declares.
    pub fn decode_table(&self, bytes: &[u8]) -> Result<Vec<ObjectId>> {
        let bad = |why: &str| Error::corrupt(&self.key, format!("table of packs: {why}"));
        let range = self.table_range();
        if bytes.len() as u64 != range.end - range.start {
            return Err(bad("cut short"));
        }
        let opened;
        let table = match &self.sealed {
            Some(codec) => {
                opened = codec
                    .open_meta(SealKind::Index, &table_name(&self.key), bytes)
                    .map_err(|e| match e {
                        Error::Corrupt { reason, .. } => bad(&reason),
                        e => e,
                    })?;
                &opened[..]
            }
            None => {
                let (table, sum) = bytes.split_at(bytes.len() - 32);
                if blake3::hash(table).as_bytes()[..] != *sum {
                    return Err(bad("checksum mismatch"));
                }
                table
            }
        };
        if table.len() as u64 != 8 + 32 * self.packs || table[..8] != self.entries.to_le_bytes() {
            return Err(bad("does not match the head's counts"));
        }
        let packs: Vec<ObjectId> = table[8..]
            .chunks_exact(32)
            .map(|c| ObjectId::from_bytes(c.try_into().unwrap_or_default()))
            .collect();
        if packs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("out of order"));
        }
        Ok(packs)
    }

    /// The block an id most likely lies in (interpolation on its first 8
    /// bytes after the shard prefix; ids are uniform). Without leaving out
    /// the prefix, every id of shard `a` looked `a/16` of the way in, and
    /// a lookup walked block by block from there (40 reads per lookup in
    /// 16 shards of 125 k entries: `core/examples/index_scale.rs`).
    pub fn guess_block(&self, id: &ObjectId) -> usize {
        let b = id.as_bytes();
        let p = u128::from_be_bytes(b[..16].try_into().unwrap_or_default());
        let p = (p << (4 * self.depth) >> 64) as u64;
        let pos = (u128::from(p) * u128::from(self.entries)) >> 64;
        (pos as usize / BLOCK_ENTRIES).min(self.blocks().saturating_sub(1))
    }

    /// Decodes and checks block `i` (exactly [`Self::block_range`]).
    pub fn decode_block(&self, i: usize, bytes: &[u8]) -> Result<Vec<IndexEntry>> {
        let bad = |why: String| Error::corrupt(&self.key, why);
        let range = self.block_range(i);
        if i >= self.blocks() || bytes.len() as u64 != range.end - range.start {
            return Err(bad(format!("block {i}: {} bytes", bytes.len())));
        }
        let opened;
        let bytes = match &self.sealed {
            Some(codec) => {
                opened = codec
                    .open_meta(SealKind::Index, &block_name(&self.key, i), bytes)
                    .map_err(|e| match e {
                        Error::Corrupt { reason, .. } => bad(format!("block {i}: {reason}")),
                        e => e,
                    })?;
                &opened[..]
            }
            None if blake3::hash(bytes).as_bytes() != &self.block_sums[i] => {
                return Err(bad(format!("block {i} checksum mismatch")));
            }
            None => bytes,
        };
        let want = (range.end - range.start) as usize - self.sealed.as_ref().map_or(0, |_| SEAL);
        if bytes.len() != want {
            return Err(bad(format!("block {i}: {} bytes of entries", bytes.len())));
        }
        let mut out: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / ENTRY_LEN);
        for raw in bytes.chunks_exact(ENTRY_LEN) {
            let id_at =
                |at: usize| ObjectId::from_bytes(raw[at..at + 32].try_into().unwrap_or_default());
            let u32_at =
                |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
            let entry = PackEntry {
                id: id_at(0),
                offset: u64::from_le_bytes(raw[64..72].try_into().unwrap_or_default()),
                stored_len: u32_at(72),
                plain_len: u32_at(76),
            };
            let sorted = out.last().is_none_or(|l| l.entry.id < entry.id);
            // A blob past the end of any pack: its range would overflow
            // (a panic in a debug build, a wrapped range otherwise; found
            // by review at stop 49).
            let fits = entry.offset <= MAX_PACK_OFFSET;
            if !sorted || !fits || entry.stored_len < 2 || entry.plain_len == 0 {
                return Err(bad(format!(
                    "block {i}: entry {} is out of order, has no length or lies past {} TiB",
                    out.len(),
                    MAX_PACK_OFFSET >> 40
                )));
            }
            // Readers allocate the plaintext before they can compare it
            // with what the blob holds (found by review: an entry of 1
            // GiB, 1 GiB touched per read in flight; up to 4 GiB could be
            // claimed). A stored blob is at most a compressed, sealed
            // largest chunk: twice is ample.
            if entry.plain_len > LARGEST_CHUNK || entry.stored_len > 2 * LARGEST_CHUNK {
                return Err(bad(format!(
                    "block {i}: entry {} claims {} bytes stored, {} plain (chunks are at most {LARGEST_CHUNK})",
                    out.len(),
                    entry.stored_len,
                    entry.plain_len
                )));
            }
            out.push(IndexEntry {
                pack: id_at(32),
                entry,
            });
        }
        Ok(out)
    }

    /// Looks `id` up, reading blocks with `read` (a byte range of the
    /// object: a ranged GET, a read of a cached copy). Usually one read.
    pub fn lookup(
        &self,
        id: &ObjectId,
        mut read: impl FnMut(Range<u64>) -> Result<Bytes>,
    ) -> Result<Option<IndexEntry>> {
        let Some(mut i) = self.first_block(id) else {
            return Ok(None);
        };
        let mut dir = None;
        loop {
            let block = self.decode_block(i, &read(self.block_range(i))?)?;
            match self.step(id, i, &block, &mut dir) {
                Step::Done(found) => return Ok(found),
                Step::Read(next) => i = next,
            }
        }
    }

    /// The block a lookup of `id` reads first; `None` if the object is empty.
    pub fn first_block(&self, id: &ObjectId) -> Option<usize> {
        (self.entries > 0).then(|| self.guess_block(id))
    }

    /// One step of a lookup of `id` in the decoded block `i`: the answer,
    /// or the next block to read. `dir` carries the walk's direction
    /// between steps (start with `None`): once the walk has a direction
    /// it keeps it, so an unsorted hostile object cannot make it loop.
    pub fn step(
        &self,
        id: &ObjectId,
        i: usize,
        block: &[IndexEntry],
        dir: &mut Option<bool>,
    ) -> Step {
        let (Some(first), Some(last)) = (block.first(), block.last()) else {
            return Step::Done(None);
        };
        let go_down = *id < first.entry.id;
        let up = *id > last.entry.id;
        if !go_down && !up {
            let found = block.binary_search_by(|e| e.entry.id.cmp(id)).ok();
            return Step::Done(found.map(|k| block[k]));
        }
        if dir.is_some_and(|d| d != up) || (!up && i == 0) || (up && i + 1 >= self.blocks()) {
            return Step::Done(None);
        }
        *dir = Some(up);
        Step::Read(if up { i + 1 } else { i - 1 })
    }

    /// Reads a whole index object held in memory (tests, small objects).
    pub fn decode_all(
        codec: &Arc<Codec>,
        key: &str,
        bytes: &[u8],
    ) -> Result<(IndexHead, Vec<IndexEntry>)> {
        let size = bytes.len() as u64;
        let len = IndexHead::head_len(key, bytes, size)? as usize;
        let head = IndexHead::decode(codec, key, &bytes[..len], size)?;
        let mut all = Vec::new();
        for i in 0..head.blocks() {
            let r = head.block_range(i);
            all.extend(head.decode_block(i, &bytes[r.start as usize..r.end as usize])?);
        }
        if all.windows(2).any(|w| w[0].entry.id >= w[1].entry.id) {
            return Err(Error::corrupt(key, "entries out of order across blocks"));
        }
        let t = head.table_range();
        let packs = head.decode_table(&bytes[t.start as usize..t.end as usize])?;
        if all.iter().any(|e| packs.binary_search(&e.pack).is_err()) {
            return Err(Error::corrupt(key, "an entry names a pack its table lacks"));
        }
        Ok((head, all))
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
