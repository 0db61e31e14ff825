//! Live chunks stored in more than one pack: one copy is kept, the others
//! count as waste (docs/design.md, "gc over packs", copies).
//!
//! Copies arise when backups store the same new data at once (clones of
//! one template backed up together, one update applied to many VMs): each
//! session finds nothing in the index and stores its own. Kept, they cost
//! as much as the data again, for as long as it lives.
//!
//! The census ([`super::census::Census::count`]) meets a chunk's entries
//! one after another (the merge is in id order) and picks its keeper: the
//! copy in the oldest listed pack an index object's table names, of a
//! class gc may read (not an archive class: restores alone read chunk
//! data there), the smaller name on a tie. The other copies count as dead
//! bytes of their packs, so a pack of nothing but copies is deleted and
//! one with many is rewritten without them. Once fates are decided so,
//! a keeper whose pack goes (rewritten) while another readable copy's
//! pack stays gives way to that copy ([`Copies::prefer_staying`]): kept
//! in the pack that goes, it was moved into a new pack while the copy
//! that stays was waste, which the next gc left out in turn (found at
//! stop 54). Then the keeper of every chunk with a copy in a pack that
//! goes is read and opened ([`Copies::check_keepers`]; a copy in a pack
//! that stays costs no read), and its pack's trailer must list it: a
//! chunk whose keeper does not open, or is not listed, keeps every copy,
//! counted live again and its packs' fates decided again, so a damaged copy is
//! never the only one left; a rewrite then opens each copy of it before
//! moving one and leaves out, with a damage record, one that does not
//! open ([`Copies::damaged`]). Should the keeper's pack's rewrite not
//! take it (gone, damaged, archived), the other copies stay too
//! (`sweep/keepers.rs`). Otherwise the keeper is no weaker than a chunk
//! stored once.
//!
//! The keeper survives the sweep: its chunk is live in its pack, so that
//! pack is kept, or rewritten with the chunk in it (a repack leaves out
//! only the copies recorded here, [`Copies::extra_in`]). A pack a live
//! lease names stays whatever its counts, as before.
//!
//! Memory: [`MAX_CHUNKS`] chunks with copies per sweep, about 300 bytes
//! each with two copies; further ones keep their copies this time (and
//! are taken by a later sweep). Not done with a key that cannot read
//! chunk data (a backup-only key), nor under object lock (a pack kept
//! whole until its retention ends gains nothing).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::placement::Placement;
use crate::placement::index::IndexEntry;
use crate::placement::pack::PackEntry;

/// Chunks with copies taken per sweep.
pub const MAX_CHUNKS: usize = 1 << 16;

/// One copy of a live chunk the census met.
#[derive(Clone, Copy, Debug)]
pub struct CopyAt {
    pub pack: ObjectId,
    pub entry: PackEntry,
    /// The listing's time of its pack.
    pub at: DateTime<Utc>,
    /// Its pack's class is one gc may read ([`Copies::readable`]).
    pub readable: bool,
}

/// Of a pack that stays: its listing time and census class.
pub type Staying = (DateTime<Utc>, u8);

/// A chunk's keeper moved by [`Copies::prefer_staying`]: (pack, stored
/// length) of the copy now left out and of the one now kept.
#[derive(Clone, Copy, Debug)]
pub struct KeeperMoved {
    pub left_out: (ObjectId, u32),
    pub kept: (ObjectId, u32),
}

/// The copies a sweep leaves out.
#[derive(Debug, Default)]
pub struct Copies {
    /// Per storage class of the census ([`super::census::PackInfo::class`]:
    /// 0 for none), whether gc may read chunk data there.
    readable: Vec<bool>,
    /// Per chunk, the place of the copy kept.
    keepers: HashMap<ObjectId, IndexEntry>,
    /// The copies left out, by pack: chunk and the copy's place there.
    extra: HashMap<ObjectId, HashMap<ObjectId, PackEntry>>,
    /// Chunks with copies beyond [`MAX_CHUNKS`]: all kept this time.
    pub over_cap: u64,
    /// Chunks whose keeper did not open: every copy kept, and a rewrite
    /// opens a copy before it moves one (`Repacker::take`).
    pub damaged: HashSet<ObjectId>,
}

impl Copies {
    /// `readable`: per class of the census, as in [`Copies::readable`].
    pub fn new(readable: Vec<bool>) -> Self {
        Copies {
            readable,
            ..Default::default()
        }
    }

    /// Whether gc may read chunk data in a pack of census class `class`.
    pub fn readable(&self, class: u8) -> bool {
        self.readable
            .get(usize::from(class))
            .copied()
            .unwrap_or(false)
    }

    /// Given every copy of one live chunk (at least two, in distinct
    /// packs), returns the index of the keeper in `copies`, recording
    /// the others as extra; `None` (keep them all) if no copy is
    /// readable or the cap is reached.
    pub fn choose(&mut self, copies: &[CopyAt]) -> Option<usize> {
        let (k, keeper) = copies
            .iter()
            .enumerate()
            .filter(|(_, c)| c.readable)
            .min_by_key(|(_, c)| (c.at, c.pack))?;
        if self.keepers.len() >= MAX_CHUNKS {
            self.over_cap += 1;
            return None;
        }
        let id = keeper.entry.id;
        self.keepers.insert(
            id,
            IndexEntry {
                pack: keeper.pack,
                entry: keeper.entry,
            },
        );
        for (i, c) in copies.iter().enumerate() {
            if i != k {
                let of_pack = self.extra.entry(c.pack).or_default();
                of_pack.insert(id, c.entry);
            }
        }
        Some(k)
    }

    /// Makes a copy in a pack that stays the keeper of every chunk whose
    /// keeper's pack goes (`goes`: to be rewritten, as a pack with a live
    /// chunk is not deleted), the oldest such copy of a class gc may
    /// read (`stays`: a pack's listing time and census class, if it
    /// stays). Returns each change: the copy now left out (pack, stored
    /// length) and the one now kept. Called once fates are decided: a
    /// pack that goes loses a live chunk (so it still goes, or goes
    /// whole) and one that stays gains one (so it stays), and nothing is
    /// decided from these counts but fates.
    pub fn prefer_staying(
        &mut self,
        goes: &dyn Fn(&ObjectId) -> bool,
        stays: &dyn Fn(&ObjectId) -> Option<Staying>,
    ) -> Vec<KeeperMoved> {
        let mut best: HashMap<ObjectId, (DateTime<Utc>, IndexEntry)> = HashMap::new();
        for (pack, of_pack) in &self.extra {
            let Some((at, class)) = stays(pack) else {
                continue;
            };
            if !self.readable(class) {
                continue;
            }
            for (id, entry) in of_pack {
                if !self.keepers.get(id).is_some_and(|k| goes(&k.pack)) {
                    continue;
                }
                let this = (at, *pack);
                if best.get(id).is_none_or(|(t, b)| this < (*t, b.pack)) {
                    let place = IndexEntry {
                        pack: *pack,
                        entry: *entry,
                    };
                    best.insert(*id, (at, place));
                }
            }
        }
        let mut moved = Vec::with_capacity(best.len());
        for (id, (_, to)) in best {
            let Some(from) = self.keepers.insert(id, to) else {
                continue;
            };
            if let Some(of_pack) = self.extra.get_mut(&to.pack) {
                of_pack.remove(&id);
                if of_pack.is_empty() {
                    self.extra.remove(&to.pack);
                }
            }
            self.extra
                .entry(from.pack)
                .or_default()
                .insert(id, from.entry);
            moved.push(KeeperMoved {
                left_out: (from.pack, from.entry.stored_len),
                kept: (to.pack, to.entry.stored_len),
            });
        }
        moved
    }

    /// Reads the keeper's copy of every chunk with a copy in a pack that
    /// goes (`doomed`: deleted or rewritten; a copy in a pack kept stays
    /// whatever its keeper, so that keeper is not read), in batches of one
    /// pack at a time ([`Placement::sound_at`]), stopping between two once
    /// `cancelled` says so. A keeper must also be listed at its place by
    /// its pack's own trailer (`size`: a pack's listed size), read once
    /// per pack: else the copy left would be one `index rebuild` cannot
    /// find, held by index entries alone (a pack that stays is not
    /// rewritten, so nothing else reads its trailer; a suspicion of
    /// review at stop 47, shown by `copies_tests`). Forgets the chunks
    /// whose keeper does not open or is not listed and returns their
    /// other copies (pack, stored length), to be counted live again.
    pub async fn check_keepers(
        &mut self,
        placement: &Placement,
        doomed: &(dyn Fn(&ObjectId) -> bool + Sync),
        size: &(dyn Fn(&ObjectId) -> Option<u64> + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<(ObjectId, u32)>> {
        let dropped: HashSet<ObjectId> = self
            .extra
            .iter()
            .filter(|(pack, _)| doomed(pack))
            .flat_map(|(_, of_pack)| of_pack.keys().copied())
            .collect();
        let places: Vec<IndexEntry> = dropped.iter().map(|id| self.keepers[id]).collect();
        // A keeper in an archive tier does not count as opening: its
        // chunk keeps every copy (failing stopped every later sweep,
        // review).
        let opened = placement
            .sound_at(places, size, true, cancelled)
            .await?
            .ok_or_else(stopped)?
            .sound;
        let bad: HashSet<ObjectId> = dropped.difference(&opened).copied().collect();
        self.damaged.extend(bad.iter().copied());
        Ok(self.keep_all_copies(&bad))
    }

    /// Forgets the copies left out of chunks whose keeper is in `pack`,
    /// as its rewrite did not take it (gone, damaged, archived): the copy
    /// kept may then be lost or readable by restores alone, so the other
    /// copies stay. Returns them (pack, stored length). Their chunks count
    /// as [`Copies::damaged`]: no copy of theirs is known to open, so a
    /// rewrite opens one before it moves it (copied unopened, a damaged
    /// copy stood for the chunk in the new pack and the good one was
    /// skipped: a chunk lost, found by review).
    pub fn keep_others_of_keepers_in(&mut self, pack: &ObjectId) -> Vec<(ObjectId, u32)> {
        let ids: HashSet<ObjectId> = self
            .keepers
            .iter()
            .filter(|(_, at)| at.pack == *pack)
            .map(|(id, _)| *id)
            .collect();
        self.damaged.extend(ids.iter().copied());
        self.keep_all_copies(&ids)
    }

    /// Forgets the keepers of `ids` and the copies left out of them;
    /// returns those copies (pack, stored length).
    fn keep_all_copies(&mut self, ids: &HashSet<ObjectId>) -> Vec<(ObjectId, u32)> {
        if ids.is_empty() {
            return Vec::new();
        }
        self.keepers.retain(|id, _| !ids.contains(id));
        let mut back = Vec::new();
        for (pack, of_pack) in self.extra.iter_mut() {
            of_pack.retain(|id, entry| {
                let keep = !ids.contains(id);
                if !keep {
                    back.push((*pack, entry.stored_len));
                }
                keep
            });
        }
        self.extra.retain(|_, of_pack| !of_pack.is_empty());
        back
    }

    /// Copies left out of `pack`, for its rewrite.
    pub fn extra_in(&self, pack: &ObjectId) -> HashSet<ObjectId> {
        self.extra
            .get(pack)
            .map(|of_pack| of_pack.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Copies left out of `pack`, and their stored bytes: what its
    /// deletion drops.
    pub fn left_out_of(&self, pack: &ObjectId) -> (u64, u64) {
        let copies = self.extra.get(pack).into_iter().flat_map(|of| of.values());
        copies.fold((0, 0), |(n, b), e| (n + 1, b + u64::from(e.stored_len)))
    }
}

fn stopped() -> Error {
    Error::Cancelled {
        cleaned: "gc stopped while reading the copies it keeps".into(),
    }
}
