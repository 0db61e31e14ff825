//! The byte ranges that differ between two points' disks, from metadata
//! alone (manifests and nodes; no chunk is read).
//!
//! Two ranges are equal when both are zero runs, or both lie in the same
//! chunk at the same offset. Anything else counts as different, so the
//! result may over-report (a chunk re-cut elsewhere with equal bytes) but
//! never misses a difference: it is safe to use as a change source.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};

use crate::changes::ExtentSet;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::manifest::{DiskManifest, Manifest};
use crate::repo::Repository;

/// One stretch of a disk: a chunk (by id) or zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    start: u64,
    end: u64,
    chunk: Option<ObjectId>,
}

/// The extents of disk `b` whose bytes differ from disk `a`'s: a change
/// set for `b`'s image. Past `a`'s end all of `b` counts (a grown disk's
/// new tail); a shrunk disk's removed tail, past `b`'s end, is no range
/// of `b`'s image (and `backup --changed` refuses extents past the
/// disk's end), so it is not among them: the caller, who has both
/// sizes, says the disk shrank.
pub async fn diff_disks(
    repo: &Repository,
    a: &DiskManifest,
    b: &DiskManifest,
) -> Result<ExtentSet> {
    // Disks of one repository are cut in its segment size (a manifest
    // that says otherwise does not load: `manifest::limits::check`), so
    // segment i is the same stretch of both. Across two sizes, equal
    // node ids would say nothing and a chunk of one would cross the
    // other's segment starts, where pieces are clipped and their starts
    // compared: refused rather than answered wrongly.
    if a.segment_size != b.segment_size {
        return Err(Error::Internal(format!(
            "disks {} and {} are cut into segments of {} and {} bytes: \
             diff compares disks of one repository",
            a.name, b.name, a.segment_size, b.segment_size
        )));
    }
    let seg = a.segment_size;
    let common = a.size.min(b.size);
    let mut ranges = Vec::new();
    if b.size > common {
        ranges.push(common..b.size);
    }
    // Segment pairs whose node ids are equal are equal: no node is read.
    let work: Vec<usize> = (0..common.div_ceil(seg) as usize)
        .filter(|&i| {
            a.segments.get(i) != b.segments.get(i) || a.segment_range(i) != b.segment_range(i)
        })
        .collect();
    let found: Vec<Vec<Range<u64>>> = futures::stream::iter(work)
        .map(|i| async move {
            // A window starts at a segment start, so no piece of either
            // disk crosses it: clipped starts are true starts.
            let start = i as u64 * seg;
            let window = start..(start + seg).min(common);
            let pa = pieces(repo, a, window.clone()).await?;
            let pb = pieces(repo, b, window).await?;
            Ok::<_, Error>(differing(&pa, &pb))
        })
        .buffered(8)
        .try_collect()
        .await?;
    ranges.extend(found.into_iter().flatten());
    Ok(ExtentSet::from_ranges(ranges))
}

/// Damage `e` met while comparing points `a` and `b`, told as the point
/// removed when one of them is gone now: diff holds no lease, so a gc
/// sweeping a point forgotten meanwhile deletes the nodes it reads, and
/// that is no damage (review, stop 56: it exited 3). Restore and verify
/// tell it the same way.
pub async fn removed_or(repo: &Repository, points: [&Manifest; 2], e: Error) -> Error {
    if !e.is_damage() {
        return e;
    }
    for m in points {
        if matches!(repo.point_gone(&m.vm, &m.id).await, Ok(true)) {
            return Error::PointRemoved {
                point: m.point_name(),
            };
        }
    }
    e
}

/// The pieces of `d` that overlap `window`, clipped to it.
async fn pieces(repo: &Repository, d: &DiskManifest, window: Range<u64>) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let first = (window.start / d.segment_size) as usize;
    let last = (window.end.saturating_sub(1) / d.segment_size) as usize;
    for i in first..=last.min(d.segments.len().saturating_sub(1)) {
        let seg = d.segment_range(i);
        let mut off = seg.start;
        match d.segments[i] {
            None => out.push(Piece {
                start: seg.start,
                end: seg.end,
                chunk: None,
            }),
            Some(id) => {
                // As restore reads it: a node shorter than its segment
                // left the rest uncompared, called equal (review 93).
                let node = repo.load_segment_node(&id, seg.end - seg.start).await?;
                for e in node.entries {
                    out.push(Piece {
                        start: off,
                        end: off + e.len(),
                        chunk: e.chunk(),
                    });
                    off += e.len();
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .filter(|p| p.end > window.start && p.start < window.end)
        .map(|p| Piece {
            start: p.start.max(window.start),
            end: p.end.min(window.end),
            ..p
        })
        .collect())
}

/// Walks both piece lists together and collects where they differ.
fn differing(a: &[Piece], b: &[Piece]) -> Vec<Range<u64>> {
    let (mut i, mut j) = (0, 0);
    let mut out: Vec<Range<u64>> = Vec::new();
    while i < a.len() && j < b.len() {
        let (pa, pb) = (a[i], b[j]);
        let start = pa.start.max(pb.start);
        let end = pa.end.min(pb.end);
        let equal = match (pa.chunk, pb.chunk) {
            (None, None) => true,
            (Some(x), Some(y)) => x == y && pa.start == pb.start,
            _ => false,
        };
        if !equal && start < end {
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        if pa.end <= pb.end {
            i += 1;
        }
        if pb.end <= pa.end {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
