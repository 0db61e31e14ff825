//! `xfull copy`: points of one repository copied into another made with
//! `init --like` (docs/design.md, "Copying a repository").
//!
//! The two name and seal content alike (the same chunking, the same keys
//! or none: [`like`]), so a chunk, a node and a manifest mean the same
//! bytes in both, and the copy moves what is stored without decompressing
//! or sealing anything again: only what the target lacks, every chunk and
//! node opened and checked against its id on arrival ([`nodes`]). Towards
//! the target it is a writer like a backup, one lease per point
//! ([`point`]); towards the source a reader like a restore. Chunks land in
//! the target's own packs and index objects, put with the target's own
//! options: nothing of the source's store settings travels.

mod like;
mod locked;
mod nodes;
mod point;
mod recheck;

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::PointId;
use crate::names::VmName;
use crate::placement::Placement;
use crate::placement::lookup::ChunkIndex;
use crate::progress::Progress;
use crate::repo::Repository;

pub use like::check as check_like;

/// What to copy.
#[derive(Clone, Debug)]
pub struct CopyRequest {
    /// The points, copied in this order (oldest first per VM suits
    /// incremental copies: each point then builds on the one before).
    pub points: Vec<(VmName, PointId)>,
    /// This host's name, for the target's leases.
    pub host: String,
}

/// What a copy did, for one point or in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyCounts {
    /// Nodes put into the target.
    pub nodes_copied: u64,
    /// Nodes the target had (a point it holds references them, or they
    /// were there and their chunks were found).
    pub nodes_present: u64,
    /// Chunks read from the source, checked and stored in the target.
    pub chunks_copied: u64,
    /// Chunks the nodes copied need that the target had.
    pub chunks_present: u64,
    /// Packs written to the target.
    pub packs_written: u64,
    /// Bytes read from the source: nodes and pack runs (manifests aside).
    pub bytes_read: u64,
    /// Bytes stored in the target: packs, nodes, manifests.
    pub bytes_stored: u64,
}

impl CopyCounts {
    fn add(&mut self, o: &CopyCounts) {
        self.nodes_copied += o.nodes_copied;
        self.nodes_present += o.nodes_present;
        self.chunks_copied += o.chunks_copied;
        self.chunks_present += o.chunks_present;
        self.packs_written += o.packs_written;
        self.bytes_read += o.bytes_read;
        self.bytes_stored += o.bytes_stored;
    }
}

/// How one point went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PointCopied {
    /// `VM@ID`.
    pub point: String,
    pub status: PointStatus,
    /// All 0 unless `Copied`.
    pub counts: CopyCounts,
    /// What in the source is damaged, when `Damaged`.
    pub damage: Option<String>,
}

/// What became of one point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PointStatus {
    /// Copied by this run.
    Copied,
    /// The target had it already: nothing was done.
    Present,
    /// Removed from the source since it was listed: not copied (a
    /// `CopySourceGone` warning says so).
    Gone,
    /// Damaged in the source (an object it needs does not open there, or
    /// is missing): not copied, and the copy goes on with the others.
    Damaged,
}

/// The outcome of a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyOutcome {
    pub points: Vec<PointCopied>,
    pub totals: CopyCounts,
}

impl CopyOutcome {
    /// How many points ended with `status`.
    pub fn count(&self, status: PointStatus) -> usize {
        self.points.iter().filter(|p| p.status == status).count()
    }

    pub fn copied(&self) -> usize {
        self.count(PointStatus::Copied)
    }
}

/// What every point's copy shares.
pub(crate) struct Run<'a> {
    source: &'a Repository,
    target: &'a Repository,
    source_chunks: Placement,
    /// Opened once, after the points were listed (a chunk not where it
    /// says is looked for in a fresh one: `Placement::transfer`), and only
    /// when a point is to be copied: a copy whose points the target has
    /// already reads no index (it was most of a re-run's requests).
    source_index: tokio::sync::OnceCell<Arc<ChunkIndex>>,
    host: String,
    progress: Arc<Progress>,
}

/// Copies `req.points` from `source` into `target`, one point after the
/// other. Refuses a target not made like the source, and a source key
/// that cannot read chunk data (every chunk is checked on arrival).
/// Cancelling `progress` stops it before the next commit: the points
/// committed so far stay, the interrupted one leaves only unreferenced
/// objects, which a later run of the same copy reuses.
pub async fn copy(
    source: &Repository,
    target: &Repository,
    req: CopyRequest,
    progress: Arc<Progress>,
) -> Result<CopyOutcome> {
    like::check(source, target)?;
    source.codec().require_data("copy")?;
    let source_chunks = source.chunks();
    let run = Run {
        source,
        target,
        source_index: tokio::sync::OnceCell::new(),
        source_chunks,
        host: req.host,
        progress,
    };
    let mut out = CopyOutcome::default();
    for (vm, id) in &req.points {
        if run.progress.is_cancelled() {
            return Err(Error::Cancelled {
                cleaned: format!(
                    "the copy stopped before {vm}@{id}, having copied {} point(s); run it again \
                     to copy the rest",
                    out.copied()
                ),
            });
        }
        let mut damage = None;
        let (status, counts) = match point::copy_point(&run, vm, id).await {
            Ok(point::PointResult::Present) => (PointStatus::Present, CopyCounts::default()),
            Ok(point::PointResult::Gone) => (PointStatus::Gone, CopyCounts::default()),
            Ok(point::PointResult::Copied(counts)) => (PointStatus::Copied, counts),
            // The source's damage is that point's: the rest are copied.
            // It stopped the copy, and every later point of every VM
            // waited until the damaged one was repaired or forgotten
            // (review 99.5). The target's damage still stops it.
            Err(e) if is_source_damage(&e) => {
                damage = Some(e.to_string());
                (PointStatus::Damaged, CopyCounts::default())
            }
            Err(Error::Cancelled { cleaned }) => {
                return Err(Error::Cancelled {
                    cleaned: format!("{cleaned}; {} point(s) were copied before it", out.copied()),
                });
            }
            Err(e) => return Err(e),
        };
        let point = PointCopied {
            point: format!("{vm}@{id}"),
            status,
            counts,
            damage,
        };
        out.totals.add(&point.counts);
        out.points.push(point);
    }
    Ok(out)
}

impl Run<'_> {
    /// The source's chunk index, opened at the first call.
    async fn source_index(&self) -> Result<&Arc<ChunkIndex>> {
        self.source_index
            .get_or_try_init(|| async {
                let opened = self.source_chunks.open_index().await;
                opened.map_err(|e| in_source(self.source, e))
            })
            .await
    }
}

/// Damage found in the source says so: both repositories use the same
/// object names.
fn in_source(source: &Repository, e: Error) -> Error {
    match e {
        Error::Corrupt { key, reason } => Error::SourceCorrupt {
            key,
            source_location: source.location(),
            reason,
        },
        e => e,
    }
}

/// Whether `e` is damage [`in_source`] marked as the source's.
fn is_source_damage(e: &Error) -> bool {
    matches!(e, Error::SourceCorrupt { .. })
}

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod index_damage_tests;
#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod segment_tests;
#[cfg(test)]
mod tests;
