//! A backup session's side of the lease/sweep protocol (docs/design.md,
//! "Concurrency"):
//!
//! - (a) [`Session::begin`] writes the lease, learns the store's time, and
//!   notes which sweeps had already finished; [`Session::pin`] names the
//!   points the backup deduplicates against (read after `begin`);
//! - (b) [`Session::depend`] records objects found already stored;
//! - (c) [`Session::check`] refreshes the lease and reads the sweep
//!   markers: for every sweep that did not finish before the session began,
//!   it says whether to wait for it, or which references to re-check;
//! - (d) the caller writes the manifest; (e) [`Session::end`] deletes the
//!   lease.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::backend::PutMode;
use crate::error::Result;
use crate::gc::markers::{DoneMarker, SweepLog};
use crate::id::PointId;
use crate::keys;
use crate::lease::{LeaseRecord, ObjectRef};
use crate::names::VmName;
use crate::repo::Repository;

#[derive(Debug)]
pub struct Session {
    repo: Repository,
    key: String,
    record: Arc<Mutex<LeaseRecord>>,
    /// Sweeps finished before the session began, or already accounted for.
    settled: BTreeSet<u64>,
    /// Sweeps running when the session began.
    running_at_start: BTreeSet<u64>,
    /// The highest sequence number seen when the session began.
    last_at_start: u64,
    /// The store's time at the last `check`.
    checked_at: Option<DateTime<Utc>>,
}

/// What [`Session::check`] asks of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No sweep can have removed anything the session uses: commit.
    Clear,
    /// A sweep is still running; ask again later.
    Wait { seq: u64 },
    /// These sweeps may have removed objects the session uses: check that
    /// the listed ones (or, with `all`, every referenced one) still exist,
    /// restore any missing, then [`Session::settle`] the sweeps and check
    /// again.
    Verify {
        sweeps: Vec<u64>,
        all: bool,
        deps: Vec<ObjectRef>,
        /// The highest sequence number listed; a full check covers it.
        through: u64,
    },
}

impl Session {
    /// (a): writes the lease (create-only) and reads the sweep log.
    pub async fn begin(repo: &Repository, vm: &VmName, host: &str) -> Result<Session> {
        let session = format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            hex::encode(rand::random::<[u8; 8]>())
        );
        let key = keys::lease(&session);
        let mut record = LeaseRecord {
            session,
            host: host.to_string(),
            vm: vm.clone(),
            started: None,
            pins: Vec::new(),
            deps: Vec::new(),
        };
        let b = repo.backend();
        b.put(&key, record.encode()?, PutMode::Create).await?;
        // The lease's own time is the session's start. Readers use the
        // object's time until a later write records it in the lease.
        record.started = Some(b.head(&key).await?.last_modified);
        let log = SweepLog::read(repo).await?;
        let running_at_start = log
            .started
            .keys()
            .filter(|s| !log.done.contains_key(s))
            .copied()
            .collect();
        Ok(Session {
            repo: repo.clone(),
            key,
            record: Arc::new(Mutex::new(record)),
            settled: log.done.keys().copied().collect(),
            running_at_start,
            last_at_start: log.last_seq(),
            checked_at: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names the points whose contents the backup reuses, and writes the
    /// lease. Call before using anything of theirs.
    pub async fn pin(&self, points: impl IntoIterator<Item = (VmName, PointId)>) -> Result<()> {
        let added = {
            let mut r = self.lock();
            let before = r.pins.len();
            for p in points {
                if !r.pins.contains(&p) {
                    r.pins.push(p);
                }
            }
            r.pins.len() > before
        };
        if added { self.write().await } else { Ok(()) }
    }

    /// (b): records objects the backup uses that it found already stored
    /// (written to the lease by the next refresh or check).
    pub fn depend(&self, refs: impl IntoIterator<Item = ObjectRef>) {
        self.lock().deps.extend(refs);
    }

    /// Rewrites the lease (keeping it alive).
    async fn write(&self) -> Result<()> {
        let bytes = self.lock().encode()?;
        self.repo
            .backend()
            .put(&self.key, bytes, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// Rewrites the lease and returns the store's time.
    pub async fn refresh(&self) -> Result<DateTime<Utc>> {
        self.write().await?;
        Ok(self.repo.backend().head(&self.key).await?.last_modified)
    }

    /// True when the manifest, written at `committed` (the store's time),
    /// came so long after the last `check` that the lease may have died in
    /// between: a sweep may then have missed both the lease and the point.
    /// The caller checks again ([`Session::check`]) and repairs.
    pub fn committed_late(&self, committed: DateTime<Utc>) -> bool {
        let ttl = self.repo.config().protocol.ttl();
        self.checked_at.is_none_or(|t| committed - t > ttl / 2)
    }

    /// (c): see [`Check`].
    pub async fn check(&mut self) -> Result<Check> {
        let now = self.refresh().await?;
        self.checked_at = Some(now);
        let (pins, deps) = {
            let r = self.lock();
            (r.pins.len() as u64, r.deps.clone())
        };
        let log = SweepLog::read(&self.repo).await?;
        let ttl = self.repo.config().protocol.ttl();

        // Markers of sweeps that may matter, deleted since: nothing is
        // known about what those sweeps honoured.
        let mut all = self
            .running_at_start
            .iter()
            .any(|s| !self.settled.contains(s) && !log.started.contains_key(s));
        if let Some(&first) = log.started.keys().next()
            && first > self.last_at_start + 1
            && (first - self.last_at_start > 1000
                || !(self.last_at_start + 1..first).all(|s| self.settled.contains(&s)))
        {
            all = true;
        }

        let mut sweeps = Vec::new();
        let mut from = deps.len();
        for (&seq, &refreshed) in &log.started {
            if self.settled.contains(&seq) {
                continue;
            }
            if !log.done.contains_key(&seq) {
                if now - refreshed <= ttl {
                    return Ok(Check::Wait { seq });
                }
                // Died without finishing: what it removed is unknown.
                all = true;
            } else {
                match DoneMarker::load(&self.repo, seq).await? {
                    // Deleted since the listing: what it honoured is unknown.
                    None => all = true,
                    // It deleted nothing: nothing to check.
                    Some(d) if d.chunks_deleted == 0 && d.nodes_deleted == 0 => {}
                    Some(d) => {
                        let me = d
                            .honoured
                            .iter()
                            .find(|h| self.key == keys::lease(&h.session));
                        match me {
                            Some(h) if h.pins_resolved && h.pins >= pins => {
                                from = from.min(h.deps as usize);
                            }
                            _ => all = true,
                        }
                    }
                }
            }
            sweeps.push(seq);
        }
        if sweeps.is_empty() && !all {
            return Ok(Check::Clear);
        }
        Ok(Check::Verify {
            sweeps,
            all,
            deps: deps[from.min(deps.len())..].to_vec(),
            through: log.last_seq(),
        })
    }

    /// Marks a `Verify`'s sweeps as accounted for, once the caller did
    /// what it asked.
    pub fn settle(&mut self, verified: &Check) {
        if let Check::Verify {
            sweeps,
            all,
            through,
            ..
        } = verified
        {
            self.settled.extend(sweeps.iter().copied());
            if *all {
                // Everything the session uses was checked: whatever the
                // deleted or dead markers stood for is accounted for.
                self.running_at_start.clear();
                self.last_at_start = self.last_at_start.max(*through);
            }
        }
    }

    /// (e): deletes the lease; its protection ends.
    pub async fn end(self) -> Result<()> {
        self.repo.backend().delete_many(&[self.key]).await?;
        Ok(())
    }

    /// Refreshes the lease in the background until dropped.
    pub fn heartbeat(&self) -> Heartbeat {
        let (repo, key, record) = (self.repo.clone(), self.key.clone(), self.record.clone());
        let every = repo.config().protocol.heartbeat();
        Heartbeat::every(every, move || {
            let (repo, key) = (repo.clone(), key.clone());
            let bytes = record.lock().unwrap_or_else(|p| p.into_inner()).encode();
            async move {
                if let Ok(bytes) = bytes {
                    // A failed refresh is not fatal: if the lease dies, the
                    // sweeps that run meanwhile do not honour it, and
                    // `check` then re-verifies everything.
                    let _ = repo.backend().put(&key, bytes, PutMode::Overwrite).await;
                }
            }
        })
    }
}

/// Stops the heartbeat when dropped.
#[derive(Debug)]
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    /// Runs `beat` every `every` until dropped.
    pub(crate) fn every<F, Fut>(every: std::time::Duration, mut beat: F) -> Heartbeat
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                beat().await;
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
