//! Garbage collection: a sweep deletes the chunks and nodes no point
//! references, while backups keep running (docs/design.md, "Concurrency").
//! [`sweep::Sweep`] is the protocol as separate steps, so that tests can
//! interleave them with a backup session's; [`run`] runs them in order.

pub mod census;
pub mod copies;
pub mod markers;
pub mod marks;
mod orphans;
pub mod pack_plan;
mod protect;
pub(crate) mod spill;
pub mod sweep;
mod unlisted;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;
pub use sweep::{PackOptions, Sweep};

/// What a sweep did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub seq: u64,
    pub dry_run: bool,
    pub points: u64,
    pub pinned_points: u64,
    /// Live leases at the first look (running backups).
    pub live_leases: u64,
    pub dead_leases_removed: u64,
    /// Leases of finished backups that no running sweep needs any more.
    pub ended_leases_removed: u64,
    /// Objects under `leases/` not named like a lease (left alone).
    pub stray_lease_objects: u64,
    /// Leases dated further ahead than the clock margin (treated as dead).
    pub future_leases: u64,
    /// Looks at the leases (one at the start and one per delete batch).
    pub lease_looks: u64,
    /// Delete batches.
    pub batches: u64,
    /// Candidates spared because a look during the deletion found a
    /// backup relying on them.
    pub spared_late: u64,
    pub trash_removed: u64,
    /// Records of removed newest points (`removed/`) a later point made
    /// useless (`crate::removed`).
    pub removed_records_cleared: u64,
    /// Staging files of interrupted writes (local directories).
    pub incomplete_removed: u64,
    pub nodes_marked: u64,
    pub chunks_marked: u64,
    pub nodes_listed: u64,
    pub nodes_deleted: u64,
    /// Chunk objects deleted (only a repair sweep deletes chunks by name).
    pub chunks_deleted: u64,
    /// Packs under `packs/`.
    pub packs_listed: u64,
    /// Packs deleted: with no live chunk, or rewritten.
    pub packs_deleted: u64,
    /// Packs whose live chunks were moved into new packs (deleted too,
    /// unless a backup came to rely on them meanwhile).
    pub packs_rewritten: u64,
    /// New packs written by the rewrite.
    pub packs_written: u64,
    /// Stored bytes of the live chunks the rewrite moved.
    pub live_bytes_moved: u64,
    /// Dead bytes left in packs kept (below `--max-waste`, an archive
    /// class, or younger than the class's minimum storage duration).
    pub waste_bytes_left: u64,
    /// Copies of live chunks held by several packs that this sweep
    /// drops, one copy of each kept (`gc/copies.rs`), and their stored
    /// bytes: deleted with their packs, or left behind by their rewrite
    /// (copies in packs kept count in `waste_bytes_left`).
    pub copies_left_out: u64,
    pub copy_bytes_left_out: u64,
    /// Copies kept because the copy chosen to stay did not open.
    pub copies_kept_bad_keeper: u64,
    /// Copies of such chunks a rewrite left out because they did not open
    /// either (a copy that opens is moved instead).
    pub copies_damaged_left_out: u64,
    /// Chunks with copies past the per-sweep limit: all copies kept this
    /// time.
    pub copies_over_cap: u64,
    /// Old packs no index object names (crashed backups'), deleted.
    pub packs_orphaned: u64,
    /// Packs no index object names that hold live chunks found in no
    /// indexed pack: kept (`xfull index rebuild` indexes them again).
    pub packs_unindexed_live: u64,
    /// Packs whose trailer could not be read: kept.
    pub packs_damaged: u64,
    /// Packs to rewrite that answered "archived" (an archive class or
    /// tier gc was not told of, e.g. a lifecycle transition): kept, their
    /// waste counted in `waste_bytes_left`.
    pub packs_archived: u64,
    /// Packs due for a rewrite that was not planned because the store has
    /// too little room for chunk data (a nearly full local disk): kept,
    /// their waste counted in `waste_bytes_left`. What goes whole still
    /// goes, and a later gc rewrites them.
    pub packs_not_rewritten_no_space: u64,
    /// The room the store said it had for chunk data, when it has a limit.
    pub room_for_data: Option<u64>,
    pub index_objects_read: u64,
    pub index_objects_written: u64,
    pub index_objects_deleted: u64,
    /// Bytes of the nodes and packs deleted.
    pub bytes_freed: u64,
    /// Unreferenced nodes and packs kept as too young to delete (a
    /// backup may still be writing or about to name them).
    pub young_kept: u64,
    /// Object lock: garbage (nodes, packs) kept because its retention has
    /// not ended; a later gc deletes it.
    pub locked_kept: u64,
    pub locked_bytes: u64,
    /// When the first and the last of those retentions end.
    pub locked_first_until: Option<chrono::DateTime<chrono::Utc>>,
    pub locked_last_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Peak bytes of mark state in memory (chunk marks beyond
    /// `gc --mark-memory` go to local files).
    pub mark_state_bytes: u64,
    /// Ranges of ids the census took in turn (1: all marks in memory).
    pub mark_passes: u64,
    /// Why the sweep deleted nothing this time, if it held back.
    pub held: Option<String>,
    /// Packs were held back by damage (an index object that does not
    /// read): no pack goes on any gc until it is mended, so the command
    /// exits 3 rather than 0, which let space grow unseen (review 106.5).
    pub held_by_damage: bool,
    /// Packs were held back because the store's listing of `packs/`
    /// left out one that is there (`gc/unlisted.rs`): until the store's
    /// listing is mended no pack goes, so the command exits 1 (review
    /// 109.5).
    pub held_by_store: bool,
    /// Another sweep was running: this one did nothing.
    pub skipped: Option<String>,
    pub requests: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// One whole sweep with the repository's pack options, not cancellable.
pub async fn run(repo: &Repository, dry_run: bool) -> Result<GcReport> {
    let progress = Arc::new(Progress::default());
    let packs = PackOptions::for_repository(repo.config(), None);
    run_with(repo, dry_run, packs, &progress).await
}

/// One whole sweep. Once `progress` is cancelled it stops at the next
/// safe point with [`crate::Error::Cancelled`], its marker `Stopped` (see
/// `sweep/cancel.rs`).
pub async fn run_with(
    repo: &Repository,
    dry_run: bool,
    packs: PackOptions,
    progress: &Arc<Progress>,
) -> Result<GcReport> {
    run_batched(repo, dry_run, packs, usize::MAX, progress).await
}

/// [`run_with`], deleting at most `batch_size` objects per batch (at most
/// 1,000, the S3 limit).
pub async fn run_batched(
    repo: &Repository,
    dry_run: bool,
    packs: PackOptions,
    batch_size: usize,
    progress: &Arc<Progress>,
) -> Result<GcReport> {
    let started = std::time::Instant::now();
    let before = repo.backend().request_counts();
    let mut sweep = Sweep::begin(repo, dry_run)
        .await?
        .with_pack_options(packs)
        .with_batch_size(batch_size)
        .with_progress(progress.clone());
    if let Some(reason) = sweep.yield_reason() {
        return Ok(GcReport {
            seq: sweep.seq(),
            skipped: Some(reason),
            seconds: started.elapsed().as_secs_f64(),
            ..GcReport::default()
        });
    }
    let heartbeat = (!dry_run).then(|| sweep.heartbeat());
    let steps = async {
        sweep.read_leases().await?;
        sweep.read_points().await?;
        sweep.mark().await?;
        sweep.delete().await
    };
    if let Err(e) = steps.await {
        drop(heartbeat);
        sweep.stop().await;
        return Err(e);
    }
    let mut report = sweep.finish().await?;
    drop(heartbeat);
    for (kind, n) in repo.backend().request_counts() {
        let n = n - before.get(kind).copied().unwrap_or(0);
        if n > 0 {
            report.requests.insert(kind.to_string(), n);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod archive_class_tests;
#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod copies_rewrite_tests;
#[cfg(test)]
mod copies_tests;
#[cfg(test)]
mod interleaving_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod marker_landing_tests;
#[cfg(test)]
mod orphan_cover_tests;
#[cfg(test)]
mod pack_interleaving_tests;
#[cfg(test)]
mod pack_sweep_tests;
#[cfg(test)]
mod pass_tests;
#[cfg(test)]
mod protect_tests;
#[cfg(test)]
mod stale_index_tests;
#[cfg(test)]
pub(crate) mod test_packs;
#[cfg(test)]
mod unlisted_tests;
#[cfg(test)]
mod young_index_tests;
