//! What a worker makes of one segment: its upload jobs.
//!
//! A segment read whole gives one job (its new chunks and its node). A
//! segment larger than a window is read window by window
//! (`super::super::scan`): each window's new chunks go out as a partial
//! job as soon as they are compressed, and the node follows in the last
//! job, so a worker holds one window, not one segment.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use super::Shared;
use crate::backup::audit::verify_kept;
use crate::backup::incremental::rechunk_within;
use crate::backup::plan::data_bytes;
use crate::backup::scan::{Piece, WindowBuf, scan_source, window};
use crate::backup::segment::chunk_segment_in;
use crate::backup::upload::UploadJob;
use crate::chunker::Known;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::BackupStats;
use crate::node::{Entry, Node};
use crate::placement::session::Found;

/// The session's "already handled" set is forgotten past this many ids
/// (about 50 MB): it only saves work, create-only puts keep it correct.
const SEEN_CAP: usize = 1 << 20;

/// A worker: the shared state, its window buffer, and where its jobs go
/// (`send(job, bytes of the disk it completes)`).
pub(super) struct Worker<'a, S: FnMut(UploadJob, u64) -> Result<()>> {
    pub shared: &'a Shared,
    pub wb: WindowBuf,
    pub send: S,
}

/// A segment reused unread. The point holds its data all the same, so its
/// data bytes count in the point's statistics (taken from the parent's
/// node, which the parent check fetched, or fetched here if it did not);
/// nothing of it is read, changed or stored.
pub(super) fn reused_job(
    shared: &Shared,
    idx: usize,
    node: Option<ObjectId>,
    data: Option<u64>,
) -> Result<UploadJob> {
    let bytes_data = match (node, data) {
        (None, _) => 0,
        (Some(_), Some(d)) => d,
        (Some(id), None) => {
            data_bytes(&shared.runtime.block_on(shared.repo.load_node(&id))?.entries)
        }
    };
    let stats = BackupStats {
        bytes_data,
        ..BackupStats::default()
    };
    Ok(UploadJob::unchanged(idx, node, stats))
}

/// A segment to re-chunk.
pub(super) struct Touched {
    pub idx: usize,
    pub parent: Option<ObjectId>,
    pub checked: Option<Arc<Node>>,
    pub parent_len: u64,
    pub len: u64,
}

impl Touched {
    /// The parent's node for this segment (chunks of zeros for a zero
    /// segment). The parent's entries are the starting point, so a damaged
    /// parent node cannot be worked around here: the backup fails.
    fn parent_node(&self, shared: &Shared) -> Result<Arc<Node>> {
        if let Some(n) = &self.checked {
            return Ok(n.clone());
        }
        match self.parent {
            Some(pid) => Ok(Arc::new(
                shared.runtime.block_on(shared.repo.load_node(&pid))?,
            )),
            // All hole: the chunker cuts it without reading but the last
            // maximum chunk, so the zeroed (untouched) buffer costs no
            // memory traffic.
            None => Ok(Arc::new(Node {
                entries: chunk_segment_in(
                    &shared.repo.config().chunking,
                    shared.repo.codec(),
                    &vec![0u8; self.parent_len as usize],
                    &Known::Data(&[]),
                )
                .entries,
            })),
        }
    }
}

impl<S: FnMut(UploadJob, u64) -> Result<()>> Worker<'_, S> {
    /// Re-chunks a segment around its changes, reading only near them;
    /// its new chunks leave a window's worth at a time. `audit`: then
    /// also read the rest and check that it holds the parent's chunks
    /// the re-chunking kept, cut where they were ([`verify_kept`]): if
    /// not, the change source missed a write in this segment.
    pub fn touched(&mut self, t: &Touched, changes: &[Range<u64>], audit: bool) -> Result<()> {
        let shared = self.shared;
        let cfg = shared.repo.config();
        let parent_node = t.parent_node(shared)?;
        let start = t.idx as u64 * cfg.segment_size;
        // New chunks past a window's worth leave as partial jobs (the
        // node follows in the last), so memory stays one window.
        let known: HashSet<ObjectId> = parent_node.chunk_ids().collect();
        let send = &mut self.send;
        let mut r = rechunk_within(
            &cfg.chunking,
            shared.repo.codec(),
            &parent_node.entries,
            t.len,
            changes,
            window(&cfg.chunking),
            |off, buf| shared.source.read_at(start + off, buf),
            |entries, batch| {
                if shared.failure.aborted() {
                    return Err(Error::Internal("the backup stopped".into()));
                }
                let of_batch: Vec<Entry> = batch.iter().map(|(i, _)| entries[*i]).collect();
                let mut stats = BackupStats::default();
                let d = |k: usize| batch.get(k).map(|(_, b)| &b[..]);
                let chunks = select(shared, &of_batch, d, &known, &mut stats)?;
                send(UploadJob::part(t.idx, chunks, stats), 0)
            },
        )?;
        let fresh: HashMap<usize, &[u8]> = r.fresh.iter().map(|(i, d)| (*i, &d[..])).collect();
        if audit {
            let (codec, params) = (shared.repo.codec(), &cfg.chunking);
            r.bytes_read += verify_kept(&shared.source, codec, params, start, &r.entries, &r.kept)?;
        }
        let job = build_job(
            shared,
            t.idx,
            &r.entries,
            |i| fresh.get(&i).copied(),
            t.parent,
            Some(&parent_node),
            r.bytes_read,
        )?;
        (self.send)(job, t.len)
    }

    /// A segment the change source calls unchanged, read whole and
    /// checked against the parent's node `node` (`checked` if the parent
    /// check kept it) before it is reused
    /// ([`crate::backup::audit::check_reused`]). `data`: its data bytes
    /// as the plan counts them, if it does.
    pub fn audit_reused(
        &mut self,
        idx: usize,
        node: Option<ObjectId>,
        checked: Option<Arc<Node>>,
        data: Option<u64>,
    ) -> Result<()> {
        let shared = self.shared;
        let cfg = shared.repo.config();
        let start = idx as u64 * cfg.segment_size;
        let len = cfg.segment_size.min(shared.source.size() - start);
        // Not kept (over the check's budget): fetched here, and then one
        // found unsound fails the backup rather than be reused.
        let parent = match (node, checked) {
            (_, Some(n)) => Some(n),
            (Some(id), None) => Some(Arc::new(
                shared.runtime.block_on(shared.repo.load_node(&id))?,
            )),
            (None, None) => None,
        };
        let checked = crate::backup::audit::check_reused(
            &shared.source,
            shared.repo.codec(),
            start,
            len as usize,
            parent.as_deref(),
        )?;
        let stats = BackupStats {
            bytes_data: data.unwrap_or(checked.data),
            bytes_read: checked.read,
            ..BackupStats::default()
        };
        (self.send)(UploadJob::unchanged(idx, node, stats), len)
    }

    /// A full read of segment `idx` (its data ranges `data` if known,
    /// segment-relative), deduplicated against `parent` (whose node is
    /// `parent_node` if fetched). `read`: bytes already read for it.
    pub fn full(
        &mut self,
        idx: usize,
        data: Option<Vec<Range<usize>>>,
        parent: Option<ObjectId>,
        parent_node: Option<Arc<Node>>,
        read: u64,
    ) -> Result<()> {
        let shared = self.shared;
        let cfg = shared.repo.config();
        let start = idx as u64 * cfg.segment_size;
        let len = cfg.segment_size.min(shared.source.size() - start) as usize;
        let step = window(&cfg.chunking);
        if len <= step {
            // One window: chunked whole, and deduplicated against the
            // parent's node only if it differs (an unchanged segment
            // fetches nothing).
            let mut job = None;
            scan_segment(&mut self.wb, shared, start, len, data, |p| {
                let d = |i: usize| piece_data(&p, i);
                job = Some(build_job(
                    shared,
                    idx,
                    &p.chunks.entries,
                    d,
                    parent,
                    parent_node.as_deref(),
                    read + p.read,
                )?);
                Ok(())
            })?;
            let job = job.ok_or_else(|| Error::Internal("a segment scan gave no window".into()))?;
            return (self.send)(job, len as u64);
        }
        // Several windows: each is dropped before the node's id is known,
        // so the parent's chunks (what need not be stored) come from its
        // node, fetched first. A damaged parent node only costs dedup.
        let parent_node = match (parent_node, parent) {
            (Some(n), _) => Some(n),
            (None, Some(pid)) => shared
                .runtime
                .block_on(shared.repo.load_node(&pid))
                .ok()
                .map(Arc::new),
            (None, None) => None,
        };
        let known: HashSet<ObjectId> = parent_node.iter().flat_map(|n| n.chunk_ids()).collect();
        let mut entries = Vec::new();
        let mut first_read = read;
        let send = &mut self.send;
        scan_segment(&mut self.wb, shared, start, len, data, |p| {
            // Another stage failed: stop reading this segment (the
            // first failure is the one reported).
            if shared.failure.aborted() {
                return Err(Error::Internal("the backup stopped".into()));
            }
            let mut stats = BackupStats {
                bytes_read: std::mem::take(&mut first_read) + p.read,
                ..BackupStats::default()
            };
            let d = |i: usize| piece_data(&p, i);
            let chunks = select(shared, &p.chunks.entries, d, &known, &mut stats)?;
            entries.extend_from_slice(&p.chunks.entries);
            send(UploadJob::part(idx, chunks, stats), p.covered)
        })?;
        let stats = BackupStats {
            bytes_data: data_bytes(&entries),
            ..BackupStats::default()
        };
        let job = if crate::node::all_zero(&entries) {
            UploadJob::unchanged(idx, None, stats)
        } else {
            let mark = Node::last_data_mark(&entries);
            let node = Node { entries }.to_plain(shared.repo.codec())?;
            finish(shared, idx, node, parent, Vec::new(), stats, mark)
        };
        // Every byte was reported done with its window.
        (self.send)(job, 0)
    }
}

/// Reads the segment at `start` (`len` bytes) of the disk in windows,
/// chunked with the repository's parameters (see `scan_source`).
fn scan_segment(
    wb: &mut WindowBuf,
    shared: &Shared,
    start: u64,
    len: usize,
    data: Option<Vec<Range<usize>>>,
    each: impl FnMut(Piece<'_>) -> Result<()>,
) -> Result<()> {
    let (source, repo) = (&shared.source, &shared.repo);
    scan_source(
        wb,
        source,
        &repo.config().chunking,
        repo.codec(),
        start,
        len,
        data,
        each,
    )
}

/// The bytes of chunk `i` of a window.
fn piece_data<'a>(p: &Piece<'a>, i: usize) -> Option<&'a [u8]> {
    let off = p.chunks.offsets[i];
    Some(&p.data[off..off + p.chunks.entries[i].len() as usize])
}

/// Turns a segment's entries into an upload job: the node, and the new
/// chunks (those `data` has bytes for that the parent's node does not list
/// and this session has not handled), compressed.
fn build_job<'a>(
    shared: &Shared,
    idx: usize,
    entries: &[Entry],
    data: impl Fn(usize) -> Option<&'a [u8]>,
    parent: Option<ObjectId>,
    parent_node: Option<&Node>,
    read: u64,
) -> Result<UploadJob> {
    let mut stats = BackupStats {
        bytes_read: read,
        bytes_data: data_bytes(entries),
        ..BackupStats::default()
    };
    if crate::node::all_zero(entries) {
        return Ok(UploadJob::unchanged(idx, None, stats));
    }
    let node = Node {
        entries: entries.to_vec(),
    };
    let (node_id, plain) = node.to_plain(shared.repo.codec())?;
    // Same chunks as the parent at this place: nothing to store, unless
    // the backup knows something of them is missing or damaged.
    let unchanged = parent == Some(node_id);
    let known: HashSet<ObjectId> = match (unchanged, parent_node, parent) {
        (true, _, _) => node.chunk_ids().collect(),
        (false, Some(n), _) => n.chunk_ids().collect(),
        // A damaged parent node only costs dedup: its chunks are then
        // uploaded (create-only) instead of assumed present.
        (false, None, Some(pid)) => shared
            .runtime
            .block_on(shared.repo.load_node(&pid))
            .map(|n| n.chunk_ids().collect())
            .unwrap_or_default(),
        (false, None, None) => HashSet::new(),
    };
    let chunks = select(shared, &node.entries, data, &known, &mut stats)?;
    let mark = Node::last_data_mark(entries);
    Ok(finish(
        shared,
        idx,
        (node_id, plain),
        parent,
        chunks,
        stats,
        mark,
    ))
}

/// A new chunk ready to store: id, plain length, stored bytes, and
/// whether it replaces a damaged copy.
type NewChunk = (ObjectId, usize, bytes::Bytes, bool);

/// The chunks of `entries` (those `data` has bytes for) that must be
/// stored, compressed: not in the parent's node (`known`) or known lost
/// there, not handled by this session, and not found in the repository.
fn select<'a>(
    shared: &Shared,
    entries: &[Entry],
    data: impl Fn(usize) -> Option<&'a [u8]>,
    known: &HashSet<ObjectId>,
    stats: &mut BackupStats,
) -> Result<Vec<NewChunk>> {
    let trust = &shared.trust;
    // Chunks this segment has bytes for and must make sure are stored:
    // (entry, whether it must be stored anew over a lost or damaged copy).
    let mut todo: Vec<(usize, ObjectId, bool)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let (Some(id), Some(_)) = (entry.1, data(i)) else {
            continue;
        };
        let from_parent = known.contains(&id);
        if from_parent && trust.has_chunk(&id) {
            continue;
        }
        if !from_parent {
            stats.bytes_changed += entry.len();
        }
        let fresh = {
            let mut seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= SEEN_CAP {
                seen.clear();
            }
            seen.insert(id)
        };
        if fresh {
            // A chunk the backup cannot trust (damaged, or missing from the
            // listing of a full scan: a parent's, or any when the parent's
            // node could not be read) is stored anew, not looked up: the
            // index may still name its lost copy. (What a lookup finds is
            // checked again before the point is committed, but that costs
            // reading the segment again.)
            let anew = !trust.has_chunk(&id);
            todo.push((i, id, anew));
            if from_parent {
                stats.objects_restored += 1;
            }
        }
    }
    // Dedup before compressing: one batched lookup for the new ones.
    let asked: Vec<ObjectId> = todo.iter().filter(|t| !t.2).map(|t| t.1).collect();
    let found = if asked.is_empty() {
        Vec::new()
    } else {
        shared.runtime.block_on(shared.packs.find(&asked))?
    };
    let mut found = found.into_iter();
    let mut chunks = Vec::new();
    let mut reused = Vec::new();
    let level = shared.repo.config().zstd_level;
    for (i, id, anew) in todo {
        if !anew {
            match found.next() {
                Some(Found::Own) => continue,
                Some(Found::In(pack)) => {
                    reused.push(ObjectRef::Pack(pack));
                    continue;
                }
                Some(Found::New) | None => {}
            }
        }
        let piece = data(i).unwrap_or_default();
        let blob = shared.repo.chunks().encode_chunk(&id, piece, level)?;
        chunks.push((id, piece.len(), blob, trust.damaged_chunks.contains(&id)));
    }
    if !reused.is_empty() {
        reused.sort_unstable();
        reused.dedup();
        let mut existed = shared.existed.lock().unwrap_or_else(|p| p.into_inner());
        existed.extend(reused);
    }
    Ok(chunks)
}

/// The job that completes a segment of data: its node (id, plaintext) if
/// it must be stored (a new one, or the parent's that the backup knows
/// lost or damaged), with `chunks`, and its last-data `mark`.
fn finish(
    shared: &Shared,
    idx: usize,
    (node_id, plain): (ObjectId, Vec<u8>),
    parent: Option<ObjectId>,
    chunks: Vec<NewChunk>,
    mut stats: BackupStats,
    mark: u64,
) -> UploadJob {
    let unchanged = parent == Some(node_id);
    let node_needed = !unchanged || !shared.trust.has_node(&node_id);
    if unchanged && chunks.is_empty() && !node_needed {
        return UploadJob {
            mark: Some(mark),
            ..UploadJob::unchanged(idx, parent, stats)
        };
    }
    if unchanged && node_needed {
        stats.objects_restored += 1;
    }
    UploadJob {
        idx,
        segment: Some(node_id),
        node: node_needed.then_some(plain),
        chunks,
        stats,
        part: false,
        mark: Some(mark),
    }
}
