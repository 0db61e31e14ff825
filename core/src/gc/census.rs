//! What a sweep knows of every pack once marking is done: which index
//! objects name it, its live and dead bytes, and its fate
//! (`pack_plan`), with memory per pack, not per chunk nor per entry.
//!
//! Memory: about 70 bytes per listed pack (32 MiB of chunks each) in a
//! vector sorted by name with a directory of its first 16 bits (no hash
//! map), the heads of the index objects (32 bytes per 1,024 entries),
//! the merge's reads (`placement/merge.rs`), and the chunk ids of old
//! orphan packs (rare: packs of crashed backups). Which packs an object
//! names is not kept: its table is read again when needed (one GET).
//! The entries are never all in memory, and the chunk marks of only one
//! range of ids at a time when they went to disk (`gc/marks.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::copies::Copies;
use super::marks::Marks;
use super::pack_plan::{ClassRules, PackFate, PackUse, class_rules, plan};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::placement::index::IndexEntry;
use crate::placement::pack_read::read_trailer;
use crate::placement::sweep::{IndexObject, read_table};

/// What happens to a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Not decided yet, or kept whatever its use.
    Keep,
    /// Younger than the sweep's cutoff: a running backup may be writing
    /// or about to name it.
    Young,
    /// A live lease reuses chunks from it.
    Dep,
    /// As `pack_plan` decided.
    Planned(PackFate),
    /// No index object names it and it is old: a crashed backup's.
    Orphan,
    /// No index object names it, but it holds live chunks found in no
    /// indexed pack: kept (an index object went missing: `xfull index
    /// rebuild` finds them again).
    OrphanLive,
    /// Its trailer cannot be read (no index names it): kept, reported.
    Damaged,
    /// An orphan whose trailer the store answers "archived" for: kept.
    Archived,
    /// Gone since the listing (a repack found it missing).
    Gone,
}

impl Fate {
    /// The pack is to be deleted (after a repack moved its live chunks).
    pub fn doomed(self) -> bool {
        matches!(
            self,
            Fate::Orphan | Fate::Planned(PackFate::Delete) | Fate::Planned(PackFate::Repack)
        )
    }
}

/// A listed pack. Counters are 32 bits, saturating: they only weigh
/// waste, and a pack holds far less (32 MiB); liveness is `live_chunks
/// > 0`, which saturation keeps.
#[derive(Clone, Debug)]
pub struct PackInfo {
    pub name: ObjectId,
    pub size: u64,
    /// The store's time of the listing.
    pub at: DateTime<Utc>,
    pub live_bytes: u32,
    pub dead_bytes: u32,
    pub live_chunks: u32,
    pub fate: Fate,
    pub named: bool,
    /// Spared at a batch's look (a lease or a late mark now needs it).
    pub spared: bool,
    /// The storage class the listing reported: 1 + its place in
    /// [`Census::classes`], 0 for none (one byte: a census may hold
    /// millions of packs, and a store has a handful of classes).
    pub class: u8,
}

#[derive(Clone, Debug)]
pub struct IndexUse {
    pub object: IndexObject,
    /// It names a pack that is not listed (gone, or, if the object is
    /// younger than the cutoff, stored after the listing).
    pub names_gone: bool,
    /// Its surviving entries are rewritten and it is deleted.
    pub replace: bool,
    /// ... rewritten into shard objects of [`Census::depth`] (else into
    /// objects of any ids).
    pub into_shards: bool,
}

impl IndexUse {
    /// Older than `cutoff` (the one [`Census::decide`] used; none before
    /// it): younger objects are never merged, a running backup may still
    /// be writing them or their twins; one naming a pack that goes is
    /// rewritten alone, keeping its unlisted packs' entries
    /// ([`Census::settle`]).
    fn older_than(&self, cutoff: Option<DateTime<Utc>>) -> bool {
        cutoff.is_some_and(|c| self.object.meta.last_modified < c)
    }
}

/// Index objects of any ids with fewer entries are merged when there are
/// several.
pub const SMALL_INDEX: u64 = 1 << 16;

/// A shard prefix with this many objects is merged into one.
pub const SHARD_OBJECTS: usize = 8;

/// Entries between two looks at `cancelled` in the census.
const CANCEL_EVERY: u64 = 1 << 16;

#[derive(Debug, Default)]
pub struct Census {
    /// Sorted by name once the listing is over.
    pub packs: Vec<PackInfo>,
    /// Where the packs whose names start with each 16 bits begin in
    /// `packs` (65,537 entries).
    dir: Vec<u32>,
    /// Old orphans' chunk ids (from their trailers), for marks that
    /// arrive later.
    pub orphans: HashMap<ObjectId, Vec<ObjectId>>,
    /// The indexed places of the live chunks old orphans hold
    /// ([`Census::count`]): an orphan goes only once one of each chunk's
    /// is found sound (`gc/orphans.rs`).
    pub orphan_covers: Vec<IndexEntry>,
    pub objects: Vec<IndexUse>,
    /// Keys of the index objects the rewrite wrote. One may be an old
    /// object written again byte for byte (an object is named by its
    /// bytes): it then stays.
    pub written: HashSet<String>,
    /// The shard depth the index's size calls for
    /// ([`crate::placement::shard::depth_for`]).
    pub depth: usize,
    /// Objects of any ids are distributed into shards this time.
    distribute: bool,
    /// The cutoff [`Census::decide`] used: younger index objects are
    /// never merged, and rewritten only when they name a pack that goes,
    /// keeping their unlisted packs' entries (a running backup's may name
    /// a pack stored after the listing).
    cutoff: Option<DateTime<Utc>>,
    /// The storage classes the listing reported, in order of first sight
    /// (at most 255; a pack of a further one counts as reporting none).
    pub classes: Vec<String>,
    /// Copies of live chunks left out (`gc/copies.rs`).
    pub copies: Copies,
}

fn top16(name: &ObjectId) -> usize {
    let b = name.as_bytes();
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

fn add(counter: &mut u32, n: u32) {
    *counter = counter.saturating_add(n);
}

impl Census {
    fn find(&self, name: &ObjectId) -> Option<usize> {
        let t = top16(name);
        let (a, b) = (*self.dir.get(t)? as usize, self.dir[t + 1] as usize);
        let i = self.packs[a..b]
            .binary_search_by(|p| p.name.cmp(name))
            .ok()?;
        Some(a + i)
    }

    pub fn pack(&self, name: &ObjectId) -> Option<&PackInfo> {
        self.find(name).map(|i| &self.packs[i])
    }

    pub fn pack_mut(&mut self, name: &ObjectId) -> Option<&mut PackInfo> {
        self.find(name).map(|i| &mut self.packs[i])
    }

    /// A listed pack, with the storage class the listing reported.
    pub fn listed(&mut self, name: ObjectId, size: u64, at: DateTime<Utc>, class: Option<&str>) {
        let class = class.map_or(0, |c| {
            let i = match self.classes.iter().position(|k| k == c) {
                Some(i) => i,
                // A listing of ever new classes (a hostile store) costs
                // 255 of them at most.
                None if self.classes.len() < usize::from(u8::MAX) => {
                    self.classes.push(c.to_string());
                    self.classes.len() - 1
                }
                None => return 0,
            };
            u8::try_from(i + 1).unwrap_or(0)
        });
        self.packs.push(PackInfo {
            class,
            name,
            size,
            at,
            live_bytes: 0,
            dead_bytes: 0,
            live_chunks: 0,
            fate: Fate::Keep,
            named: false,
            spared: false,
        });
    }

    /// Call once every pack is listed: sorts them for lookups.
    pub fn listing_done(&mut self) {
        self.packs.sort_unstable_by_key(|a| a.name);
        self.packs.dedup_by(|a, b| a.name == b.name);
        self.packs.shrink_to_fit();
        self.dir = vec![0; (1 << 16) + 1];
        let mut i = 0;
        for t in 0..=(1usize << 16) {
            while i < self.packs.len() && top16(&self.packs[i].name) < t {
                i += 1;
            }
            self.dir[t] = i as u32;
        }
    }

    /// An index object whose head was read, and the packs its table
    /// names (not kept: see [`Census::settle`]).
    pub fn index(&mut self, object: IndexObject, table: &[ObjectId]) {
        let mut names_gone = false;
        for name in table {
            match self.pack_mut(name) {
                Some(p) => p.named = true,
                None => names_gone = true,
            }
        }
        self.objects.push(IndexUse {
            object,
            names_gone,
            replace: false,
            into_shards: false,
        });
    }

    /// Reads the trailers of old orphans (listed, named by no index
    /// object, older than `cutoff`); returns the live chunks they hold,
    /// which an indexed pack must also hold for them to go.
    pub async fn read_orphans(
        &mut self,
        backend: &dyn Backend,
        codec: &Codec,
        cutoff: DateTime<Utc>,
        max_chunk: u32,
        marks: &Marks,
    ) -> Result<HashSet<ObjectId>> {
        let mut live = HashSet::new();
        for p in self.packs.iter_mut() {
            if p.named {
                continue;
            }
            if p.at >= cutoff {
                p.fate = Fate::Young;
                continue;
            }
            match read_trailer(backend, codec, &p.name, p.size, max_chunk).await {
                Ok(entries) => {
                    p.fate = Fate::Orphan;
                    for e in &entries {
                        if marks.has_chunk(&e.id) {
                            live.insert(e.id);
                        }
                        add(&mut p.dead_bytes, e.stored_len);
                    }
                    let ids = entries.into_iter().map(|e| e.id).collect();
                    self.orphans.insert(p.name, ids);
                }
                Err(e) if e.is_damage() => p.fate = Fate::Damaged,
                // An old orphan stored straight into an archive class (a
                // backup killed before its index object): what it holds
                // is unknown, so it stays; failing stopped every sweep.
                Err(e) if e.is_archived() => p.fate = Fate::Archived,
                Err(e) => return Err(e),
            }
        }
        Ok(live)
    }

    /// Decides every indexed pack's fate and which index objects are
    /// merged; orphans holding live chunks not in `orphan_live`'s
    /// complement are kept. [`Census::settle`] then finds the objects
    /// naming a pack that goes.
    pub fn decide(&mut self, ctx: &Decide, orphan_live: &HashSet<ObjectId>) {
        let by_class = self.rules_by_class(ctx);
        for p in self.packs.iter_mut() {
            if p.fate == Fate::Orphan {
                let chunks = self.orphans.get(&p.name);
                if chunks.is_some_and(|c| c.iter().any(|c| orphan_live.contains(c))) {
                    p.fate = Fate::OrphanLive;
                }
                continue;
            }
            if !p.named {
                continue;
            }
            p.fate = fate_of(p, ctx, &by_class);
        }
        self.cutoff = Some(ctx.cutoff);
        let cutoff = self.cutoff;
        for o in self.objects.iter_mut() {
            // A young object naming an unlisted pack may belong to a
            // backup that stored the pack after `packs/` was listed (and
            // the object before `index/` was): it is the only object that
            // places those chunks. An old one's packs were all stored
            // before the listing began: unlisted means gone.
            o.replace = o.names_gone && o.older_than(cutoff);
        }
        self.choose_merges(ctx.shard_entries);
    }

    /// A class the listing reports is where the pack is now (a lifecycle
    /// rule may have moved it); else the sweep's default: the rules per
    /// [`PackInfo::class`].
    fn rules_by_class(&self, ctx: &Decide) -> Vec<ClassRules> {
        std::iter::once(ctx.rules)
            .chain(
                self.classes
                    .iter()
                    .map(|c| class_rules(c, ctx.min_storage_days)),
            )
            .collect()
    }

    /// Whether the listed pack `name` is to be deleted (after a repack
    /// moved its live chunks), as decided so far.
    pub fn goes(&self, name: &ObjectId) -> bool {
        self.pack(name).is_some_and(|p| p.fate.doomed())
    }

    /// Marks replaced every index object that names a pack that goes
    /// (its table read again: one GET per object, when any pack goes),
    /// then which replaced objects go into shards.
    ///
    /// A young one too: left, it named the packs this sweep deletes until
    /// a sweep found it old, and a sweep's own objects are young at the
    /// next sweep, so back-to-back sweeps left many such entries (a backup
    /// relying on one read its segment again; `stats` counted them). Its
    /// entries of unlisted packs survive its rewrite
    /// ([`Census::survives_in`]): a running backup may have stored that
    /// pack after `packs/` was listed. It is rewritten alone: a shard
    /// object into its own shard, one of any ids with the others.
    pub async fn settle(
        &mut self,
        backend: &dyn Backend,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        if self.packs.iter().any(|p| p.named && p.fate.doomed()) {
            for k in 0..self.objects.len() {
                let o = &self.objects[k];
                if o.replace {
                    continue;
                }
                if cancelled() {
                    return Err(Error::Cancelled {
                        cleaned: "gc stopped during its census of packs".into(),
                    });
                }
                let table = read_table(backend, &self.objects[k].object).await?;
                self.objects[k].replace = table
                    .iter()
                    .any(|n| self.pack(n).is_some_and(|p| p.fate.doomed()));
            }
        }
        // At depth 0 everything is written as objects of any ids; deeper,
        // what is replaced goes to shards, except objects of any ids merged
        // among themselves.
        let (depth, distribute, cutoff) = (self.depth, self.distribute, self.cutoff);
        for o in self.objects.iter_mut() {
            // A young one is rewritten alone, where it was (see above).
            o.into_shards = o.replace
                && o.older_than(cutoff)
                && depth > 0
                && (distribute || !o.object.prefix.is_empty());
        }
        Ok(())
    }

    /// Whether the index object `o` is younger than the cutoff: rewritten
    /// alone, keeping its entries of unlisted packs.
    pub fn is_young(&self, o: &IndexUse) -> bool {
        !o.older_than(self.cutoff)
    }

    /// Whether an entry of pack `name` belongs in the rewrite of an index
    /// object (`young`: see [`Census::is_young`]).
    pub fn survives_in(&self, name: &ObjectId, young: bool) -> bool {
        match self.pack(name) {
            Some(p) => p.spared || !p.fate.doomed(),
            None => young,
        }
    }

    /// Whether a surviving pack's entries belong in the rewritten index
    /// (of an old object).
    pub fn survives(&self, name: &ObjectId) -> bool {
        self.survives_in(name, false)
    }
}

/// The fate of an indexed pack, not an orphan, by its counts.
fn fate_of(p: &PackInfo, ctx: &Decide, by_class: &[ClassRules]) -> Fate {
    if ctx.deps.contains(&p.name) {
        Fate::Dep
    } else if p.at >= ctx.cutoff {
        Fate::Young
    } else {
        let u = PackUse {
            name: p.name,
            age: ctx.now - p.at,
            live_bytes: u64::from(p.live_bytes),
            dead_bytes: u64::from(p.dead_bytes),
            live_chunks: u64::from(p.live_chunks),
        };
        let rules = by_class
            .get(usize::from(p.class))
            .copied()
            .unwrap_or(ctx.rules);
        Fate::Planned(plan(&[u], rules, ctx.max_waste_pct).fates[0].1)
    }
}

/// What [`Census::decide`] needs of the sweep.
#[derive(Debug)]
pub struct Decide<'a> {
    pub now: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub deps: &'a HashSet<ObjectId>,
    /// For packs the listing reports no class for.
    pub rules: ClassRules,
    /// The repository's minimum storage durations, for the classes the
    /// listing reports.
    pub min_storage_days: &'a BTreeMap<String, u32>,
    pub max_waste_pct: u8,
    pub shard_entries: u64,
}

// Which index objects are merged: a concept of its own.
#[path = "census_merges.rs"]
mod merges;

// Counting live and dead bytes per pack from the index entries.
#[path = "census_count.rs"]
mod count;
