//! Packs whose trailer cannot be read (`verify`'s index check names
//! them): `verify` reported them as damage for ever, gc kept them, and
//! `index rebuild` could not read them, so their chunks lived only as
//! long as the index entries naming them. Repair stores those chunks again
//! ([`crate::placement::Placement::salvage`]) and removes each pack whose
//! indexed chunks were all read, in its targeted sweep (the pack checked
//! once more just before it goes, as the nodes are).

use std::collections::BTreeMap;

use crate::crypto::Access;
use crate::damage::Health;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;
use crate::repo::Repository;

use super::RepairReport;

/// The packs repair removes: each with the new packs holding its chunks,
/// which must all be there when it goes.
#[derive(Debug, Default)]
pub(super) struct Salvaged {
    /// Per key of a pack to remove, the new packs of its salvage.
    pub new_packs: BTreeMap<String, Vec<ObjectId>>,
    /// Chunks that did not open (lost with their pack unless an image
    /// gives them again).
    pub lost: Vec<ObjectId>,
}

/// Stores again the chunks of `packs` (not in a dry run) and returns the
/// packs to remove. `found`: all such packs (`packs` may hold the first
/// of them only). Counts go into `report`; what cannot be done is a
/// warning, and those packs stay.
pub(super) async fn salvage(
    repo: &Repository,
    packs: &[ObjectId],
    found: u64,
    dry_run: bool,
    progress: &Progress,
    report: &mut RepairReport,
) -> Result<Salvaged> {
    report.packs_unreadable = found;
    report.packs_unreadable_left = found;
    let mut out = Salvaged::default();
    if packs.is_empty() || dry_run {
        return Ok(out);
    }
    let why_not = if repo.codec().access() != Access::Full {
        Some("their chunks must be read, which this backup-only key cannot")
    } else if repo.config().object_lock.is_some() {
        Some("under object lock a pack stays until its retention ends")
    } else {
        None
    };
    if let Some(why) = why_not {
        report.warnings.push(format!(
            "{} pack(s) whose trailer cannot be read were left as they are: {why}",
            packs.len()
        ));
        return Ok(out);
    }
    let level = repo.config().zstd_level;
    let mut kept = 0;
    // A group's entries stay within the salvage's bound; each group costs
    // one walk of the index.
    for group in packs.chunks(PACKS_PER_WALK) {
        let got = match repo.chunks().salvage(group, level, progress).await {
            Ok(got) => got,
            // Those packs stay; the rest of the repair goes on.
            Err(e) if e.is_damage() => {
                report.warnings.push(format!(
                    "{} pack(s) whose trailer cannot be read were kept: {e}",
                    group.len()
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        report.chunks_salvaged += got.stored;
        report.chunks_not_salvaged += got.damaged.len() as u64;
        report.packs_healed += got.healed.len() as u64;
        kept += group.len() - got.healed.len() - got.whole.len();
        for pack in &got.whole {
            out.new_packs
                .insert(keys::pack(pack), got.new_packs.clone());
        }
        out.lost.extend(got.damaged.iter().map(|(id, _)| *id));
    }
    if kept > 0 {
        report.warnings.push(format!(
            "{kept} pack(s) whose trailer cannot be read were kept: an index object could not \
             be read to its end, or the index names too many chunks there, so chunks only \
             there may be unknown (run `xfull verify`, then repair again)"
        ));
    }
    Ok(out)
}

/// Packs salvaged per walk of the index: at a few thousand chunks a
/// pack, well within [`crate::placement::salvage::MAX_ENTRIES`].
const PACKS_PER_WALK: usize = 64;

/// A fresh look at a pack named for removal, in repair's sweep (no gc
/// runs beside it): damaged while its trailer still cannot be read and
/// every new pack holding its chunks is there; else it stays (a gc
/// before the sweep began may have taken a new pack for an orphan).
pub(super) async fn health(
    repo: &Repository,
    name: &ObjectId,
    new_packs: &[ObjectId],
) -> Result<Health> {
    let health = repo.chunks().trailer_health(name).await?;
    if !matches!(health, Health::Damaged(_)) {
        return Ok(health);
    }
    for p in new_packs {
        if !repo.backend().exists(&keys::pack(p)).await? {
            return Ok(Health::Sound);
        }
    }
    Ok(health)
}
