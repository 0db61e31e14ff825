//! Progress counters that long operations bump and a UI may poll.
//! The engine never draws anything itself.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    /// Logical bytes the operation will cover.
    pub total: AtomicU64,
    /// Logical bytes done so far.
    pub done: AtomicU64,
    /// Bytes sent to or fetched from the store.
    pub transferred: AtomicU64,
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
}
