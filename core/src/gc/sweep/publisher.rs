//! The sweep's marker as the sweep and its heartbeat publish it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::backend::{PutMode, PutOptions};
use crate::error::Result;
use crate::gc::markers::SweepState;
use crate::repo::Repository;

/// The sweep's marker: its published state, written by the steps and the
/// heartbeat one at a time (a stale state must never overwrite a newer
/// one, e.g. "idle" over "deleting").
#[derive(Debug)]
pub(super) struct Publisher {
    pub(super) repo: Repository,
    pub(super) key: String,
    pub(super) dry_run: bool,
    pub(super) state: Mutex<SweepState>,
    pub(super) write: tokio::sync::Mutex<()>,
    /// The store's time of the last refresh.
    pub(super) last: Mutex<DateTime<Utc>>,
    /// Half the sweep TTL: silence longer than this (by the store's clock)
    /// means backups may have judged the sweep dead.
    pub(super) max_silence: chrono::Duration,
    /// Set for good once the marker was silent that long: the sweep must
    /// not delete anything any more.
    pub(super) dead: AtomicBool,
}

impl Publisher {
    pub(super) fn update(&self, f: impl FnOnce(&mut SweepState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(super) fn snapshot(&self) -> SweepState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes the current state; returns the store's time of the write
    /// and how long the marker had been silent before it.
    ///
    /// The write runs in a task of its own that holds the write lock until
    /// the store has answered: a caller that stops waiting (the heartbeat,
    /// aborted when the sweep stops) does not cancel it. A store that has
    /// received a PUT may apply it whether or not the client still waits,
    /// so a heartbeat dropped in flight could land after the sweep wrote
    /// `Stopped`, and backups would then wait on a sweep that is gone
    /// until its marker went stale (`gc/marker_landing_tests.rs`).
    pub(super) async fn write(self: &Arc<Self>) -> Result<(DateTime<Utc>, chrono::Duration)> {
        if self.dry_run {
            return Ok((Utc::now(), chrono::Duration::zero()));
        }
        let me = self.clone();
        crate::task::detached("the sweep marker write's task", async move {
            me.write_now().await
        })
        .await?
    }

    async fn write_now(&self) -> Result<(DateTime<Utc>, chrono::Duration)> {
        let _one_at_a_time = self.write.lock().await;
        let bytes = self.snapshot().encode(self.repo.codec(), &self.key)?;
        let b = self.repo.backend();
        let opts = PutOptions::new(PutMode::Overwrite).urgent();
        b.put_opts(&self.key, bytes, opts).await?;
        let now = b.head(&self.key).await?.last_modified;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let silent = now - *last;
        *last = (*last).max(now);
        if silent > self.max_silence {
            self.dead.store(true, Ordering::SeqCst);
        }
        Ok((now, silent))
    }

    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}
