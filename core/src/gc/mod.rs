//! Garbage collection: a sweep deletes the chunks and nodes no point
//! references, while backups keep running (docs/design.md, "Concurrency").
//! [`sweep::Sweep`] is the protocol as separate steps, so that tests can
//! interleave them with a backup session's; [`run`] runs them in order.

pub mod markers;
pub mod marks;
pub mod pack_plan;
mod protect;
pub mod sweep;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::repo::Repository;
pub use sweep::Sweep;

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
    /// Staging files of interrupted writes (local directories).
    pub incomplete_removed: u64,
    pub nodes_marked: u64,
    pub chunks_marked: u64,
    pub nodes_listed: u64,
    pub chunks_listed: u64,
    pub nodes_deleted: u64,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Unreferenced, but too young to delete (a backup may still be
    /// writing them).
    pub young_kept: u64,
    pub mark_state_bytes: u64,
    /// Why the sweep deleted nothing this time, if it held back.
    pub held: Option<String>,
    /// Another sweep was running: this one did nothing.
    pub skipped: Option<String>,
    pub requests: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// One whole sweep.
pub async fn run(repo: &Repository, dry_run: bool) -> Result<GcReport> {
    let started = std::time::Instant::now();
    let before = repo.backend().request_counts();
    let mut sweep = Sweep::begin(repo, dry_run).await?;
    if let Some((seq, host)) = sweep.yielded_to() {
        return Ok(GcReport {
            seq: sweep.seq(),
            skipped: Some(format!(
                "gc sweep {seq} is running on {host}; one sweep runs at a time"
            )),
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

// Off while the pack layout is wired on this branch: they put and list
// chunk objects, which format 2 has no more; the gc-over-packs branch
// rewrites them.
#[cfg(all(test, any()))]
mod interleaving_tests;
#[cfg(all(test, any()))]
mod liveness_tests;
