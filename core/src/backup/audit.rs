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
use crate::chunker::{ChunkParams, is_zero};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::node::{Entry, Node};
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

/// Bytes [`verify_entries`] reads at a time.
const VERIFY_READ: usize = 4 << 20;

/// Checks that the segment at `start`, `len` bytes, of `source` is still
/// `expected`, the parent's node there (`None`: all zeros), whose entries
/// are `node` when the worker could read it: each chunk's bytes must hash
/// to its id and each zero run be zeros ([`verify_entries`]: no cut
/// search, which cost more than the hashing). Without the node (damaged)
/// the segment is chunked whole in windows (memory: `wb`) and its node id
/// compared. [`Error::AuditMismatch`] if the bytes differ: the change
/// source missed a write.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_reused(
    wb: &mut WindowBuf,
    source: &DiskSource,
    codec: &Codec,
    params: &ChunkParams,
    start: u64,
    len: usize,
    expected: Option<ObjectId>,
    node: Option<&Node>,
) -> Result<ReusedChecked> {
    let mismatch = Error::AuditMismatch { offset: start };
    match (expected, node) {
        (None, _) => {
            let zeros: Vec<Entry> = (0..len)
                .step_by(VERIFY_READ)
                .map(|o| Entry((len - o).min(VERIFY_READ) as u32, None))
                .collect();
            let read = verify_entries(source, codec, start, &zeros, |_| false)?;
            Ok(ReusedChecked { read, data: 0 })
        }
        (Some(_), Some(node)) => {
            if node.entries.iter().map(Entry::len).sum::<u64>() != len as u64 {
                return Err(mismatch);
            }
            let read = verify_entries(source, codec, start, &node.entries, |_| false)?;
            let data = data_bytes(&node.entries);
            Ok(ReusedChecked { read, data })
        }
        (Some(_), None) => {
            let mut read = 0;
            let mut entries = Vec::new();
            scan_source(wb, source, params, codec, start, len, None, |p| {
                read += p.read;
                entries.extend_from_slice(&p.chunks.entries);
                Ok(())
            })?;
            let data = data_bytes(&entries);
            let actual = (data > 0)
                .then(|| Node { entries }.to_plain(codec).map(|n| n.0))
                .transpose()?;
            match actual == expected {
                true => Ok(ReusedChecked { read, data }),
                false => Err(mismatch),
            }
        }
    }
}

/// Checks that the segment of `source` at `start` holds what `entries`
/// say, entry by entry: a chunk hashes to its id, a zero run is zeros.
/// Entries `skip` names (cut from bytes just read) are not read again.
/// Reads runs of the others, [`VERIFY_READ`] bytes at most at a time.
/// Returns the bytes read from the source; [`Error::AuditMismatch`] (at
/// `start`) on the first difference.
pub(super) fn verify_entries(
    source: &DiskSource,
    codec: &Codec,
    start: u64,
    entries: &[Entry],
    skip: impl Fn(usize) -> bool,
) -> Result<u64> {
    let mut buf = Vec::new();
    let (mut read, mut i, mut off) = (0u64, 0usize, 0u64);
    while i < entries.len() {
        if skip(i) {
            off += entries[i].len();
            i += 1;
            continue;
        }
        // A run of entries to check, at least one, within VERIFY_READ.
        let (first, from, mut len) = (i, off, 0usize);
        while i < entries.len()
            && !skip(i)
            && (len == 0 || len + entries[i].len() as usize <= VERIFY_READ)
        {
            len += entries[i].len() as usize;
            off += entries[i].len();
            i += 1;
        }
        buf.resize(len, 0);
        read += source.read_at(start + from, &mut buf)?;
        let mut at = 0;
        for e in &entries[first..i] {
            let piece = &buf[at..at + e.len() as usize];
            let same = match e.1 {
                None => is_zero(piece),
                Some(id) => codec.chunk_id(piece) == id,
            };
            if !same {
                return Err(Error::AuditMismatch { offset: start });
            }
            at += piece.len();
        }
    }
    Ok(read)
}
