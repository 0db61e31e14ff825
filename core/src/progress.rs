//! The channel between a long operation and whoever runs it: counters a
//! UI may poll, live notices (why the operation is waiting, say), and
//! cancellation. The engine never draws or prints anything itself: it
//! hands typed [`Warning`]s to the caller, which prints them as text or
//! JSON.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Notify;

/// Something that did not stop the operation but that its user must know.
/// Typed, so that a caller can react to a kind (and JSON names it by
/// `kind`) instead of matching message text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Warning {
    /// A point that would have been the parent has a damaged manifest; an
    /// older point is used instead.
    DamagedParentSkipped { point: String, reason: String },
    /// A disk's change source was set aside and the disk read in full:
    /// its parent is not the VM's newest point, which the change source
    /// is taken to start from.
    ChangesSetAside {
        disk: String,
        parent: String,
        reason: String,
    },
    /// This host's clock was not after the VM's newest point (`newest`,
    /// by `behind_ms` milliseconds): the new point is dated just after
    /// it, so that it stays the newest.
    ClockBehind { newest: String, behind_ms: u64 },
    /// Part of the chunk index could not be read (a damaged block): the
    /// backup stored again the chunks only it placed.
    IndexDamaged { reason: String },
    /// Segments of the parent whose nodes or chunks are missing or damaged
    /// were read and stored in full.
    ParentSegmentsDamaged { disk: String, segments: u64 },
    /// Objects shared with the parent were missing or damaged and were
    /// stored again.
    ObjectsStoredAgain { objects: u64 },
    /// A gc removed data the backup found in the index and uses (a sweep
    /// that ran meanwhile, or one just before whose index objects still
    /// named it); these segments were read again from the source and
    /// their missing chunks stored.
    SegmentsReadAgain { segments: u64 },
    /// The VM's newest point (or the `--parent`) has a disk this backup
    /// does not: the new point will not hold it.
    DiskDropped { disk: String, point: String },
    /// A disk given as raw bytes starts like a container image format
    /// (qcow2, VMDK, ...): the point would hold the container, not the
    /// guest's disk.
    ContainerImage {
        disk: String,
        path: String,
        format: String,
    },
    /// A disk backed up through `--qmp` is read in full: its parent's
    /// checkpoint cannot be used (gone, inconsistent, disabled).
    CheckpointUnusable { disk: String, reason: String },
    /// Something QEMU was asked to undo or clean up (an export, a job, a
    /// bitmap, a killed run's leftovers) was not; the backup's outcome
    /// does not depend on it.
    HypervisorCleanup { message: String },
    /// A served point (`serve`, `mount`) has damaged or missing data: reads
    /// of that range fail with EIO; the rest is served.
    ServedDataDamaged {
        point: String,
        disk: String,
        offset: u64,
        length: u64,
        object: String,
        reason: String,
    },
    /// Damage records of objects this backup stored again, or found
    /// sound, could not be removed (the store refused: a least-privilege
    /// backup role may not delete). They only cost re-uploads and checks
    /// until `xfull repair` with delete rights removes them.
    DamageRecordsKept { records: u64, reason: String },
    /// A served point's segment could not be read for a reason other than
    /// damage (the store failed or refused): reads there fail with EIO
    /// until it can be read.
    ServedDataUnreadable {
        point: String,
        disk: String,
        offset: u64,
        reason: String,
    },
    /// A point `copy` listed was removed from the source before its turn
    /// (a prune or forget there): not copied.
    CopySourceGone { point: String },
    /// No refresh of a server's or mount's lease reached the store for
    /// half its TTL: if none does before the TTL, it stops serving.
    ServeLeaseAtRisk {
        lease: String,
        since_secs: u64,
        stops_in_secs: u64,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::DamagedParentSkipped { point, reason } => write!(
                f,
                "point {point} is damaged and not used as a parent ({reason}); run `xfull \
                 verify`, then `xfull repair`"
            ),
            Warning::ChangesSetAside {
                disk,
                parent,
                reason,
            } => write!(
                f,
                "disk {disk}: read in full against {parent}, not through its change source: \
                 {reason}, and a change source tells what changed since the VM's newest point \
                 (pass --parent VM@ID to name the point the changes start from)"
            ),
            Warning::ClockBehind { newest, behind_ms } => write!(
                f,
                "this host's clock is {:.3} s behind the VM's newest point ({newest}): \
                 the new point is dated just after it, so that it stays the newest and the \
                 next backup builds on it; check the clocks of the hosts that back up this VM",
                *behind_ms as f64 / 1000.0
            ),
            Warning::IndexDamaged { reason } => write!(
                f,
                "part of the chunk index cannot be read ({reason}): chunks it lists were stored \
                 again; run `xfull verify`, then `xfull index rebuild`"
            ),
            Warning::ParentSegmentsDamaged { disk, segments } => write!(
                f,
                "disk {disk}: {segments} segment(s) of the parent point have missing or damaged \
                 nodes or chunks; those segments are read and stored in full (run `xfull verify`)"
            ),
            Warning::ObjectsStoredAgain { objects } => write!(
                f,
                "{objects} chunk(s) or node(s) this point shares with its parent were missing or \
                 damaged in the repository and were stored again"
            ),
            Warning::SegmentsReadAgain { segments } => write!(
                f,
                "a gc (during or just before this backup) removed data this backup uses; \
                 {segments} segment(s) were read again from the source and what they lacked was \
                 stored"
            ),
            Warning::DiskDropped { disk, point } => write!(
                f,
                "disk {disk} of point {point} is not in this backup: the new point will not hold \
                 it (prune keeps the newest point holding {disk} unless --forget-disks)"
            ),
            Warning::ContainerImage { disk, path, format } => write!(
                f,
                "disk {disk} ({path}) starts like a {format} image: it is stored as the {format} \
                 file's bytes, not as the guest's disk; use an NBD source (qemu-nbd/\
                 qemu-storage-daemon) to back up the disk it holds"
            ),
            Warning::CheckpointUnusable { disk, reason } => write!(f, "disk {disk}: {reason}"),
            Warning::HypervisorCleanup { message } => write!(f, "QEMU: {message}"),
            Warning::ServedDataDamaged {
                point,
                disk,
                offset,
                length,
                object,
                reason,
            } => write!(
                f,
                "point {point}, disk {disk}: damaged data at offset {offset}, {length} bytes \
                 ({object}): {reason}; clients reading it get EIO (run `xfull verify`)"
            ),
            Warning::DamageRecordsKept { records, reason } => write!(
                f,
                "{records} damage record(s) of chunks or nodes this backup stored again or found \
                 sound were left in place ({reason}); the point is sound, and later backups only \
                 check or upload those objects again until `xfull repair`, run with credentials \
                 that may delete, removes the records"
            ),
            Warning::ServedDataUnreadable {
                point,
                disk,
                offset,
                reason,
            } => write!(
                f,
                "point {point}, disk {disk}: cannot read the segment at offset {offset}: \
                 {reason}; clients reading it get EIO"
            ),
            Warning::CopySourceGone { point } => write!(
                f,
                "point {point} was removed from the source after the copy listed it (a prune or \
                 forget there); it was not copied"
            ),
            Warning::ServeLeaseAtRisk {
                lease,
                since_secs,
                stops_in_secs,
            } => write!(
                f,
                "lease {lease}: no refresh of it reached the store for {since_secs} s; unless one \
                 does within about {stops_in_secs} s, gc may take it for dead, and serving stops"
            ),
        }
    }
}

/// Something the operation wants its user to know while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A backup waits for a gc sweep before committing.
    WaitingForSweep {
        seq: u64,
        /// Why it must wait for this sweep.
        reason: String,
        /// The longest it will wait, in seconds (the sweep is judged dead
        /// after that).
        at_most_secs: u64,
    },
    /// A restore waits for thaws of archived data to finish.
    WaitingForThaw {
        /// Objects (packs) still being thawed, and their bytes.
        objects: u64,
        bytes: u64,
        /// When it looks again, in seconds.
        next_look_secs: u64,
    },
    /// A gc sweep finished a step (for the log of a long one).
    GcStep(GcStep),
    /// A restore removed the partial image a killed restore left next to
    /// its target (said at once: the restore may still fail).
    LeftoverRemoved { path: String, bytes: u64 },
    /// Something worth a warning that does not stop the operation.
    Warning(Warning),
}

/// The steps of a gc sweep, with what each found so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcStep {
    /// Leases and points were read.
    Listed { points: u64, live_leases: u64 },
    /// Marking what points reference: points done of all.
    Marking { done: u64, of: u64 },
    /// Every point marked.
    Marked { nodes: u64, chunks: u64 },
    /// A delete batch went (or would go, in a dry run): totals so far.
    Deleted {
        batches: u64,
        nodes: u64,
        packs: u64,
        bytes: u64,
    },
}

#[derive(Debug, Default)]
pub struct Progress {
    /// Logical bytes the operation will cover.
    pub total: AtomicU64,
    /// Logical bytes done so far.
    pub done: AtomicU64,
    /// Bytes sent to or fetched from the store.
    pub transferred: AtomicU64,
    notices: Mutex<Vec<Notice>>,
    /// Every warning given, for the operation's outcome.
    warnings: Mutex<Vec<Warning>>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
}

impl Progress {
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_transferred(&self, n: u64) {
        self.transferred.fetch_add(n, Ordering::Relaxed);
    }
    /// (done, total, transferred)
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.transferred.load(Ordering::Relaxed),
        )
    }

    /// Queues a notice for the user (see [`Progress::take_notices`]);
    /// warnings are also kept for [`Progress::warnings`].
    pub fn notice(&self, n: Notice) {
        if let Notice::Warning(w) = &n {
            self.warnings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(w.clone());
        }
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(n);
    }

    /// The notices queued since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every warning the operation gave, oldest first: the typed part of
    /// its outcome (live notices are drained; this list is not).
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the operation to stop as soon as it safely can (it then
    /// cleans up and fails with [`crate::Error::Cancelled`]).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel_notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once [`Progress::cancel`] was called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.cancel_notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn cancel_wakes_waiters_and_notices_drain() {
        let p = Arc::new(Progress::default());
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!p.is_cancelled());
        p.cancel();
        waiter.await.unwrap();
        // Already cancelled: returns at once.
        p.cancelled().await;
        let w = |n| Notice::Warning(Warning::ObjectsStoredAgain { objects: n });
        p.notice(w(1));
        p.notice(w(2));
        assert_eq!(p.take_notices().len(), 2);
        assert!(p.take_notices().is_empty());
        // The outcome keeps them, typed.
        assert_eq!(
            p.warnings(),
            vec![
                Warning::ObjectsStoredAgain { objects: 1 },
                Warning::ObjectsStoredAgain { objects: 2 }
            ]
        );
        let json = serde_json::to_value(&p.warnings()[0]).unwrap();
        assert_eq!(json["kind"], "objects_stored_again");
    }
}
