//! Packs whose trailer cannot be read (`verify`'s index check names
//! them): `verify` reported them as damage for ever, gc kept them, and
//! `index rebuild` could not read them, so their chunks lived only as
//! long as the index entries naming them. Repair stores those chunks again
//! ([`crate::placement::Placement::salvage`]) and removes each pack whose
//! indexed chunks were all read, in its targeted sweep (the pack checked
//! once more just before it goes, as the nodes are).

use crate::crypto::Access;
use crate::damage::Health;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;
use crate::repo::Repository;

use super::RepairReport;

/// Stores again the chunks of `packs` (not in a dry run) and returns the
/// keys of the packs to remove, and the chunks that did not open (lost
/// with their pack unless an image gives them again). Counts go into
/// `report`; what cannot be done is a warning, and those packs stay.
pub(super) async fn salvage(
    repo: &Repository,
    packs: &[ObjectId],
    dry_run: bool,
    progress: &Progress,
    report: &mut RepairReport,
) -> Result<(Vec<String>, Vec<ObjectId>)> {
    report.packs_unreadable = packs.len() as u64;
    report.packs_unreadable_left = packs.len() as u64;
    if packs.is_empty() || dry_run {
        return Ok((Vec::new(), Vec::new()));
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
        return Ok((Vec::new(), Vec::new()));
    }
    let level = repo.config().zstd_level;
    let (mut whole, mut damaged) = (Vec::new(), Vec::new());
    // A group's entries stay within the salvage's bound; each group costs
    // one walk of the index.
    for group in packs.chunks(PACKS_PER_WALK) {
        let out = repo.chunks().salvage(group, level, progress).await?;
        report.chunks_salvaged += out.stored;
        report.chunks_not_salvaged += out.damaged.len() as u64;
        report.packs_healed += out.healed.len() as u64;
        whole.extend(out.whole.iter().map(keys::pack));
        damaged.extend(out.damaged.iter().map(|(id, _)| *id));
    }
    report.packs_unreadable_left -= report.packs_healed;
    let kept = packs.len() as u64 - report.packs_healed - whole.len() as u64;
    if kept > 0 {
        report.warnings.push(format!(
            "{kept} pack(s) whose trailer cannot be read were kept: an index object could not \
             be read to its end, or the index names too many chunks there, so chunks only \
             there may be unknown (run `xfull verify`, then repair again)"
        ));
    }
    Ok((whole, damaged))
}

/// Packs salvaged per walk of the index: at a few thousand chunks a
/// pack, well within [`crate::placement::salvage::MAX_ENTRIES`].
const PACKS_PER_WALK: usize = 64;

/// A fresh look at a pack named for removal: damaged while its trailer
/// still cannot be read.
pub(super) async fn health(repo: &Repository, name: &ObjectId) -> Result<Health> {
    repo.chunks().trailer_health(name).await
}
