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
use crate::gc::pack_plan::PackFate;
use crate::id::ObjectId;

impl Sweep {
    /// The rewrite of `pack` did not take it: the copies left out of
    /// chunks kept there stay. A pack still to be rewritten (the kept
    /// copy is the oldest, so its pack comes first) moves them; one to be
    /// deleted whole, or rewritten already without them (`taken`), is
    /// kept whole.
    pub(super) fn keep_other_copies(
        &mut self,
        census: &mut Census,
        pack: &ObjectId,
        taken: &HashSet<ObjectId>,
    ) {
        for (other, stored_len) in census.copies.keep_others_of_keepers_in(pack) {
            let Some(p) = census.pack_mut(&other) else {
                continue;
            };
            self.report.copies_kept_bad_keeper += 1;
            if !p.fate.doomed() {
                continue;
            }
            // Counted as left out when the fates were decided.
            let r = &mut self.report;
            r.copies_left_out = r.copies_left_out.saturating_sub(1);
            r.copy_bytes_left_out = r.copy_bytes_left_out.saturating_sub(u64::from(stored_len));
            let to_rewrite = p.fate == Fate::Planned(PackFate::Repack) && !taken.contains(&other);
            if !to_rewrite {
                p.fate = Fate::Keep;
            }
        }
    }
}
