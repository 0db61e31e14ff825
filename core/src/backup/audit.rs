//! Auditing a change source. Hypervisor change tracking can lose writes (a
//! crash, a bitmap reset, a cluster node that wrote without logging), so a
//! random sample of segments is read in full: a segment the source calls
//! unchanged must chunk to the parent's node; a segment with reported
//! changes must chunk to what re-chunking around those changes gives. A
//! mismatch means the change source lied, and the disk is scanned in full.
//! Both kinds are read by the pipeline's workers: this module picks them
//! and checks the unchanged ones.

use rand::seq::index::sample;

use super::plan::{DiskPlan, SegmentPlan, data_bytes};
use super::scan::{WindowBuf, scan_source};
use crate::chunker::ChunkParams;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::node::Node;
use crate::source::DiskSource;

/// Default share of unchanged segments to re-read, in percent.
pub const DEFAULT_AUDIT_PERCENT: f64 = 1.0;

/// Picks `percent` of the segments of `plan` that are re-chunked around
/// changes (at least one when there are any and `percent` > 0) for the
/// pipeline to read whole and check; returns how many.
pub fn mark_touched(plan: &mut DiskPlan, percent: f64) -> u64 {
    let touched = plan.touched();
    let picked = pick(&touched, percent);
    for &i in &picked {
        if let SegmentPlan::Touched { audit, .. } = &mut plan.segments[i] {
            *audit = true;
        }
    }
    picked.len() as u64
}

/// A random `percent` of `from` (at least one when `percent` > 0), sorted.
pub(super) fn pick(from: &[usize], percent: f64) -> Vec<usize> {
    let want = ((from.len() as f64 * percent / 100.0).ceil() as usize).min(from.len());
    let want = if percent > 0.0 {
        want.max(1).min(from.len())
    } else {
        0
    };
    let mut picked: Vec<usize> = sample(&mut rand::rng(), from.len(), want)
        .into_iter()
        .map(|i| from[i])
        .collect();
    picked.sort_unstable();
    picked
}

/// Picks `percent` of the segments of `plan` reused unread (at least one
/// when any is and `percent` > 0) for the pipeline to read whole and
/// check against the parent's node ([`check_reused`]); returns how many.
/// They are checked by the workers beside the rest of the disk's work:
/// done before the pipeline, on one thread, a 64 MiB segment's read,
/// chunking and hashing held up every backup by about 0.1 s.
pub fn mark_reused(plan: &mut DiskPlan, percent: f64) -> u64 {
    plan.audit_reused = pick(&plan.reused(), percent);
    plan.audit_reused.len() as u64
}

/// What [`check_reused`] read of a segment that matched its parent's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusedChecked {
    /// Bytes read.
    pub read: u64,
    /// Data bytes of the segment (its chunks, zero runs left out).
    pub data: u64,
}

/// Reads the segment at `start`, `len` bytes, of `source` whole (in
/// windows, as the pipeline reads: memory is `wb`) and checks that it
/// chunks to `expected`, the parent's node there (`None`: all zeros).
/// [`Error::AuditMismatch`] if not: the change source missed a write.
pub(super) fn check_reused(
    wb: &mut WindowBuf,
    source: &DiskSource,
    codec: &Codec,
    params: &ChunkParams,
    start: u64,
    len: usize,
    expected: Option<ObjectId>,
) -> Result<ReusedChecked> {
    let mut read = 0;
    let mut entries = Vec::new();
    scan_source(wb, source, params, codec, start, len, None, |p| {
        read += p.read;
        entries.extend_from_slice(&p.chunks.entries);
        Ok(())
    })?;
    let data = data_bytes(&entries);
    let actual = if data == 0 {
        None
    } else {
        Some(Node { entries }.to_plain(codec)?.0)
    };
    if actual != expected {
        return Err(Error::AuditMismatch { offset: start });
    }
    Ok(ReusedChecked { read, data })
}
