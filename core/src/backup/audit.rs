//! Auditing a change source. Hypervisor change tracking can lose writes (a
//! crash, a bitmap reset, a cluster node that wrote without logging), so a
//! random sample of segments is read in full: a segment the source calls
//! unchanged must chunk to the parent's node; a segment with reported
//! changes must chunk to what re-chunking around those changes gives. A
//! mismatch means the change source lied, and the disk is scanned in full.

use rand::seq::index::sample;

use super::plan::{DiskPlan, SegmentPlan};
use super::scan::{WindowBuf, scan_source};
use crate::chunker::ChunkParams;
use crate::codec::Codec;
use crate::error::Result;
use crate::manifest::Audit;
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

/// Re-reads `percent` of the reused segments of `plan` (at least one when
/// any is reused and `percent` > 0) and compares them with the parent's.
/// Returns the audit and the bytes read. CPU- and IO-bound: call from a
/// blocking context.
pub fn audit_reused(
    plan: &DiskPlan,
    source: &DiskSource,
    params: &ChunkParams,
    codec: &Codec,
    segment_size: u64,
    percent: f64,
) -> Result<(Audit, u64)> {
    let picked = pick(&plan.reused(), percent);
    // Read in windows, as the pipeline reads (memory: one window).
    let mut wb = WindowBuf::default();
    let mut read = 0;
    for &idx in &picked {
        let SegmentPlan::Reuse(expected) = plan.segments[idx] else {
            continue;
        };
        let start = idx as u64 * segment_size;
        let end = (start + segment_size).min(source.size());
        let mut entries = Vec::new();
        scan_source(
            &mut wb,
            source,
            params,
            codec,
            start,
            (end - start) as usize,
            None,
            |p| {
                read += p.read;
                entries.extend_from_slice(&p.chunks.entries);
                Ok(())
            },
        )?;
        let actual = if entries.iter().all(|e| e.1.is_none()) {
            None
        } else {
            Some(Node { entries }.to_plain(codec)?.0)
        };
        if actual != expected {
            return Ok((
                Audit {
                    segments: picked.len() as u64,
                    mismatch_at: Some(start),
                },
                read,
            ));
        }
    }
    Ok((
        Audit {
            segments: picked.len() as u64,
            mismatch_at: None,
        },
        read,
    ))
}
