//! The bounded parallel pipeline that backs up one disk.
//!
//! ```text
//! reader thread --(segment buffers)--> W chunk/hash/compress threads
//!     --(upload jobs)--> async uploader: J segments at once, C puts each
//! ```
//!
//! Memory in flight is bounded by the number of segment buffers (W + 2)
//! plus the upload jobs queued or running (QUEUE + J), each at most about
//! one segment of compressed data: with 16 MiB segments and 2 cores,
//! (2 + 2 + 2 + 2) x 16 MiB = 128 MiB, whatever the disk size. A node is
//! uploaded only after all of its new chunks are stored, and the manifest
//! only after every node: a point never references what is not durable.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::incremental::rechunk;
use super::plan::{DiskPlan, SegmentPlan, data_bytes};
use super::segment::{chunk_segment, chunk_segment_in};
use super::trust::Trust;
use super::upload::{UploadJob, Uploader};
use crate::chunker::Known;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::BackupStats;
use crate::node::{Entry, Node};
use crate::placement::session::{Found, SessionPacks};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::DiskSource;

/// Upload jobs waiting between the workers and the uploader.
const QUEUE: usize = 2;
/// Segments uploading at once.
const SEGMENTS_IN_FLIGHT: usize = 2;
/// The session's "already handled" set is forgotten past this many ids
/// (about 50 MB): it only saves work, create-only puts keep it correct.
const SEEN_CAP: usize = 1 << 20;

/// What one disk's backup produced.
#[derive(Debug)]
pub struct DiskResult {
    pub segments: Vec<Option<ObjectId>>,
    pub stats: BackupStats,
    /// Objects this backup stored that were already there: it relies on
    /// them without having written them (the lease's dependencies).
    pub existed: Vec<ObjectRef>,
    /// Keys of objects stored over damaged copies (their damage records
    /// can go).
    pub replaced: Vec<String>,
}

enum Work {
    /// A whole segment read (holes as zeros), deduplicated against `parent`.
    Data {
        idx: usize,
        buf: Vec<u8>,
        /// Where the segment may hold data (segment-relative): the rest is
        /// a hole, zero in `buf` without having been read or written.
        data: Vec<Range<usize>>,
        read: u64,
        parent: Option<ObjectId>,
    },
    /// A segment that is a hole in the source.
    Hole { idx: usize },
    /// A segment taken from the parent unread, with its data bytes if
    /// the parent check noted them.
    Reuse {
        idx: usize,
        node: Option<ObjectId>,
        data: Option<u64>,
    },
    /// A segment to re-chunk around changes.
    Touched {
        idx: usize,
        parent: Option<ObjectId>,
        /// The parent's node if the parent check kept it.
        checked: Option<Arc<Node>>,
        parent_len: u64,
        changes: Vec<Range<u64>>,
        audit: bool,
    },
}

/// First failure wins; every stage checks `abort` between units of work.
#[derive(Default)]
struct Failure {
    abort: AtomicBool,
    first: Mutex<Option<Error>>,
}

impl Failure {
    fn set(&self, e: Error) {
        self.abort.store(true, Ordering::SeqCst);
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    fn take(&self) -> Option<Error> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

struct Shared {
    repo: Repository,
    /// The session's dedup lookups (the workers ask before compressing).
    packs: Arc<SessionPacks>,
    source: Arc<DiskSource>,
    seen: Mutex<HashSet<ObjectId>>,
    existed: Mutex<Vec<ObjectRef>>,
    replaced: Mutex<Vec<String>>,
    trust: Arc<Trust>,
    failure: Failure,
    progress: Arc<Progress>,
    runtime: tokio::runtime::Handle,
}

/// Backs up one disk as `plan` says. `trust` says which stored objects
/// the backup may rely on (see [`super::trust`]).
pub async fn run(
    repo: &Repository,
    source: Arc<DiskSource>,
    plan: DiskPlan,
    trust: Arc<Trust>,
    packs: Arc<SessionPacks>,
    progress: Arc<Progress>,
) -> Result<DiskResult> {
    let seg_size = repo.config().segment_size;
    let n = plan.segments.len();
    let reused_data = plan.reused_data.unwrap_or(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let disk_packs = tokio::sync::Mutex::new(packs.disk());
    let shared = Arc::new(Shared {
        repo: repo.clone(),
        packs,
        source,
        seen: Mutex::new(HashSet::new()),
        existed: Mutex::new(Vec::new()),
        replaced: Mutex::new(Vec::new()),
        trust,
        failure: Failure::default(),
        progress,
        runtime: tokio::runtime::Handle::current(),
    });

    let (pool_tx, pool_rx) = sync_channel::<Pooled>(workers + 2);
    for _ in 0..workers + 2 {
        // Allocated on first use, so small disks stay small.
        let _ = pool_tx.send((Vec::new(), Vec::new()));
    }
    let (work_tx, work_rx) = sync_channel::<Work>(1);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (job_tx, mut job_rx) = mpsc::channel::<UploadJob>(QUEUE);

    let mut threads = Vec::new();
    {
        let shared = shared.clone();
        threads.push(tokio::task::spawn_blocking(move || {
            read_segments(&shared, plan, seg_size, pool_rx, work_tx)
        }));
    }
    for _ in 0..workers {
        let (shared, work_rx, pool_tx, job_tx) = (
            shared.clone(),
            work_rx.clone(),
            pool_tx.clone(),
            job_tx.clone(),
        );
        threads.push(tokio::task::spawn_blocking(move || {
            process_segments(&shared, &work_rx, &pool_tx, &job_tx)
        }));
    }
    // Only the stages hold channel ends from here on, so that a stage that
    // stops (after a failure) unblocks the others instead of leaving them
    // waiting on a channel nobody serves.
    drop((pool_tx, job_tx, work_rx));

    let mut segments = vec![None; n];
    let mut stats = BackupStats::default();
    let jobs = futures::stream::poll_fn(|cx| job_rx.poll_recv(cx));
    let uploaded = jobs
        .map(|job| {
            let to = Uploader {
                repo: &shared.repo,
                packs: &disk_packs,
                progress: &shared.progress,
                existed: &shared.existed,
                replaced: &shared.replaced,
                trust: &shared.trust,
            };
            async move { to.upload(job).await }
        })
        .buffer_unordered(SEGMENTS_IN_FLIGHT)
        .try_for_each(|(idx, seg, s)| {
            segments[idx] = seg;
            stats.add(&s);
            futures::future::ready(Ok(()))
        })
        .await;
    if let Err(e) = uploaded {
        shared.failure.set(e);
    }
    drop(job_rx);
    for t in threads {
        t.await
            .map_err(|e| Error::Internal(format!("backup thread died: {e}")))?;
    }
    if let Some(e) = shared.failure.take() {
        return Err(e);
    }
    // The disk's last pack; its chunks' nodes are stored already, but no
    // point names them before the session's index object is written.
    let stored = disk_packs.into_inner().finish().await?;
    stats.bytes_uploaded += stored.bytes;
    stats.bytes_stored += stored.bytes;
    stats.bytes_scanned = shared.source.size();
    stats.bytes_data += reused_data;
    let existed = std::mem::take(&mut *shared.existed.lock().unwrap_or_else(|p| p.into_inner()));
    let replaced = std::mem::take(&mut *shared.replaced.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(DiskResult {
        segments,
        stats,
        existed,
        replaced,
    })
}

/// A segment buffer between uses, with the ranges its last segment read
/// into it (everything else in it is zero).
type Pooled = (Vec<u8>, Vec<Range<usize>>);

/// `ranges` of the disk, relative to a segment starting at `start`, with
/// adjacent ones joined (an NBD server may report a run in pieces).
fn relative(ranges: &[Range<u64>], start: u64) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let r = (r.start - start) as usize..(r.end - start) as usize;
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// Makes `buf` `len` zero bytes except where `data` will be read into it:
/// only what the previous segment read (`dirty`) can be non-zero, and it
/// need not be cleared when this segment reads the whole buffer anyway (a
/// dense disk), so a sparse disk's holes cost no memory traffic.
fn clean(buf: &mut Vec<u8>, dirty: &[Range<usize>], data: &[Range<usize>], len: usize) {
    buf.resize(len, 0);
    if data.len() == 1 && data[0] == (0..len) {
        return;
    }
    for r in dirty {
        let r = r.start.min(len)..r.end.min(len);
        buf[r].fill(0);
    }
}

fn read_segments(
    shared: &Shared,
    plan: DiskPlan,
    seg_size: u64,
    pool: Receiver<Pooled>,
    work: SyncSender<Work>,
) {
    let size = shared.source.size();
    let parent_data = plan.parent_data;
    let mut parent_nodes = plan.parent_nodes;
    // Reused segments' data counted as one sum (added by `run`).
    let in_sum = plan.reused_data.is_some();
    for (idx, seg) in plan.segments.into_iter().enumerate() {
        if shared.failure.aborted() {
            return;
        }
        let start = idx as u64 * seg_size;
        let end = (start + seg_size).min(size);
        let item = match seg {
            SegmentPlan::Reuse(node) => Work::Reuse {
                idx,
                node,
                data: if in_sum {
                    Some(0)
                } else {
                    node.and_then(|n| parent_data.get(&n).copied())
                },
            },
            SegmentPlan::Touched {
                parent,
                parent_len,
                changes,
                audit,
            } => Work::Touched {
                idx,
                parent,
                // Segments that share a parent node are rare (equal
                // segments): they fetch it again.
                checked: parent.and_then(|p| parent_nodes.remove(&p)),
                parent_len,
                changes,
                audit,
            },
            SegmentPlan::Full(parent) => match shared.source.data_ranges(start..end) {
                Ok(r) if r.is_empty() => Work::Hole { idx },
                Ok(ranges) => {
                    let Ok((mut buf, dirty)) = pool.recv() else {
                        return;
                    };
                    let data = relative(&ranges, start);
                    clean(&mut buf, &dirty, &data, (end - start) as usize);
                    match shared.source.read_ranges_at(start, &mut buf, &ranges) {
                        Ok(read) => Work::Data {
                            idx,
                            buf,
                            data,
                            read,
                            parent,
                        },
                        Err(e) => return shared.failure.set(e),
                    }
                }
                Err(e) => return shared.failure.set(e),
            },
        };
        if work.send(item).is_err() {
            return;
        }
    }
}

fn process_segments(
    shared: &Shared,
    work: &Mutex<Receiver<Work>>,
    pool: &SyncSender<Pooled>,
    jobs: &mpsc::Sender<UploadJob>,
) {
    let seg_size = shared.repo.config().segment_size;
    let size = shared.source.size();
    let seg_len = |idx: usize| seg_size.min(size - idx as u64 * seg_size);
    loop {
        let item = match work.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(item) => item,
            Err(_) => return,
        };
        if shared.failure.aborted() {
            return;
        }
        let job = match item {
            Work::Hole { idx } => Ok(UploadJob::unchanged(idx, None, BackupStats::default())),
            Work::Reuse { idx, node, data } => reused_job(shared, idx, node, data),
            Work::Data {
                idx,
                buf,
                data: ranges,
                read,
                parent,
            } => {
                let seg = chunk_segment_in(
                    &shared.repo.config().chunking,
                    shared.repo.codec(),
                    &buf,
                    &Known::Data(&ranges),
                );
                let data = |i: usize| {
                    let off = seg.offsets[i];
                    Some(&buf[off..off + seg.entries[i].len() as usize])
                };
                let job = build_job(shared, idx, &seg.entries, data, parent, None, read);
                let _ = pool.send((buf, ranges));
                job
            }
            Work::Touched {
                idx,
                parent,
                checked,
                parent_len,
                changes,
                audit,
            } => {
                let t = Touched {
                    idx,
                    parent,
                    checked,
                    parent_len,
                    len: seg_len(idx),
                };
                if audit {
                    audited_touched_job(shared, &t, &changes)
                } else {
                    touched_job(shared, &t, &changes)
                }
            }
        };
        match job {
            Ok(job) => {
                shared.progress.add_done(seg_len(job.idx));
                if jobs.blocking_send(job).is_err() {
                    return;
                }
            }
            Err(e) => return shared.failure.set(e),
        }
    }
}

/// A segment reused unread. The point holds its data all the same, so its
/// data bytes count in the point's statistics (taken from the parent's
/// node, which the parent check fetched, or fetched here if it did not);
/// nothing of it is read, changed or stored.
fn reused_job(
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
struct Touched {
    idx: usize,
    parent: Option<ObjectId>,
    checked: Option<Arc<Node>>,
    parent_len: u64,
    len: u64,
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
            None => Ok(Arc::new(Node {
                entries: chunk_segment(
                    &shared.repo.config().chunking,
                    shared.repo.codec(),
                    &vec![0u8; self.parent_len as usize],
                )
                .entries,
            })),
        }
    }
}

/// Re-chunks a segment around its changes, reading only near them.
fn touched_job(shared: &Shared, t: &Touched, changes: &[Range<u64>]) -> Result<UploadJob> {
    let cfg = shared.repo.config();
    let parent_node = t.parent_node(shared)?;
    let start = t.idx as u64 * cfg.segment_size;
    let r = rechunk(
        &cfg.chunking,
        shared.repo.codec(),
        &parent_node.entries,
        t.len,
        changes,
        |off, buf| shared.source.read_at(start + off, buf),
    )?;
    let fresh: HashMap<usize, &[u8]> = r.fresh.iter().map(|(i, d)| (*i, &d[..])).collect();
    build_job(
        shared,
        t.idx,
        &r.entries,
        |i| fresh.get(&i).copied(),
        t.parent,
        Some(&parent_node),
        r.bytes_read,
    )
}

/// Reads the whole segment, and checks that re-chunking around the
/// reported changes gives what chunking it all gives: if not, the change
/// source missed a write in this segment.
fn audited_touched_job(shared: &Shared, t: &Touched, changes: &[Range<u64>]) -> Result<UploadJob> {
    let cfg = shared.repo.config();
    let parent_node = t.parent_node(shared)?;
    let start = t.idx as u64 * cfg.segment_size;
    let mut buf = vec![0u8; t.len as usize];
    let read = shared.source.read_at(start, &mut buf)?;
    let full = chunk_segment(&cfg.chunking, shared.repo.codec(), &buf);
    let inc = rechunk(
        &cfg.chunking,
        shared.repo.codec(),
        &parent_node.entries,
        t.len,
        changes,
        |off, out| {
            out.copy_from_slice(&buf[off as usize..off as usize + out.len()]);
            Ok(0)
        },
    )?;
    if inc.entries != full.entries {
        return Err(Error::AuditMismatch { offset: start });
    }
    let data = |i: usize| {
        let off = full.offsets[i];
        Some(&buf[off..off + full.entries[i].len() as usize])
    };
    build_job(
        shared,
        t.idx,
        &full.entries,
        data,
        t.parent,
        Some(&parent_node),
        read,
    )
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
    let cfg = shared.repo.config();
    let mut stats = BackupStats {
        bytes_read: read,
        bytes_data: data_bytes(entries),
        ..BackupStats::default()
    };
    if entries.iter().all(|e| e.1.is_none()) {
        return Ok(UploadJob::unchanged(idx, None, stats));
    }
    let node = Node {
        entries: entries.to_vec(),
    };
    let (node_id, plain) = node.to_plain(shared.repo.codec())?;
    let trust = &shared.trust;
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
    // Chunks this segment has bytes for and must make sure are stored:
    // (entry, whether it must be stored anew over a lost or damaged copy).
    let mut todo: Vec<(usize, ObjectId, bool)> = Vec::new();
    for (i, entry) in node.entries.iter().enumerate() {
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
            // A parent's chunk the backup cannot trust (missing from the
            // listing of a full scan, or damaged) is stored anew, not
            // looked up: the index may still name its lost copy.
            let anew = from_parent || trust.damaged_chunks.contains(&id);
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
        let blob = shared
            .repo
            .chunks()
            .encode_chunk(&id, piece, cfg.zstd_level)?;
        chunks.push((id, piece.len(), blob, trust.damaged_chunks.contains(&id)));
    }
    if !reused.is_empty() {
        reused.sort_unstable();
        reused.dedup();
        let mut existed = shared.existed.lock().unwrap_or_else(|p| p.into_inner());
        existed.extend(reused);
    }
    let node_needed = !unchanged || !trust.has_node(&node_id);
    if unchanged && chunks.is_empty() && !node_needed {
        return Ok(UploadJob::unchanged(idx, parent, stats));
    }
    if unchanged && node_needed {
        stats.objects_restored += 1;
    }
    Ok(UploadJob {
        idx,
        segment: Some(node_id),
        node: node_needed.then_some(plain),
        chunks,
        stats,
    })
}
