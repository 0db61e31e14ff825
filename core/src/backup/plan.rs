//! What a backup does with each segment of a disk, decided before any data
//! is read: reuse the parent's node, re-chunk around changes, or read the
//! whole segment.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::changes::ExtentSet;
use crate::id::ObjectId;
use crate::manifest::DiskManifest;
use crate::node::{Entry, Node};

/// Where a disk's change information comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    /// Read everything (also what happens without a parent).
    FullScan,
    /// The union of extent files (one per cluster node, say).
    Extents(Vec<PathBuf>),
    /// Compare the previous snapshot image with the new one.
    Base(PathBuf),
    /// The union of QEMU dirty bitmaps read over NBD: from the disk's own
    /// export, or from other nodes' exports of the same shared disk.
    Bitmaps(Vec<BitmapRef>),
}

/// A dirty bitmap: its name, and the NBD export it is read from (`None`:
/// the disk's own export).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitmapRef {
    pub name: String,
    pub uri: Option<String>,
    /// A checkpoint xfull created (`--qmp`): usable only if the parent
    /// point recorded it as its checkpoint, i.e. it starts at the parent.
    pub checkpoint: bool,
}

impl std::fmt::Display for BitmapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.uri {
            Some(u) => write!(f, "{}@{u}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One segment's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentPlan {
    /// Unchanged: the parent's node (or zero segment), not read.
    Reuse(Option<ObjectId>),
    /// Re-chunk around these segment-relative changes; the parent's segment
    /// held `parent_len` bytes.
    Touched {
        parent: Option<ObjectId>,
        parent_len: u64,
        changes: Vec<Range<u64>>,
        /// Also read the whole segment and check that re-chunking around
        /// the changes gives the same chunks (see [`super::audit`]).
        audit: bool,
    },
    /// Read and chunk the whole segment (dedup against `parent` if any).
    Full(Option<ObjectId>),
}

impl SegmentPlan {
    /// Reused unread from a parent node (not a zero segment).
    pub fn reuses_node(&self) -> bool {
        matches!(self, SegmentPlan::Reuse(Some(_)))
    }
}

/// The plan for a whole disk.
#[derive(Clone, Debug)]
pub struct DiskPlan {
    pub segments: Vec<SegmentPlan>,
    /// Bytes the change source reported changed (with a grown disk's tail).
    pub reported: Option<u64>,
    /// Data bytes of the parent nodes the plan relies on, noted when the
    /// parent check fetched them: a reused segment is not read, yet its
    /// data belongs to the new point's statistics.
    pub parent_data: HashMap<ObjectId, u64>,
    /// The parent nodes of touched segments, as the parent check fetched
    /// and verified them, so that the workers re-chunking those segments
    /// need not fetch them again (see [`PARENT_NODES_KEPT`]).
    pub parent_nodes: HashMap<ObjectId, Arc<Node>>,
    /// Data bytes of all reused segments together, when the parent check
    /// worked them out from the parent's statistics instead of fetching
    /// every reused node (see [`super::parent_check`]); `parent_data` then
    /// holds only the nodes it fetched.
    pub reused_data: Option<u64>,
    /// Reused segments to read whole and check against the parent's node
    /// first (ascending; see [`super::audit`]).
    pub audit_reused: Vec<usize>,
    /// Where the disk reads zeros from to its end (the segment and the
    /// offset), when that is inside a reused segment (noted by
    /// [`super::zero_check::note_tail`]): the parent check fetches and
    /// keeps that segment's node, which the zero check then holds against
    /// those zeros.
    pub tail_zeros: Option<(usize, u64)>,
}

/// At most this many node entries are kept for the workers (about 40
/// bytes each: 40 MiB); the nodes of touched segments past it are fetched
/// again by the worker. A bound, not a budget: at 5% change a 2 TiB disk
/// touches about 6,500 segments of ~130 entries, under 1 M.
pub const PARENT_NODES_KEPT: usize = 1 << 20;

impl DiskPlan {
    /// Every segment read in full, deduplicated against `parent`'s nodes at
    /// the same index when there is one.
    pub fn full(size: u64, segment_size: u64, parent: Option<&DiskManifest>) -> DiskPlan {
        let n = DiskManifest::expected_segments(size, segment_size);
        let segments = (0..n)
            .map(|i| SegmentPlan::Full(parent.and_then(|p| p.segments.get(i).copied().flatten())))
            .collect();
        DiskPlan {
            segments,
            reported: None,
            parent_data: HashMap::new(),
            parent_nodes: HashMap::new(),
            reused_data: None,
            audit_reused: Vec::new(),
            tail_zeros: None,
        }
    }

    /// Segments that `changes` does not touch reuse the parent's; the rest
    /// are re-chunked around the changes. A grown disk's new tail counts as
    /// changed; segments past the parent's end are read in full.
    pub fn incremental(size: u64, parent: &DiskManifest, changes: &ExtentSet) -> DiskPlan {
        let seg = parent.segment_size;
        let mut changes = changes.clone();
        if size > parent.size {
            changes.insert(parent.size..size);
        }
        let n = DiskManifest::expected_segments(size, seg);
        let segments = (0..n)
            .map(|i| {
                let start = i as u64 * seg;
                let range = start..(start + seg).min(size);
                if i >= parent.segments.len() {
                    return SegmentPlan::Full(None);
                }
                let old = parent.segment_range(i);
                let parent_len = old.end - old.start;
                let within = changes.within(range.clone());
                if within.is_empty() && parent_len == range.end - range.start {
                    SegmentPlan::Reuse(parent.segments[i])
                } else {
                    SegmentPlan::Touched {
                        parent: parent.segments[i],
                        parent_len,
                        changes: within,
                        audit: false,
                    }
                }
            })
            .collect();
        DiskPlan {
            segments,
            reported: Some(changes.bytes()),
            parent_data: HashMap::new(),
            parent_nodes: HashMap::new(),
            reused_data: None,
            audit_reused: Vec::new(),
            tail_zeros: None,
        }
    }

    /// Indices of the segments the plan re-chunks around changes.
    pub fn touched(&self) -> Vec<usize> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, SegmentPlan::Touched { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    /// Indices of the segments the plan reuses unread.
    pub fn reused(&self) -> Vec<usize> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, SegmentPlan::Reuse(_)))
            .map(|(i, _)| i)
            .collect()
    }
}

/// Data bytes of a segment's entries: the length of its chunks, zero runs
/// left out (what `BackupStats::bytes_data` counts).
pub fn data_bytes(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.1.is_some())
        .map(Entry::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BackupStats;

    fn parent(size: u64) -> DiskManifest {
        let seg = 1 << 20;
        DiskManifest {
            name: "d".parse().unwrap(),
            size,
            segment_size: seg,
            segments: (0..size.div_ceil(seg))
                .map(|i| Some(ObjectId::of(&i.to_le_bytes())))
                .collect(),
            last_data: Vec::new(),
            source: "full-scan".into(),
            stats: BackupStats::default(),
            parent: None,
            audit: None,
            checkpoint: None,
            lock_generation: None,
        }
    }

    #[test]
    fn untouched_segments_are_reused_and_growth_is_a_change() {
        let p = parent(3 << 20);
        let changes = ExtentSet::from_ranges(vec![(1 << 20) + 5..(1 << 20) + 10]);
        let plan = DiskPlan::incremental(3 << 20, &p, &changes);
        assert_eq!(plan.segments[0], SegmentPlan::Reuse(p.segments[0]));
        assert!(
            matches!(&plan.segments[1], SegmentPlan::Touched { changes, .. } if changes == &vec![5..10])
        );
        assert_eq!(plan.reused(), vec![0, 2]);
        assert_eq!(plan.reported, Some(5));

        // Grown by 1.5 segments: the old last segment is touched, the new one read.
        let plan = DiskPlan::incremental((4 << 20) + (1 << 19), &p, &ExtentSet::new());
        assert_eq!(plan.reused(), vec![0, 1, 2]);
        assert_eq!(plan.segments[3], SegmentPlan::Full(None));
        assert_eq!(plan.segments[4], SegmentPlan::Full(None));
        // Shrunk into the middle of a segment: that segment is re-chunked.
        let plan = DiskPlan::incremental((2 << 20) + 7, &p, &ExtentSet::new());
        assert_eq!(plan.segments.len(), 3);
        assert!(
            matches!(&plan.segments[2], SegmentPlan::Touched { parent_len, changes, .. }
            if *parent_len == 1 << 20 && changes.is_empty())
        );
    }
}
