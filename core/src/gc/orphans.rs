//! Old orphan packs (stored by a backup or sweep killed before its index
//! object) go when every live chunk they hold is in an indexed pack too.
//! That other copy must be one the repository can rely on: listed at its
//! place by its own pack's trailer (else `index rebuild` would not find
//! it) and opening (else the orphan's copy was the only good one). Until
//! stop 48 the index entry alone was taken for it, and the orphan went
//! with the only good or findable copy (found by review,
//! `orphan_cover_tests`).
//!
//! Cost: one trailer read per indexed pack holding such a chunk, and a
//! read of those chunks (coalesced runs): about the live bytes of the
//! orphans, which are rare. With a key that cannot read chunk data the
//! trailer's listing is all that is checked.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::placement::Placement;
use crate::placement::index::IndexEntry;

/// Of the chunks `covers` places (indexed places of live chunks orphans
/// hold), those no place of which is sound ([`Placement::sound_at`]: with
/// `open` false, a key that cannot read chunk data, listed is enough). A
/// place in an archive class, which gc may not read, is taken as sound,
/// as before: keeping the orphan for it would keep it for ever. `size`: a
/// listed pack's size. Stops between packs once `cancelled` says so.
pub async fn uncovered(
    placement: &Placement,
    covers: Vec<IndexEntry>,
    size: &(dyn Fn(&ObjectId) -> Option<u64> + Sync),
    open: bool,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<HashSet<ObjectId>> {
    let mut left: HashSet<ObjectId> = covers.iter().map(|c| c.entry.id).collect();
    let found = placement
        .sound_at(covers, size, open, cancelled)
        .await?
        .ok_or_else(|| Error::Cancelled {
            cleaned: "gc stopped while checking what old orphan packs hold".into(),
        })?;
    left.retain(|id| !found.sound.contains(id) && !found.archived.contains(id));
    Ok(left)
}
