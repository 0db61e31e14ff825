//! A disk's plaintext a part at a time, for readers other than a
//! restore (a served point): the same fetching and verification a
//! restore does (`segment.rs`, `part.rs`), damage going on as listed
//! ranges instead of stopping. Readers depend on this module only, not on
//! how chunks are stored.
//!
//! Why parts, not segments: a 4 KiB read of a served 64 MiB segment
//! would decompress 64 MiB and keep it in the cache. Parts are at most
//! 16 MiB, aligned, and a segment's node is fetched once for all of them
//! while it stays among the last few read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::DamagedRange;
use super::part::{SegmentNode, part_size};
use super::segment::{BufferPool, Piece, SegmentCtx};
use crate::error::Result;
use crate::id::ObjectId;
use crate::manifest::DiskManifest;
use crate::node::Entry;
use crate::placement::lookup::ChunkIndex;
use crate::progress::Progress;
use crate::repo::Repository;

/// Nodes kept by a reader, most recently asked last.
const NODES_KEPT: usize = 16;
/// Entries kept for block status apart from the nodes reads keep: one
/// request's worth (`serve::disk` asks for up to 64 segments at once), so
/// that a writable overlay's gaps, each a question of its own, and the
/// requests that follow over the same segments fetch each node once. A
/// 64 MiB segment's entries are about 40 KiB: 2.5 MiB per disk at most.
const ENTRIES_KEPT: usize = 64;

/// The plaintext of one part of a disk.
#[derive(Debug)]
pub struct PartData {
    /// The part's bytes; `None` when it reads as zeros throughout.
    pub data: Option<Vec<u8>>,
    /// The part's share of its node's entries, covering the part exactly
    /// (zero runs have no chunk); empty for a part that reads as zeros.
    pub entries: Vec<Entry>,
    /// Ranges (disk offsets) whose chunk or node is damaged or missing:
    /// zeros in `data`, never to be served as data.
    pub damaged: Vec<DamagedRange>,
}

/// A segment's value (its node, or its entries), fetched once for all who
/// ask while it is kept.
type Cell<T> = Arc<OnceCell<Arc<T>>>;
/// Cells of the segments asked for last (segment, cell), most recent last.
type Recent<T> = Mutex<VecDeque<(usize, Cell<T>)>>;

/// Reads parts of one disk of one point.
pub struct PartReader {
    ctx: Arc<SegmentCtx>,
    /// Nodes of the segments read last.
    nodes: Recent<SegmentNode>,
    /// Entries of the segments block status asked for last (those of
    /// sound nodes only).
    entries: Recent<Vec<Entry>>,
}

impl std::fmt::Debug for PartReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartReader")
            .field("point", &self.ctx.point)
            .field("disk", &self.ctx.d.name)
            .finish()
    }
}

impl PartReader {
    /// For disk `d` of point `point` (`VM@ID`, as errors name it).
    pub fn new(
        repo: &Repository,
        index: Arc<ChunkIndex>,
        point: &str,
        d: Arc<DiskManifest>,
    ) -> PartReader {
        // Read only, never written: the allocator maps it lazily.
        let zeros = Arc::new(vec![0u8; part_size(d.segment_size) as usize]);
        PartReader {
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
            nodes: Mutex::default(),
            entries: Mutex::default(),
        }
    }

    /// The part size: parts tile the disk, `part_size` bytes each (the
    /// last may be shorter), and none crosses a segment.
    pub fn part_size(&self) -> u64 {
        part_size(self.ctx.d.segment_size)
    }

    /// How many parts the disk has.
    pub fn parts(&self) -> usize {
        self.ctx.d.size.div_ceil(self.part_size()) as usize
    }

    /// The bytes of the disk part `k` holds (empty past the end).
    pub fn part_range(&self, k: usize) -> std::ops::Range<u64> {
        let (unit, size) = (self.part_size(), self.ctx.d.size);
        let start = (k as u64 * unit).min(size);
        start..(start + unit).min(size)
    }

    /// Part `k` (bytes `k * part_size()` on), every chunk verified
    /// against its id. Damage comes back as ranges (a damaged node's
    /// range is its whole segment); a store that fails or refuses (not
    /// damage) is an error for the whole part.
    pub async fn read_part(&self, k: usize) -> Result<PartData> {
        let at = self.part_range(k);
        if at.is_empty() {
            return Err(crate::error::Error::Internal(format!(
                "part {k} is past the end of disk {}",
                self.ctx.d.name
            )));
        }
        let i = (at.start / self.ctx.d.segment_size) as usize;
        let j = ((at.start - self.ctx.d.segment_range(i).start) / self.part_size()) as usize;
        let node = self.node(i).await?;
        let part = self
            .ctx
            .part_of(i, &node, j)
            .ok_or_else(|| crate::error::Error::Internal(format!("segment {i} has no part {j}")))?;
        let seg = self.ctx.clone().restore_part(part).await?;
        let (data, entries) = match seg.piece {
            Piece::Zeros { .. } => (None, Vec::new()),
            Piece::Data { buf, entries, .. } => (Some(buf), entries),
        };
        Ok(PartData {
            data,
            entries,
            damaged: seg.damaged,
        })
    }

    /// The entries of segment `i`'s node, without reading its chunks
    /// (empty for a segment stored as zeros). A node kept for reads is
    /// used; one fetched here goes to a cache of its own
    /// ([`ENTRIES_KEPT`]): a block-status request looks at up to 64
    /// segments, which would push out the nodes reads use.
    pub async fn entries(&self, i: usize) -> Result<Vec<Entry>> {
        let Some(id) = self.ctx.d.segments[i] else {
            return Ok(Vec::new());
        };
        let kept = {
            let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            nodes
                .iter()
                .find(|(s, _)| *s == i)
                .and_then(|(_, cell)| cell.get().cloned())
        };
        let Some(node) = kept else {
            return Ok(self.status_entries(i, id).await?.to_vec());
        };
        match node.damaged.first() {
            Some(r) => Err(crate::error::Error::Corrupt {
                key: crate::keys::node(&id),
                reason: r.reason.clone(),
            }),
            None => Ok(node.entries.clone()),
        }
    }

    /// Segment `i`'s entries (node `id`) from the block-status cache, or
    /// fetched and kept there. Questions at once share the fetch; a
    /// failed one is not kept: the next question asks the store again.
    async fn status_entries(&self, i: usize, id: ObjectId) -> Result<Arc<Vec<Entry>>> {
        let cell = recent(&self.entries, i, ENTRIES_KEPT);
        let entries = cell
            .get_or_try_init(|| async {
                let r = self.ctx.d.segment_range(i);
                self.ctx.entries(id, r.end - r.start).await.map(Arc::new)
            })
            .await?;
        Ok(entries.clone())
    }

    /// Segment `i`'s node: one fetch for every part of the segment while
    /// it is among the last [`NODES_KEPT`] asked for.
    /// Readers asking at once share the fetch; a failed one is not kept.
    async fn node(&self, i: usize) -> Result<Arc<SegmentNode>> {
        let cell = recent(&self.nodes, i, NODES_KEPT);
        let node = cell
            .get_or_try_init(|| async { self.ctx.node_of(i).await.map(Arc::new) })
            .await?;
        Ok(node.clone())
    }
}

/// The cell of segment `i` in `list` (most recently asked last), made
/// most recent, or a new empty one added (the oldest pushed out beyond
/// `cap`): a fetch sets it once for every reader while it is kept.
fn recent<T>(list: &Recent<T>, i: usize, cap: usize) -> Cell<T> {
    let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
    match list.iter().position(|(s, _)| *s == i) {
        Some(p) => {
            let kept = list.remove(p).expect("found");
            list.push_back(kept);
        }
        None => {
            if list.len() == cap {
                list.pop_front();
            }
            list.push_back((i, Cell::default()));
        }
    }
    list.back().expect("pushed").1.clone()
}
