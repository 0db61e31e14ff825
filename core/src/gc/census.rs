//! What a sweep knows of every pack once marking is done: which index
//! objects name it, its live and dead bytes, and its fate
//! (`pack_plan`), with memory per pack, not per chunk.
//!
//! Memory: about 100 bytes per listed pack (16 MiB of chunks each), the
//! heads of the index objects (32 bytes per pack and per 1,024 entries),
//! one read of [`BLOCKS_PER_READ`] blocks of entries at a time, and the
//! chunk ids of old orphan packs (rare: packs of crashed backups). The
//! entries themselves are never all in memory.
//!
//! [`BLOCKS_PER_READ`]: crate::placement::sweep::BLOCKS_PER_READ

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::marks::Marks;
use super::pack_plan::{ClassRules, PackFate, PackUse, plan};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::placement::pack_read::read_trailer;
use crate::placement::shard;
use crate::placement::sweep::{EntryReader, IndexObject};

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
    /// Named by an index object, not in the listing: gone.
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

#[derive(Clone, Debug)]
pub struct PackInfo {
    pub name: ObjectId,
    /// Size and the store's time, if listed.
    pub listed: Option<(u64, DateTime<Utc>)>,
    pub named: bool,
    pub live_chunks: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub fate: Fate,
    /// An old orphan's chunk ids (from its trailer), for marks that
    /// arrive later.
    pub orphan_chunks: Vec<ObjectId>,
    /// Spared at a batch's look (a lease or a late mark now needs it).
    pub spared: bool,
}

#[derive(Clone, Debug)]
pub struct IndexUse {
    pub object: IndexObject,
    /// The packs it names (positions in [`Census::packs`]).
    pub packs: Vec<u32>,
    /// Its surviving entries are rewritten and it is deleted.
    pub replace: bool,
    /// ... rewritten into shard objects of [`Census::depth`] (else into
    /// objects of any ids).
    pub into_shards: bool,
}

/// Index objects of any ids with fewer entries are merged when there are
/// several.
pub const SMALL_INDEX: u64 = 1 << 16;

/// A shard prefix with this many objects is merged into one.
pub const SHARD_OBJECTS: usize = 8;

#[derive(Debug, Default)]
pub struct Census {
    pub packs: Vec<PackInfo>,
    by_name: HashMap<ObjectId, u32>,
    pub objects: Vec<IndexUse>,
    /// Keys of the index objects the rewrite wrote. One may be an old
    /// object written again byte for byte (an object is named by its
    /// bytes): it then stays.
    pub written: HashSet<String>,
    /// The shard depth the index's size calls for
    /// ([`shard::depth_for`]).
    pub depth: usize,
}

impl Census {
    pub fn pack(&self, name: &ObjectId) -> Option<&PackInfo> {
        self.by_name.get(name).map(|&i| &self.packs[i as usize])
    }

    pub fn pack_mut(&mut self, name: &ObjectId) -> Option<&mut PackInfo> {
        self.by_name.get(name).map(|&i| &mut self.packs[i as usize])
    }

    fn register(&mut self, name: ObjectId) -> u32 {
        if let Some(&i) = self.by_name.get(&name) {
            return i;
        }
        let i = self.packs.len() as u32;
        self.packs.push(PackInfo {
            name,
            listed: None,
            named: false,
            live_chunks: 0,
            live_bytes: 0,
            dead_bytes: 0,
            fate: Fate::Keep,
            orphan_chunks: Vec::new(),
            spared: false,
        });
        self.by_name.insert(name, i);
        i
    }

    /// A listed pack.
    pub fn listed(&mut self, name: ObjectId, size: u64, at: DateTime<Utc>) {
        let i = self.register(name) as usize;
        self.packs[i].listed = Some((size, at));
    }

    /// An index object whose head was read, and the packs its table
    /// names.
    pub fn index(&mut self, object: IndexObject, table: &[ObjectId]) {
        let packs = table
            .iter()
            .map(|p| {
                let i = self.register(*p);
                self.packs[i as usize].named = true;
                i
            })
            .collect();
        self.objects.push(IndexUse {
            object,
            packs,
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
            let Some((size, at)) = p.listed else { continue };
            if p.named {
                continue;
            }
            if at >= cutoff {
                p.fate = Fate::Young;
                continue;
            }
            match read_trailer(backend, codec, &p.name, size, max_chunk).await {
                Ok(entries) => {
                    p.fate = Fate::Orphan;
                    for e in &entries {
                        if marks.has_chunk(&e.id) {
                            live.insert(e.id);
                        }
                        p.dead_bytes += u64::from(e.stored_len);
                    }
                    p.orphan_chunks = entries.into_iter().map(|e| e.id).collect();
                }
                Err(e) if e.is_damage() => p.fate = Fate::Damaged,
                Err(e) => return Err(e),
            }
        }
        Ok(live)
    }

    /// Adds up every pack's live and dead bytes from the entries of every
    /// index object, and drops from `orphan_live` the chunks an indexed,
    /// listed pack holds. A pack is live if any entry naming it is (an
    /// object split in parts, or two objects naming one pack, count as
    /// one; bytes of a pack named twice count twice, which only moves its
    /// waste, never its liveness). Stops between reads once `cancelled`
    /// says so ([`Error::Cancelled`]).
    pub async fn count(
        &mut self,
        backend: &dyn Backend,
        marks: &Marks,
        orphan_live: &mut HashSet<ObjectId>,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        for k in 0..self.objects.len() {
            let object = self.objects[k].object.clone();
            let mut reader = EntryReader::new(&object);
            while let Some(run) = reader.next(backend).await? {
                // The census writes nothing: stopping here needs no undo.
                if cancelled() {
                    return Err(Error::Cancelled {
                        cleaned: "gc stopped during its census of packs".into(),
                    });
                }
                for e in run {
                    let Some(&i) = self.by_name.get(&e.pack) else {
                        continue;
                    };
                    let p = &mut self.packs[i as usize];
                    if marks.has_chunk(&e.entry.id) {
                        p.live_chunks += 1;
                        p.live_bytes += u64::from(e.entry.stored_len);
                    } else {
                        p.dead_bytes += u64::from(e.entry.stored_len);
                    }
                    if p.listed.is_some() && !orphan_live.is_empty() {
                        orphan_live.remove(&e.entry.id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Decides every indexed pack's fate and which index objects are
    /// replaced; orphans holding live chunks not in `orphan_live`'s
    /// complement are kept.
    pub fn decide(&mut self, ctx: &Decide, orphan_live: &HashSet<ObjectId>) {
        for p in self.packs.iter_mut() {
            if p.fate == Fate::Orphan {
                if p.orphan_chunks.iter().any(|c| orphan_live.contains(c)) {
                    p.fate = Fate::OrphanLive;
                }
                continue;
            }
            if !p.named {
                continue;
            }
            let Some((_, at)) = p.listed else {
                p.fate = Fate::Gone;
                continue;
            };
            p.fate = if ctx.deps.contains(&p.name) {
                Fate::Dep
            } else if at >= ctx.cutoff {
                Fate::Young
            } else {
                let u = PackUse {
                    name: p.name,
                    age: ctx.now - at,
                    live_bytes: p.live_bytes,
                    dead_bytes: p.dead_bytes,
                    live_chunks: p.live_chunks,
                };
                Fate::Planned(plan(&[u], ctx.rules, ctx.max_waste_pct).fates[0].1)
            };
        }
        for o in self.objects.iter_mut() {
            o.replace = o.packs.iter().any(|&i| {
                let f = self.packs[i as usize].fate;
                f.doomed() || f == Fate::Gone
            });
        }
        self.choose_merges(ctx.cutoff, ctx.shard_entries);
    }

    /// Which index objects are merged (docs/design.md, "The index in
    /// shards"), besides those naming a pack that goes. Only objects older
    /// than the cutoff: a backup may still be writing younger ones' twins.
    ///
    /// - Objects of any ids (one per backup) are all consulted by every
    ///   lookup. Once there are enough of their entries to give each shard
    ///   a block (1,024 entries at the default size) on average, they are
    ///   distributed into
    ///   shard objects; before that, the small ones are merged into one
    ///   when there are several.
    /// - A shard prefix shallower than the depth the index's size calls
    ///   for is rewritten at that depth (the index grew 16-fold); one with
    ///   [`SHARD_OBJECTS`] objects is merged into one.
    fn choose_merges(&mut self, cutoff: DateTime<Utc>, shard_entries: u64) {
        let total: u64 = self.objects.iter().map(|o| o.object.head.entries()).sum();
        self.depth = shard::depth_for(total, shard_entries);
        let depth = self.depth;
        let old = |o: &IndexUse| o.object.meta.last_modified < cutoff;
        let any: Vec<usize> = (0..self.objects.len())
            .filter(|&k| self.objects[k].object.prefix.is_empty() && old(&self.objects[k]))
            .collect();
        let any_entries: u64 = any
            .iter()
            .map(|&k| self.objects[k].object.head.entries())
            .sum();
        // A 512th of a shard per shard: 1,024 entries (a block) each at
        // the default size.
        let distribute =
            depth > 0 && any_entries > 0 && any_entries >= (shard_entries >> 9) << (4 * depth);
        if distribute {
            any.iter().for_each(|&k| self.objects[k].replace = true);
        } else {
            let small: Vec<usize> = any
                .into_iter()
                .filter(|&k| self.objects[k].object.head.entries() < SMALL_INDEX)
                .collect();
            if small.len() >= 2 {
                small
                    .into_iter()
                    .for_each(|k| self.objects[k].replace = true);
            }
        }
        let mut per_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
        for (k, o) in self.objects.iter().enumerate() {
            if !o.object.prefix.is_empty() && old(o) {
                per_prefix.entry(&o.object.prefix).or_default().push(k);
            }
        }
        // Distributing adds an object to a prefix: merge it first if that
        // would make SHARD_OBJECTS.
        let most = SHARD_OBJECTS - usize::from(distribute);
        let mut merge = Vec::new();
        for (prefix, ks) in per_prefix {
            if prefix.len() < depth || ks.len() >= most {
                merge.extend(ks);
            }
        }
        merge
            .into_iter()
            .for_each(|k| self.objects[k].replace = true);
        // At depth 0 everything is written as objects of any ids; deeper,
        // what is replaced goes to shards, except objects of any ids merged
        // among themselves.
        for o in self.objects.iter_mut() {
            o.into_shards = o.replace && depth > 0 && (distribute || !o.object.prefix.is_empty());
        }
    }

    /// Whether a surviving pack's entries belong in the rewritten index.
    pub fn survives(&self, name: &ObjectId) -> bool {
        self.pack(name)
            .is_some_and(|p| p.listed.is_some() && (p.spared || !p.fate.doomed()))
    }
}

/// What [`Census::decide`] needs of the sweep.
#[derive(Debug)]
pub struct Decide<'a> {
    pub now: DateTime<Utc>,
    pub cutoff: DateTime<Utc>,
    pub deps: &'a HashSet<ObjectId>,
    pub rules: ClassRules,
    pub max_waste_pct: u8,
    pub shard_entries: u64,
}
