//! A check of every segment a change source calls unchanged against the
//! disk's own map of zeros, before anything is read: a segment whose
//! parent node holds data (a node always has a chunk that is not all
//! zeros) but which now reads as zeros throughout has changed, whatever
//! the source says. The audit reads only a sample; this asks block status
//! (NBD) or SEEK_DATA (files) about all of them, reading no data.
//!
//! It catches what QEMU's dirty bitmaps cannot report: a disk shrunk and
//! grown back between two points reads zeros over the regrown range,
//! while QEMU truncated its bitmaps and grew them clean there. From the
//! map alone it sees whole segments gone to zeros; with the parent's
//! last-data marks (the manifest's `last_data`, since 2026-12-07) also a
//! segment whose last chunk of data now reads zeros, the one a shrink
//! cut into included, and a touched segment whose reported changes do
//! not reach that chunk. A hit means the source is wrong and the disk is
//! scanned in full, as for an audit mismatch.
//!
//! The segment where the zeros the disk reads to its end start keeps
//! some data: when reused, it is checked apart ([`note_tail`],
//! [`zeroed_tail`]), against its parent node's chunks (review, stop 51: a
//! disk shrunk by 1 MiB and grown back kept the parent's data there, with
//! a clean bitmap; review 87: so did a shrink into an earlier segment, and
//! the rest of a chunk across the shrink's end).

use std::ops::Range;
use std::sync::Arc;

use super::audit::verify_entries;
use super::plan::{DiskPlan, SegmentPlan};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::manifest::DiskManifest;
use crate::repo::Repository;
use crate::source::DiskSource;
use crate::task::blocking;

/// Segments asked about in one call: a few round trips for a large disk,
/// and the data ranges of one window in memory at a time.
const WINDOW_SEGMENTS: u64 = 16;

/// The most segments [`last_data`] asks about in one call.
const TAIL_WINDOW_SEGMENTS: u64 = 64;

/// The offset of the first segment where `source` now reports zeros
/// where the parent held data and the change source reported nothing:
/// a segment `plan` reuses from a parent node that reads zeros from its
/// start, or, where the parent's last-data mark is known (`marks`, the
/// parent's [`DiskManifest::last_data`]), from at or before the start of
/// the parent's last chunk of data; also a touched segment of unchanged
/// length, none of whose reported changes reach that chunk, that reads
/// zeros from there (its re-chunking would keep the chunk unread). None
/// if there is none.
///
/// [`DiskManifest::last_data`]: crate::manifest::DiskManifest::last_data
pub(super) async fn first_zeroed(
    source: Arc<DiskSource>,
    plan: &DiskPlan,
    segment_size: u64,
    marks: &[u64],
) -> Result<Option<u64>> {
    let size = source.size();
    let segment = move |i: u64| i * segment_size..((i + 1) * segment_size).min(size);
    // (segment, the offset in it below which zeros mean a missed change)
    let mark = |i: usize| marks.get(i).copied().unwrap_or(0);
    let checks: Vec<(u64, u64)> = plan
        .segments
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            SegmentPlan::Reuse(Some(_)) => Some((i as u64, mark(i).max(1))),
            SegmentPlan::Touched {
                parent: Some(_),
                parent_len,
                changes,
                ..
            } if mark(i) > 0 => {
                let from = mark(i) - 1;
                let seg = segment(i as u64);
                let len = seg.end.saturating_sub(seg.start);
                let reported = changes.iter().any(|c| c.end > from);
                (*parent_len == len && from < len && !reported).then_some((i as u64, mark(i)))
            }
            _ => None,
        })
        .collect();
    if checks.is_empty() || segment_size == 0 {
        return Ok(None);
    }
    blocking("the zero check", move || {
        let mut k = 0;
        while k < checks.len() {
            // A window of consecutive segments to check.
            let first = checks[k].0;
            let mut n = 1;
            while k + n < checks.len()
                && checks[k + n].0 == first + n as u64
                && (n as u64) < WINDOW_SEGMENTS
            {
                n += 1;
            }
            let window = segment(first).start..segment(first + n as u64 - 1).end;
            if window.start < window.end {
                let data = source.data_ranges(window)?;
                for &(i, below) in &checks[k..k + n] {
                    let seg = segment(i);
                    if seg.start < seg.end && zeros_from(&data, &seg) - seg.start < below {
                        return Ok(Some(seg.start));
                    }
                }
            }
            k += n;
        }
        Ok(None)
    })
    .await?
}

/// Notes in `plan.tail_zeros` where the disk reads zeros from to its end
/// (the segment and the offset), when that is inside a segment the plan
/// reuses from a parent node: before the parent check, which then fetches
/// and keeps that segment's node (fetched once, and checked like the
/// others) for [`zeroed_tail`]. Not only the last segment: a shrink into
/// an earlier one, whose parent held only holes after it, leaves no whole
/// segment that held data reading zeros, and the last one no parent node
/// to hold them against (review 87: such a point restored the parent's
/// bytes).
pub(super) async fn note_tail(
    source: Arc<DiskSource>,
    plan: &mut DiskPlan,
    segment_size: u64,
) -> Result<()> {
    if segment_size == 0 || !plan.segments.iter().any(SegmentPlan::reuses_node) {
        return Ok(());
    }
    let n = plan.segments.len() as u64;
    let Some(zeros_from) = blocking("the zero check", move || {
        last_data(&source, n, segment_size)
    })
    .await??
    else {
        return Ok(());
    };
    // From a segment's start, the whole segment reads zeros: that is
    // `first_zeroed`'s to find.
    let k = (zeros_from / segment_size) as usize;
    if zeros_from % segment_size != 0 && plan.segments.get(k).is_some_and(SegmentPlan::reuses_node)
    {
        plan.tail_zeros = Some((k, zeros_from));
    }
    Ok(())
}

/// Where the disk's last data ends (the disk reads zeros from there on),
/// looked for from its end, a window of segments at a time: one at first
/// (most disks hold data in their last segment), twice as many each time
/// after, up to [`TAIL_WINDOW_SEGMENTS`] (a thin disk's empty tail in few
/// calls, the data ranges of one window in memory). `None` when that is
/// the disk's end or it holds no data. It walks on past reused segments
/// that read zeros throughout: [`first_zeroed`] finds those, but not one
/// the parent check turns into a full read (its node unsound).
fn last_data(source: &DiskSource, segments: u64, segment_size: u64) -> Result<Option<u64>> {
    let size = source.size();
    let (mut hi, mut step) = (segments, 1);
    while hi > 0 {
        let lo = hi.saturating_sub(step);
        let window = lo * segment_size..(hi * segment_size).min(size);
        if let Some(last) = source.data_ranges(window.clone())?.last() {
            let end = last.end.clamp(window.start, window.end);
            return Ok((end < size).then_some(end));
        }
        (hi, step) = (lo, (step * 2).min(TAIL_WINDOW_SEGMENTS));
    }
    Ok(None)
}

/// The offset of a chunk of the segment noted in `plan.tail_zeros`,
/// reused from its parent node, that held data but now reads zeros there,
/// if any: a write the source did not report (a shrink and a regrow). A
/// chunk wholly in the zeros is one from the node alone; the chunk across
/// their start (the shrink can end inside a chunk) is read and hashed, at
/// most a maximum chunk (review 87: the parent's data in the rest of that
/// chunk was kept). The node is the one the parent check kept; one it
/// found unsound made the segment a full read, and one past its memory
/// bound is fetched here.
pub(super) async fn zeroed_tail(
    repo: &Repository,
    source: Arc<DiskSource>,
    plan: &DiskPlan,
    segment_size: u64,
) -> Result<Option<u64>> {
    let Some((k, zeros_from)) = plan.tail_zeros else {
        return Ok(None);
    };
    let Some(SegmentPlan::Reuse(Some(node))) = plan.segments.get(k) else {
        return Ok(None);
    };
    let start = k as u64 * segment_size;
    let node = match plan.parent_nodes.get(node) {
        Some(n) => n.clone(),
        None => match repo.load_node(node).await {
            Ok(n) => Arc::new(n),
            Err(e) if e.is_damage() => return Ok(Some(start)),
            Err(e) => return Err(e),
        },
    };
    let size = source.size();
    let mut at = start;
    for e in &node.entries {
        let end = at.saturating_add(e.len());
        if e.1.is_some() && end > zeros_from && end <= size {
            if at >= zeros_from {
                return Ok(Some(at));
            }
            let (source, codec, entry) = (source.clone(), repo.codec().clone(), *e);
            let checked = blocking("the zero check", move || {
                verify_entries(&source, &codec, at, &[entry], |_| false)
            })
            .await?;
            match checked {
                Ok(_) => {}
                Err(Error::AuditMismatch { .. }) => return Ok(Some(at)),
                Err(e) => return Err(e),
            }
        }
        at = end;
    }
    Ok(None)
}

/// The point's last-data marks: those the pipeline worked out from the
/// segments' entries, and for a segment reused unread its parent's (a
/// mark is a function of the node). Empty when none is known, as a
/// point written before marks has none.
pub(super) fn last_data_marks(
    segments: &[Option<ObjectId>],
    marks: &[Option<u64>],
    parent: Option<&DiskManifest>,
) -> Vec<u64> {
    let marks: Vec<u64> = segments
        .iter()
        .zip(marks)
        .enumerate()
        .map(|(i, (node, mark))| match (node, mark, parent) {
            (None, _, _) => 0,
            (_, Some(m), _) => *m,
            (_, None, Some(p)) if p.segments.get(i) == Some(node) => p.last_data_mark(i),
            (_, None, _) => 0,
        })
        .collect();
    if marks.iter().all(|&m| m == 0) {
        Vec::new()
    } else {
        marks
    }
}

/// Where `r` reads zeros from to its end, by the sorted, disjoint data
/// `ranges` (`r.start` when none overlaps it).
fn zeros_from(ranges: &[Range<u64>], r: &Range<u64>) -> u64 {
    let i = ranges.partition_point(|x| x.start < r.end);
    match i.checked_sub(1).map(|i| &ranges[i]) {
        Some(x) if x.end > r.start => x.end.min(r.end),
        _ => r.start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_come_from_the_pipeline_or_the_parent_at_the_same_place() {
        let (a, b) = (ObjectId::of(b"a"), ObjectId::of(b"b"));
        let parent = DiskManifest {
            last_data: vec![7, 9, 0],
            segments: vec![Some(a), Some(b), None],
            ..crate::manifest::tests::sample().disks[0].clone()
        };
        let segments = [Some(a), Some(a), None];
        // Segment 0 reused (the parent's mark), 1 re-cut (its own), 2 a hole.
        let marks = [None, Some(3), None];
        assert_eq!(
            last_data_marks(&segments, &marks, Some(&parent)),
            vec![7, 3, 0]
        );
        // Reused from a parent without marks: not known.
        let old = DiskManifest {
            last_data: Vec::new(),
            ..parent.clone()
        };
        assert_eq!(
            last_data_marks(&segments, &marks, Some(&old)),
            vec![0, 3, 0]
        );
        // Nothing known: none listed, as a point from before marks.
        assert!(last_data_marks(&segments, &[None, None, None], Some(&old)).is_empty());
        // A node at another place is not the parent's segment there.
        let other = last_data_marks(&[Some(b), Some(b)], &[None, Some(4)], Some(&parent));
        assert_eq!(other, vec![0, 4]);
    }

    #[test]
    fn where_zeros_start_in_a_range() {
        let ranges = vec![10..20, 30..40];
        assert_eq!(zeros_from(&ranges, &(0..10)), 0);
        assert_eq!(zeros_from(&ranges, &(0..11)), 11);
        assert_eq!(zeros_from(&ranges, &(0..25)), 20);
        assert_eq!(zeros_from(&ranges, &(20..30)), 20);
        assert_eq!(zeros_from(&ranges, &(15..35)), 35);
        assert_eq!(zeros_from(&ranges, &(39..50)), 40);
        assert_eq!(zeros_from(&ranges, &(40..50)), 40);
        assert_eq!(zeros_from(&[], &(0..50)), 0);
    }
}
