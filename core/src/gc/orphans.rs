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

/// Places opened at once.
const BATCH: usize = 1024;

/// Of the chunks `covers` places (indexed places of live chunks orphans
/// hold), those no place of which is listed by its pack's trailer and
/// opens (with `open` false, a key that cannot read chunk data: listed
/// is enough). A place in an archive class, which gc may not read, is
/// taken as sound, as before: keeping the orphan for it would keep it for
/// ever. `size`: a listed pack's size. Stops between packs once
/// `cancelled` says so.
pub async fn uncovered(
    placement: &Placement,
    mut covers: Vec<IndexEntry>,
    size: &(dyn Fn(&ObjectId) -> Option<u64> + Sync),
    open: bool,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<HashSet<ObjectId>> {
    let mut left: HashSet<ObjectId> = covers.iter().map(|c| c.entry.id).collect();
    covers.sort_unstable_by_key(|c| (c.pack, c.entry.offset));
    for of_pack in covers.chunk_by(|a, b| a.pack == b.pack) {
        if cancelled() {
            return Err(Error::Cancelled {
                cleaned: "gc stopped while checking what old orphan packs hold".into(),
            });
        }
        let Some(size) = size(&of_pack[0].pack) else {
            continue;
        };
        let listed = match placement.listed_at(&of_pack[0].pack, size, of_pack).await {
            Ok(listed) => listed,
            Err(e) if e.is_archived() => of_pack.to_vec(),
            Err(e) => return Err(e),
        };
        if !open {
            left.retain(|id| !listed.iter().any(|p| p.entry.id == *id));
            continue;
        }
        for batch in listed.chunks(BATCH) {
            let opened: HashSet<ObjectId> = match placement.opens_at(batch.to_vec()).await {
                Ok(opened) => opened,
                Err(e) if e.is_archived() => batch.iter().map(|p| p.entry.id).collect(),
                Err(e) => return Err(e),
            };
            left.retain(|id| !opened.contains(id));
        }
    }
    Ok(left)
}
