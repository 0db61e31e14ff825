//! Counting each pack's live and dead bytes from the entries of every
//! index object, and counting copies live again ([`Census::count`],
//! [`Census::count_live_again`]).

use std::collections::HashSet;

use super::{CANCEL_EVERY, Census, Decide, Fate, PackInfo, add, fate_of};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::gc::copies::{Copies, CopyAt};
use crate::gc::marks::Marks;
use crate::gc::pack_plan::PackFate;
use crate::id::ObjectId;
use crate::placement::index::IndexEntry;
use crate::placement::merge::Merge;
use crate::placement::pack::PackEntry;
use crate::placement::sweep::IndexObject;

impl Census {
    /// Adds up every pack's live and dead bytes from the entries of every
    /// index object, and drops from `orphan_live` the chunks an indexed,
    /// listed pack holds (their places go into `orphan_covers`, to be
    /// found sound by `gc/orphans.rs`). The objects are read once, merged in id order
    /// (each checked: sorted, inside its shard), so that marks that went
    /// to disk are loaded one range at a time, each once. A pack is live
    /// if any entry naming it is (an object split in parts, or two
    /// objects naming one pack, count as one; the same place in two
    /// objects counts once), except that with `copies` a live chunk held
    /// by several packs is live in one of them only (`gc/copies.rs`).
    /// Stops between reads once `cancelled` says so
    /// ([`Error::Cancelled`]).
    pub async fn count(
        &mut self,
        backend: &dyn Backend,
        marks: &mut Marks,
        orphan_live: &mut HashSet<ObjectId>,
        mut copies: Option<&mut Copies>,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        let objects: Vec<IndexObject> = self.objects.iter().map(|o| o.object.clone()).collect();
        let mut merge = Merge::new(objects.iter().collect());
        let mut n = 0u64;
        // The listed packs holding the chunk met last (the merge gives a
        // chunk's entries one after another, each pack once), and
        // whether it is live.
        let mut held: Vec<(usize, PackEntry)> = Vec::new();
        let mut live = false;
        while let Some(e) = merge.next(backend).await? {
            n += 1;
            // The census writes nothing: stopping here needs no undo.
            if n.is_multiple_of(CANCEL_EVERY) && cancelled() {
                return Err(Error::Cancelled {
                    cleaned: "gc stopped during its census of packs".into(),
                });
            }
            let Some(i) = self.find(&e.pack) else {
                continue;
            };
            // An entry whose pack no index object's table names is not
            // counted: hostile, or damaged. Counted, it made an orphan
            // the keeper of a chunk's copies, then deleted it with the
            // only other copy dropped (found by review,
            // `copies_tests::an_orphan_named_by_a_hostile_entry_is_no_keeper`).
            if !self.packs[i].named {
                continue;
            }
            if held.first().is_some_and(|(_, h)| h.id != e.entry.id) {
                self.tally(&mut held, live, copies.as_deref_mut());
            }
            marks.load_for(&e.entry.id)?;
            live = marks.has_chunk(&e.entry.id);
            held.push((i, e.entry));
            // Every indexed place of a live chunk an old orphan holds,
            // to be found sound before the orphan goes.
            let met = self
                .orphan_covers
                .last()
                .is_some_and(|c| c.entry.id == e.entry.id);
            if met || (!orphan_live.is_empty() && orphan_live.remove(&e.entry.id)) {
                self.orphan_covers.push(IndexEntry {
                    pack: e.pack,
                    entry: e.entry,
                });
            }
        }
        self.tally(&mut held, live, copies);
        if cancelled() {
            return Err(Error::Cancelled {
                cleaned: "gc stopped during its census of packs".into(),
            });
        }
        Ok(())
    }

    /// Counts the copies of one chunk (`held`, emptied) in their packs: a
    /// live chunk in several packs is live in its keeper's only, when
    /// `copies` chooses one ([`Copies::choose`]); the others are waste.
    fn tally(
        &mut self,
        held: &mut Vec<(usize, PackEntry)>,
        live: bool,
        copies: Option<&mut Copies>,
    ) {
        let keeper = match copies {
            Some(c) if live && held.len() > 1 => {
                let of: Vec<CopyAt> = held
                    .iter()
                    .map(|&(i, entry)| {
                        let p = &self.packs[i];
                        CopyAt {
                            pack: p.name,
                            entry,
                            at: p.at,
                            readable: c.readable(p.class),
                        }
                    })
                    .collect();
                c.choose(&of)
            }
            _ => None,
        };
        for (k, (i, entry)) in held.drain(..).enumerate() {
            let p = &mut self.packs[i];
            if live && keeper.is_none_or(|kept| kept == k) {
                add(&mut p.live_chunks, 1);
                add(&mut p.live_bytes, entry.stored_len);
            } else {
                add(&mut p.dead_bytes, entry.stored_len);
            }
        }
    }

    /// Counts the copies (pack, stored length) [`Census::count`] took as
    /// waste live again (their keeper did not open:
    /// [`Copies::check_keepers`]), and decides their packs' fates again
    /// (with [`Census::decide`]'s `ctx`): more live, so never a harsher
    /// fate.
    pub fn count_live_again(&mut self, copies: &[(ObjectId, u32)], ctx: &Decide) {
        if copies.is_empty() {
            return;
        }
        let by_class = self.rules_by_class(ctx);
        for (pack, stored_len) in copies {
            if let Some(p) = self.count_copy_live(pack, *stored_len)
                && matches!(p.fate, Fate::Planned(_))
            {
                p.fate = fate_of(p, ctx, &by_class);
            }
        }
    }

    /// Keeps, of every chunk whose kept copy's pack goes, a copy in a
    /// pack that stays instead ([`Copies::prefer_staying`]), counting
    /// the change and deciding both packs' fates again (with
    /// [`Census::decide`]'s `ctx`): the one that goes has less live, so it
    /// is still rewritten or now deleted; the one that stays has more,
    /// so it stays.
    pub fn keep_copies_that_stay(&mut self, copies: &mut Copies, ctx: &Decide) {
        let moved = copies.prefer_staying(&|name| self.goes(name), &|name| {
            self.pack(name)
                .filter(|p| {
                    matches!(
                        p.fate,
                        Fate::Planned(PackFate::Keep | PackFate::KeepWaste(_))
                    )
                })
                .map(|p| (p.at, p.class))
        });
        let by_class = self.rules_by_class(ctx);
        for m in &moved {
            let (from, len) = m.left_out;
            if let Some(p) = self.pack_mut(&from) {
                p.live_bytes = p.live_bytes.saturating_sub(len);
                p.live_chunks = p.live_chunks.saturating_sub(1);
                add(&mut p.dead_bytes, len);
            }
            self.count_copy_live(&m.kept.0, m.kept.1);
        }
        for m in &moved {
            for name in [m.left_out.0, m.kept.0] {
                if let Some(p) = self.pack_mut(&name)
                    && matches!(p.fate, Fate::Planned(_))
                {
                    p.fate = fate_of(p, ctx, &by_class);
                }
            }
        }
    }

    /// Counts one copy [`Census::count`] took as waste live in its pack,
    /// its fate left as it is; returns the pack, if listed.
    pub fn count_copy_live(&mut self, pack: &ObjectId, stored_len: u32) -> Option<&mut PackInfo> {
        let p = self.pack_mut(pack)?;
        p.dead_bytes = p.dead_bytes.saturating_sub(stored_len);
        add(&mut p.live_chunks, 1);
        add(&mut p.live_bytes, stored_len);
        Some(p)
    }
}
