//! The bounded parallel pipeline that backs up one disk.
//!
//! ```text
//! dispatcher thread --(segments)--> W workers: read (in windows), chunk,
//!     hash, compress --(upload jobs)--> async uploader: J jobs at once
//! ```
//!
//! Memory in flight is bounded by the workers' window buffers (one
//! window, 16 MiB, plus a carried tail of under a maximum chunk, each;
//! `scan`), a touched segment's newly cut chunks (at most a window's
//! bytes: past that they leave as a partial upload job), and the
//! upload jobs queued or running (QUEUE + J), each at most about one
//! window of compressed data: with 2 cores, (2 + 2 + 2 + 2) x 16 MiB =
//! 128 MiB, whatever the disk or segment size. A node may be stored before
//! the packs holding its chunks (jobs complete out of order), but the
//! manifest is written only after every pack, node and the session's
//! index object: a point never references what is not durable.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::plan::{DiskPlan, SegmentPlan};
use super::scan::{WindowBuf, relative};
use super::trust::Trust;
use super::upload::{UploadJob, Uploader};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::BackupStats;
use crate::node::Node;
use crate::placement::session::{DiskUploads, SessionPacks};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::DiskSource;

mod jobs;

use jobs::{Touched, Worker, reused_job};

/// Upload jobs waiting between the workers and the uploader.
const QUEUE: usize = 2;
/// Upload jobs running at once.
const JOBS_IN_FLIGHT: usize = 2;

/// What one disk's backup produced.
#[derive(Debug)]
pub struct DiskResult {
    pub segments: Vec<Option<ObjectId>>,
    /// Each segment's last-data mark, where the backup cut or re-cut it
    /// (`None`: reused unread, the parent's mark holds; or no node, 0).
    pub marks: Vec<Option<u64>>,
    pub stats: BackupStats,
    /// Objects this backup stored that were already there: it relies on
    /// them without having written them (the lease's dependencies).
    pub existed: Vec<ObjectRef>,
    /// Keys of objects stored over damaged copies (their damage records
    /// can go).
    pub replaced: Vec<String>,
    /// The disk's packs, the last maybe still uploading: `stats` counts
    /// their bytes only once [`count_packs`] returned.
    pub uploads: DiskUploads,
}

/// Waits for a disk's last pack puts and counts what its packs stored
/// into its `stats`.
pub async fn count_packs(uploads: DiskUploads, stats: &mut BackupStats) -> Result<()> {
    let started = std::time::Instant::now();
    let stored = uploads.wait().await?;
    stats.bytes_uploaded += stored.bytes;
    stats.bytes_stored += stored.bytes;
    stats.seconds += started.elapsed().as_secs_f64();
    Ok(())
}

enum Work {
    /// A whole segment to read (holes as zeros), deduplicated against
    /// `parent`.
    Full {
        idx: usize,
        /// Where the segment may hold data (segment-relative): the rest is
        /// a hole, zero without being read.
        data: Vec<Range<usize>>,
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
    /// A segment taken from the parent once read whole and found to
    /// hold the parent's node (the audit, `super::audit`).
    AuditReuse {
        idx: usize,
        node: Option<ObjectId>,
        /// That node, if the parent check kept it.
        checked: Option<Arc<Node>>,
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

    let (work_tx, work_rx) = sync_channel::<Work>(1);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (job_tx, mut job_rx) = mpsc::channel::<UploadJob>(QUEUE);

    let mut threads = Vec::new();
    {
        let shared = shared.clone();
        threads.push(tokio::task::spawn_blocking(move || {
            dispatch_segments(&shared, plan, seg_size, work_tx)
        }));
    }
    for _ in 0..workers {
        let (shared, work_rx, job_tx) = (shared.clone(), work_rx.clone(), job_tx.clone());
        threads.push(tokio::task::spawn_blocking(move || {
            process_segments(&shared, &work_rx, &job_tx)
        }));
    }
    // Only the stages hold channel ends from here on, so that a stage that
    // stops (after a failure) unblocks the others instead of leaving them
    // waiting on a channel nobody serves.
    drop((job_tx, work_rx));

    let mut segments = vec![None; n];
    let mut marks = vec![None; n];
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
        .buffer_unordered(JOBS_IN_FLIGHT)
        .try_for_each(|(idx, seg, s)| {
            if let Some((seg, mark)) = seg {
                segments[idx] = seg;
                marks[idx] = mark;
            }
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
    // The disk's last pack, sent: its chunks' nodes are stored already,
    // but no point names them before its put ended and the session's
    // index object is written (the caller waits).
    let uploads = disk_packs.into_inner().seal().await?;
    stats.bytes_scanned = shared.source.size();
    stats.bytes_data += reused_data;
    let existed = std::mem::take(&mut *shared.existed.lock().unwrap_or_else(|p| p.into_inner()));
    let replaced = std::mem::take(&mut *shared.replaced.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(DiskResult {
        segments,
        marks,
        stats,
        existed,
        replaced,
        uploads,
    })
}

/// Hands the segments to the workers: the reused ones the audit reads
/// first (each is a whole segment's read and chunking, and a mismatch
/// makes the rest of the work moot), then the others in disk order, with
/// what the plan and the source's map of data say of each (a hole is done
/// here).
fn dispatch_segments(shared: &Shared, plan: DiskPlan, seg_size: u64, work: SyncSender<Work>) {
    let size = shared.source.size();
    let parent_data = plan.parent_data;
    let mut parent_nodes = plan.parent_nodes;
    // Reused segments' data counted as one sum (added by `run`).
    let in_sum = plan.reused_data.is_some();
    let reused_data = |node: Option<ObjectId>| match in_sum {
        true => Some(0),
        false => node.and_then(|n| parent_data.get(&n).copied()),
    };
    let mut segments: Vec<Option<SegmentPlan>> = plan.segments.into_iter().map(Some).collect();
    let mut audited = Vec::with_capacity(plan.audit_reused.len());
    for &idx in &plan.audit_reused {
        // Only a reused segment is taken out for the audit: any other
        // stays where it is and is backed up as its plan says.
        if let Some(slot) = segments.get_mut(idx)
            && let Some(SegmentPlan::Reuse(node)) = *slot
        {
            *slot = None;
            let data = reused_data(node);
            // Shared, not taken: a touched segment may re-chunk from the
            // same node.
            let checked = node.and_then(|n| parent_nodes.get(&n).cloned());
            audited.push(Work::AuditReuse {
                idx,
                node,
                checked,
                data,
            });
        }
    }
    for item in audited {
        if shared.failure.aborted() || work.send(item).is_err() {
            return;
        }
    }
    for (idx, seg) in segments.into_iter().enumerate() {
        if shared.failure.aborted() {
            return;
        }
        let Some(seg) = seg else {
            continue; // audited, sent above
        };
        let start = idx as u64 * seg_size;
        let end = (start + seg_size).min(size);
        let item = match seg {
            SegmentPlan::Reuse(node) => Work::Reuse {
                idx,
                node,
                data: reused_data(node),
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
                Ok(ranges) => Work::Full {
                    idx,
                    data: relative(&ranges, start),
                    parent,
                },
                Err(e) => return shared.failure.set(e),
            },
        };
        if work.send(item).is_err() {
            return;
        }
    }
}

fn process_segments(shared: &Shared, work: &Mutex<Receiver<Work>>, jobs: &mpsc::Sender<UploadJob>) {
    let seg_size = shared.repo.config().segment_size;
    let size = shared.source.size();
    let seg_len = |idx: usize| seg_size.min(size - idx as u64 * seg_size);
    let mut worker = Worker {
        shared,
        wb: WindowBuf::default(),
        send: |job: UploadJob, done: u64| {
            shared.progress.add_done(done);
            // Closed only after a failure was recorded (`run`).
            jobs.blocking_send(job)
                .map_err(|_| Error::Internal("the backup's uploader stopped".into()))
        },
    };
    loop {
        let item = match work.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(item) => item,
            Err(_) => return,
        };
        if shared.failure.aborted() {
            return;
        }
        let done = match item {
            Work::Hole { idx } => (worker.send)(
                UploadJob::unchanged(idx, None, BackupStats::default()),
                seg_len(idx),
            ),
            Work::Reuse { idx, node, data } => {
                reused_job(shared, idx, node, data).and_then(|job| (worker.send)(job, seg_len(idx)))
            }
            Work::AuditReuse {
                idx,
                node,
                checked,
                data,
            } => worker.audit_reused(idx, node, checked, data),
            Work::Full { idx, data, parent } => worker.full(idx, Some(data), parent, None, 0),
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
                worker.touched(&t, &changes, audit)
            }
        };
        if let Err(e) = done {
            return shared.failure.set(e);
        }
    }
}
