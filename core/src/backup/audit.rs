//! Auditing a change source. Hypervisor change tracking can lose writes (a
//! crash, a bitmap reset, a cluster node that wrote without logging), so a
//! random sample of segments is read in full: a segment the source calls
//! unchanged must hold the parent's node; a segment with reported changes
//! must chunk to what re-chunking around those changes gives. A mismatch
//! means the change source lied, and the disk is scanned in full. Both
//! kinds are read by the pipeline's workers: this module picks them and
//! has the checks they run.

use rand::seq::index::sample;

use super::plan::{DiskPlan, SegmentPlan, data_bytes};
use crate::chunker::{ChunkParams, first_cut, is_zero};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::node::{Entry, Node};
use crate::source::DiskSource;

/// Default share of unchanged segments to re-read, in percent.
pub const DEFAULT_AUDIT_PERCENT: f64 = 1.0;

/// Picks `percent` of the segments of `plan` that are re-chunked around
/// changes (at least one when there are any and `percent` > 0) for the
/// pipeline to read whole and check.
pub fn mark_touched(plan: &mut DiskPlan, percent: f64) {
    for i in pick(&plan.touched(), percent) {
        if let SegmentPlan::Touched { audit, .. } = &mut plan.segments[i] {
            *audit = true;
        }
    }
}

/// How many segments of `plan` are audited: touched ones marked, and
/// reused ones picked that are still reused (the parent check reads a
/// segment whose parent node is unsound in full instead).
pub fn marked(plan: &DiskPlan) -> u64 {
    let touched = plan
        .segments
        .iter()
        .filter(|s| matches!(s, SegmentPlan::Touched { audit: true, .. }))
        .count();
    let reused = plan
        .audit_reused
        .iter()
        .filter(|&&i| matches!(plan.segments.get(i), Some(SegmentPlan::Reuse(_))))
        .count();
    (touched + reused) as u64
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
/// check against the parent's node ([`check_reused`]). They are checked
/// by the workers beside the rest of the disk's work: done before the
/// pipeline, on one thread, a 64 MiB segment's read, chunking and hashing
/// held up every backup by about 0.1 s.
pub fn mark_reused(plan: &mut DiskPlan, percent: f64) {
    plan.audit_reused = pick(&plan.reused(), percent);
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

/// Checks that the segment at `start`, `len` bytes, of `source` still
/// holds `node`, the parent's node there (`None`: all zeros): each chunk's
/// bytes must hash to its id and each zero run be zeros
/// ([`verify_entries`]: no cut search, which cost more than the hashing).
/// The node was fetched and checked against its id by the parent check
/// (one found unsound is never reused, so never audited).
/// [`Error::AuditMismatch`] if the bytes differ: the change source missed
/// a write.
pub(super) fn check_reused(
    source: &DiskSource,
    codec: &Codec,
    start: u64,
    len: usize,
    node: Option<&Node>,
) -> Result<ReusedChecked> {
    match node {
        None => {
            let zeros: Vec<Entry> = (0..len)
                .step_by(VERIFY_READ)
                .map(|o| Entry((len - o).min(VERIFY_READ) as u32, None))
                .collect();
            let read = verify_entries(source, codec, start, &zeros, |_| false)?;
            Ok(ReusedChecked { read, data: 0 })
        }
        Some(node) => {
            if node.entries.iter().map(Entry::len).sum::<u64>() != len as u64 {
                return Err(Error::AuditMismatch { offset: start });
            }
            let read = verify_entries(source, codec, start, &node.entries, |_| false)?;
            let data = data_bytes(&node.entries);
            Ok(ReusedChecked { read, data })
        }
    }
}

/// Checks a touched segment re-chunked around its reported changes
/// ([`super::incremental::rechunk_within`]: `entries`, `kept` saying which
/// it took from the parent unread) against the whole segment's bytes
/// without a second cut search over it: each kept entry must hold its
/// bytes ([`verify_entries`]; the newly cut ones were cut from bytes just
/// read), and where a kept entry is followed by a newly cut one, the cut
/// between them must still be one. FastCDC decides a cut from the bytes
/// up to and including the next chunk's first byte, which here is not in
/// a kept chunk: a write the source missed there would leave every kept
/// chunk's bytes intact but move the whole segment's cut (found in
/// review: the hashing alone missed it). Between two kept entries the
/// next one's bytes are checked, and the last entry ends the segment.
/// Returns the bytes read; [`Error::AuditMismatch`] (at `start`) on the
/// first difference.
pub(super) fn verify_kept(
    source: &DiskSource,
    codec: &Codec,
    params: &ChunkParams,
    start: u64,
    entries: &[Entry],
    kept: &[bool],
) -> Result<u64> {
    let mut read = verify_entries(source, codec, start, entries, |i| !kept[i])?;
    let seg_len: u64 = entries.iter().map(Entry::len).sum();
    let mut buf = Vec::new();
    let mut off = 0u64;
    for (i, e) in entries.iter().enumerate() {
        if kept[i] && kept.get(i + 1) == Some(&false) {
            // The rest of the segment or a maximum chunk: all FastCDC
            // looks at (see `first_cut`).
            let len = (seg_len - off).min(u64::from(params.max));
            buf.resize(len as usize, 0);
            read += source.read_at(start + off, &mut buf)?;
            if first_cut(params, &buf) as u64 != e.len() {
                return Err(Error::AuditMismatch { offset: start });
            }
        }
        off += e.len();
    }
    Ok(read)
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
