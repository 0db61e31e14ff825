//! The sweep's marker as the sweep and its heartbeat publish it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use crate::backend::PutMode;
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
    pub(super) async fn write(&self) -> Result<(DateTime<Utc>, chrono::Duration)> {
        if self.dry_run {
            return Ok((Utc::now(), chrono::Duration::zero()));
        }
        let _one_at_a_time = self.write.lock().await;
        let bytes = self.snapshot().encode(self.repo.codec(), &self.key)?;
        let b = self.repo.backend();
        b.put(&self.key, bytes, PutMode::Overwrite).await?;
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
