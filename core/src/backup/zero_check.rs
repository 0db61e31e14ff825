//! A check of every segment a change source calls unchanged against the
//! disk's own map of zeros, before anything is read: a segment whose
//! parent node holds data (a node always has a chunk that is not all
//! zeros) but which now reads as zeros throughout has changed, whatever
//! the source says. The audit reads only a sample; this asks block status
//! (NBD) or SEEK_DATA (files) about all of them, reading no data.
//!
//! It catches what QEMU's dirty bitmaps cannot report: a disk shrunk and
//! grown back between two points reads zeros over the regrown range,
//! while QEMU truncated its bitmaps and grew them clean there. It sees
//! only whole segments gone to zeros (the segment across the new end of
//! a shrink keeps some data), so a hit means the source is wrong and the
//! disk is scanned in full, as for an audit mismatch.
//!
//! A shrink by less than a segment leaves no whole segment of zeros: the
//! last segment, when reused and reading zeros to the end, is checked
//! apart ([`note_tail`], [`zeroed_tail`]), against its parent node's
//! chunks (review, stop 51: a disk shrunk by 1 MiB and
//! grown back kept the parent's data there, with a clean bitmap).

use std::ops::Range;
use std::sync::Arc;

use super::plan::{DiskPlan, SegmentPlan};
use crate::error::Result;
use crate::id::ObjectId;
use crate::repo::Repository;
use crate::source::DiskSource;
use crate::task::blocking;

/// Segments asked about in one call: a few round trips for a large disk,
/// and the data ranges of one window in memory at a time.
const WINDOW_SEGMENTS: u64 = 16;

/// The offset of the first segment `plan` reuses from a parent node that
/// `source` now reports as reading zeros throughout, if any.
pub(super) async fn first_zeroed(
    source: Arc<DiskSource>,
    plan: &DiskPlan,
    segment_size: u64,
) -> Result<Option<u64>> {
    let reused: Vec<u64> = plan
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, SegmentPlan::Reuse(Some(_))))
        .map(|(i, _)| i as u64)
        .collect();
    if reused.is_empty() || segment_size == 0 {
        return Ok(None);
    }
    blocking("the zero check", move || {
        let size = source.size();
        let segment = |i: u64| i * segment_size..((i + 1) * segment_size).min(size);
        let mut k = 0;
        while k < reused.len() {
            // A window of consecutive reused segments.
            let first = reused[k];
            let mut n = 1;
            while k + n < reused.len()
                && reused[k + n] == first + n as u64
                && (n as u64) < WINDOW_SEGMENTS
            {
                n += 1;
            }
            let window = segment(first).start..segment(first + n as u64 - 1).end;
            if window.start < window.end {
                let data = source.data_ranges(window)?;
                for &i in &reused[k..k + n] {
                    let seg = segment(i);
                    if seg.start < seg.end && !intersects(&data, &seg) {
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

/// The disk's last segment when the plan reuses it from a parent node:
/// its index and that node.
fn reused_last(plan: &DiskPlan) -> Option<(u64, ObjectId)> {
    match plan.segments.last()? {
        SegmentPlan::Reuse(Some(node)) => Some((plan.segments.len() as u64 - 1, *node)),
        _ => None,
    }
}

/// Notes in `plan.tail_zeros` where the disk reads zeros from to its end,
/// when its last segment is reused and does: before the parent check,
/// which then fetches and keeps that segment's node (fetched once, and
/// checked like the others) for [`zeroed_tail`].
pub(super) async fn note_tail(
    source: Arc<DiskSource>,
    plan: &mut DiskPlan,
    segment_size: u64,
) -> Result<()> {
    let Some((last, _)) = reused_last(plan) else {
        return Ok(());
    };
    let seg = last * segment_size..source.size();
    if seg.is_empty() {
        return Ok(());
    }
    let data = {
        let seg = seg.clone();
        blocking("the zero check", move || source.data_ranges(seg)).await??
    };
    let zeros_from = data
        .last()
        .map_or(seg.start, |r| r.end.clamp(seg.start, seg.end));
    plan.tail_zeros = (zeros_from < seg.end).then_some(zeros_from);
    Ok(())
}

/// The offset of a chunk of the disk's last segment, reused from its
/// parent node, that lies wholly in the zeros the disk reads to its end
/// (`plan.tail_zeros`), if any: a write the source did not report (a
/// shrink and a regrow within the segment). The node is the one the
/// parent check kept; one it found unsound made the segment a full read,
/// and one past its memory bound is fetched here.
pub(super) async fn zeroed_tail(
    repo: &Repository,
    plan: &DiskPlan,
    segment_size: u64,
    size: u64,
) -> Result<Option<u64>> {
    let (Some(zeros_from), Some((last, node))) = (plan.tail_zeros, reused_last(plan)) else {
        return Ok(None);
    };
    let node = match plan.parent_nodes.get(&node) {
        Some(n) => n.clone(),
        None => match repo.load_node(&node).await {
            Ok(n) => Arc::new(n),
            Err(e) if e.is_damage() => return Ok(Some(last * segment_size)),
            Err(e) => return Err(e),
        },
    };
    let mut at = last * segment_size;
    for e in &node.entries {
        let end = at.saturating_add(e.len());
        if e.1.is_some() && at >= zeros_from && end <= size {
            return Ok(Some(at));
        }
        at = end;
    }
    Ok(None)
}

/// Whether any of the sorted, disjoint `ranges` overlaps `r`.
fn intersects(ranges: &[Range<u64>], r: &Range<u64>) -> bool {
    let i = ranges.partition_point(|x| x.end <= r.start);
    ranges.get(i).is_some_and(|x| x.start < r.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_with_sorted_ranges() {
        let ranges = vec![10..20, 30..40];
        assert!(!intersects(&ranges, &(0..10)));
        assert!(intersects(&ranges, &(0..11)));
        assert!(!intersects(&ranges, &(20..30)));
        assert!(intersects(&ranges, &(39..50)));
        assert!(!intersects(&ranges, &(40..50)));
        assert!(!intersects(&[], &(0..50)));
    }
}
