//! One segment's plaintext for readers other than a restore (a served
//! point): the same fetching and verification a restore does
//! (`segment.rs`), damage going on as listed ranges instead of stopping.
//! Readers depend on this function only, not on how chunks are stored.

use crate::placement::lookup::ChunkIndex;
use std::sync::Arc;

use super::DamagedRange;
use super::segment::{BufferPool, Piece, SegmentCtx};
use crate::error::Result;
use crate::manifest::DiskManifest;
use crate::node::Entry;
use crate::progress::Progress;
use crate::repo::Repository;

/// The plaintext of one segment.
#[derive(Debug)]
pub struct SegmentData {
    /// The segment's bytes; `None` when it reads as zeros throughout.
    pub data: Option<Vec<u8>>,
    /// The node's entries (zero runs have no chunk); empty for a segment
    /// stored as zeros.
    pub entries: Vec<Entry>,
    /// Ranges (disk offsets) whose chunk or node is damaged or missing:
    /// zeros in `data`, never to be served as data.
    pub damaged: Vec<DamagedRange>,
}

/// Reads segments of one disk of one point.
pub struct SegmentReader {
    ctx: Arc<SegmentCtx>,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("point", &self.ctx.point)
            .field("disk", &self.ctx.d.name)
            .finish()
    }
}

impl SegmentReader {
    /// For disk `d` of point `point` (`VM@ID`, as errors name it).
    pub fn new(
        repo: &Repository,
        index: Arc<ChunkIndex>,
        point: &str,
        d: Arc<DiskManifest>,
    ) -> SegmentReader {
        // Read only where a segment is all zeros, and never written: the
        // allocator maps it lazily.
        let zeros: Arc<[u8]> = vec![0u8; d.segment_size as usize].into();
        SegmentReader {
            ctx: Arc::new(SegmentCtx {
                repo: repo.clone(),
                index: std::sync::Mutex::new(index),
                zeros,
                d,
                buffers: Arc::new(BufferPool::default()),
                point: point.to_string(),
                progress: Arc::new(Progress::default()),
                image_hash: false,
                ignore_damage: true,
                found: Default::default(),
            }),
        }
    }

    /// Segment `i`, every chunk verified against its id. Damage comes
    /// back as ranges; a store that fails or refuses (not damage) is an
    /// error for the whole segment.
    pub async fn read(&self, i: usize) -> Result<SegmentData> {
        let seg = self.ctx.clone().restore_segment(i).await?;
        let (data, entries) = match seg.piece {
            Piece::Zeros { .. } => (None, Vec::new()),
            Piece::Data { buf, entries, .. } => (Some(buf), entries),
        };
        Ok(SegmentData {
            data,
            entries,
            damaged: seg.damaged,
        })
    }

    /// The entries of segment `i`'s node, without reading its chunks
    /// (empty for a segment stored as zeros).
    pub async fn entries(&self, i: usize) -> Result<Vec<Entry>> {
        let Some(id) = self.ctx.d.segments[i] else {
            return Ok(Vec::new());
        };
        let r = self.ctx.d.segment_range(i);
        self.ctx.entries(id, r.end - r.start).await
    }
}
