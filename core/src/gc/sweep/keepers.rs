//! A rewrite that did not take the pack of kept copies (`gc/copies.rs`).
//!
//! Fates were decided with the other copies of a live chunk as waste, on
//! the word of a keeper read before any rewrite. Its pack's own rewrite
//! may then find it gone (something outside gc deleted it), its trailer
//! damaged (the pack stays and the copy still reads through the index,
//! but `index rebuild` would not find it), or archived (restores alone
//! read it). The other copies then stay: dropped with their packs, the
//! chunk would be lost, or readable less well than stored once.

use std::collections::HashSet;

use super::Sweep;
use crate::gc::census::{Census, Fate};
use crate::gc::pack_plan::{PackFate, WasteReason};
use crate::id::ObjectId;

impl Sweep {
    /// The rewrite of `pack` did not take it: the copies left out of
    /// chunks kept there stay, counted live in their packs. A pack still
    /// to be rewritten (a kept copy in a pack rewritten is the census's
    /// first choice, the oldest readable copy: `Copies::prefer_staying`
    /// moves a kept copy only out of a pack that goes, into one that
    /// stays; so its pack comes first) moves them, opening each first; one to be deleted whole, or
    /// rewritten already without them (`taken`), is kept whole, its waste
    /// reported. No fate is decided again: a pack passed by the loop must
    /// not become one to rewrite.
    pub(super) fn keep_other_copies(
        &mut self,
        census: &mut Census,
        pack: &ObjectId,
        taken: &HashSet<ObjectId>,
    ) {
        for (other, stored_len) in census.copies.keep_others_of_keepers_in(pack) {
            let Some(p) = census.count_copy_live(&other, stored_len) else {
                continue;
            };
            let r = &mut self.report;
            r.copies_kept_bad_keeper += 1;
            match p.fate {
                // Its dead bytes were reported as waste with this copy.
                Fate::Planned(PackFate::KeepWaste(_)) => {
                    r.waste_bytes_left = r.waste_bytes_left.saturating_sub(u64::from(stored_len));
                }
                fate if fate.doomed() => {
                    let to_rewrite =
                        fate == Fate::Planned(PackFate::Repack) && !taken.contains(&other);
                    if !to_rewrite {
                        p.fate = Fate::Planned(PackFate::KeepWaste(WasteReason::KeeperNotMoved));
                        r.waste_bytes_left += u64::from(p.dead_bytes);
                    }
                }
                _ => {}
            }
        }
    }
}
