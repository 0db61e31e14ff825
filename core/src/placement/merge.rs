//! Merging index objects into one stream of entries sorted by chunk id
//! and pack, for gc to write as shard objects (`index_write`), in bounded
//! memory: each object is read a few blocks at a time, and a shard
//! object is opened only when the merge reaches its prefix (so the
//! objects read at once are the ones of any ids plus those of one shard
//! or so, not all of them).
//!
//! Every object's entries are checked on the way: sorted within the
//! object (a block is checked alone when decoded; the order across
//! blocks is checked here) and inside its shard. A hostile or damaged
//! object is damage naming it, never a stream out of order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::index::{BLOCK_ENTRIES, ENTRY_LEN, IndexEntry};
use super::shard;
use super::sweep::{BLOCKS_PER_READ, EntryReader, IndexObject};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::id::ObjectId;

/// Memory for read-ahead across all the objects read at once: blocks per
/// request are cut down so that this many bytes of blocks are held.
const READ_BUDGET: usize = 64 << 20;

/// Sorts by (id, pack); equal keys are one entry.
type Key = (ObjectId, ObjectId);

#[derive(Debug)]
struct Source<'a> {
    reader: EntryReader<'a>,
    key: &'a str,
    prefix: &'a str,
    /// The entries of the last read, from `at` on still to come.
    run: Vec<IndexEntry>,
    at: usize,
    last: Option<ObjectId>,
}

impl Source<'_> {
    /// The source's next entry, reading its next blocks when needed.
    async fn next(&mut self, backend: &dyn Backend) -> Result<Option<IndexEntry>> {
        loop {
            if let Some(&e) = self.run.get(self.at) {
                self.at += 1;
                let id = e.entry.id;
                if self.last.is_some_and(|l| l >= id) {
                    return Err(Error::corrupt(
                        self.key,
                        "entries out of order across blocks",
                    ));
                }
                if !shard::holds(self.prefix, &id) {
                    return Err(Error::corrupt(
                        self.key,
                        format!("holds chunk {id}, outside its shard {}", self.prefix),
                    ));
                }
                self.last = Some(id);
                return Ok(Some(e));
            }
            match self.reader.next(backend).await? {
                Some(run) => (self.run, self.at) = (run, 0),
                None => {
                    // Read to its end: its buffer goes (a merge finishes
                    // thousands of shard objects and holds on to none).
                    (self.run, self.at) = (Vec::new(), 0);
                    return Ok(None);
                }
            }
        }
    }
}

/// The merged entries of some index objects.
#[derive(Debug)]
pub struct Merge<'a> {
    /// Not opened yet, by the first id they can hold, last first.
    pending: Vec<&'a IndexObject>,
    sources: Vec<Source<'a>>,
    heads: BinaryHeap<Reverse<(Key, usize)>>,
    held: Vec<Option<IndexEntry>>,
    per_read: usize,
    last: Option<Key>,
    /// Every object's entry comes, the same place from two objects too.
    repeats: bool,
    /// The object of the entry last returned, and of the last read.
    from: Option<&'a str>,
    reading: Option<&'a str>,
}

impl<'a> Merge<'a> {
    pub fn new(mut objects: Vec<&'a IndexObject>) -> Self {
        objects.sort_by_key(|o| Reverse(shard::first_id(&o.prefix)));
        // Objects of any ids are all open at once, then about one shard's.
        let open_at_once = objects.iter().filter(|o| o.prefix.is_empty()).count() + 4;
        let block = BLOCK_ENTRIES * ENTRY_LEN;
        let per_read = (READ_BUDGET / open_at_once / block).clamp(1, BLOCKS_PER_READ);
        Merge {
            pending: objects,
            sources: Vec::new(),
            heads: BinaryHeap::new(),
            held: Vec::new(),
            per_read,
            last: None,
            repeats: false,
            from: None,
            reading: None,
        }
    }

    /// A merge that also gives the same place again when another object
    /// holds it (verify checks every object's entries).
    pub fn with_repeats(mut self) -> Self {
        self.repeats = true;
        self
    }

    /// The key of the index object the last entry came from.
    pub fn source_key(&self) -> Option<&'a str> {
        self.from
    }

    /// The key of the index object read last: after an error of
    /// [`Merge::next`], the one that failed.
    pub fn reading(&self) -> Option<&'a str> {
        self.reading
    }

    /// Entries held in read buffers (for tests of the merge's memory).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.sources.iter().map(|s| s.run.capacity()).sum()
    }

    /// The next entry in (id, pack) order; the same place read from two
    /// objects comes once (unless [`Merge::with_repeats`]).
    ///
    /// After an error the object that failed ([`Merge::reading`]) is left
    /// out from there on, and the merge may go on with the others: the
    /// failing source was either not yet among the heads or had just
    /// given up its head, so nothing of it is held.
    pub async fn next(&mut self, backend: &dyn Backend) -> Result<Option<IndexEntry>> {
        loop {
            // Open every object that may hold an entry before the
            // smallest one held: none opened later can then hold less.
            while let Some(o) = self.pending.last() {
                let smallest = self.heads.peek().map(|Reverse((k, _))| k.0);
                if smallest.is_some_and(|s| shard::first_id(&o.prefix) > s) {
                    break;
                }
                let o = self.pending.pop().expect("peeked");
                let mut source = Source {
                    reader: EntryReader::with_blocks(o, self.per_read),
                    key: &o.meta.key,
                    prefix: &o.prefix,
                    run: Vec::new(),
                    at: 0,
                    last: None,
                };
                self.reading = Some(source.key);
                let first = source.next(backend).await?;
                let i = self.sources.len();
                self.sources.push(source);
                self.held.push(first);
                if let Some(e) = first {
                    self.heads.push(Reverse(((e.entry.id, e.pack), i)));
                }
            }
            let Some(Reverse((key, i))) = self.heads.pop() else {
                return Ok(None);
            };
            let e = self.held[i].take().expect("a head is held");
            self.reading = Some(self.sources[i].key);
            let next = self.sources[i].next(backend).await?;
            self.held[i] = next;
            if let Some(n) = next {
                self.heads.push(Reverse(((n.entry.id, n.pack), i)));
            }
            if self.last == Some(key) && !self.repeats {
                continue;
            }
            self.last = Some(key);
            self.from = Some(self.sources[i].key);
            return Ok(Some(e));
        }
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
