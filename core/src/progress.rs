//! The channel between a long operation and whoever runs it: counters a
//! UI may poll, live notices (why the operation is waiting, say), and
//! cancellation. The engine never draws or prints anything itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

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
    /// Something worth a warning that does not stop the operation.
    Warning(String),
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

    /// Queues a notice for the user (see [`Progress::take_notices`]).
    pub fn notice(&self, n: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(n);
    }

    /// The notices queued since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()))
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
        p.notice(Notice::Warning("a".into()));
        p.notice(Notice::Warning("b".into()));
        assert_eq!(p.take_notices().len(), 2);
        assert!(p.take_notices().is_empty());
    }
}
