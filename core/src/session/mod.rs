//! A backup session's side of the lease/sweep protocol (docs/design.md,
//! "Concurrency"):
//!
//! - (a) [`Session::begin`] writes the lease, learns the store's time, and
//!   notes which sweeps had already finished and how much the running
//!   ones had deleted; [`Session::pin`] names the points the backup
//!   deduplicates against (read after `begin`);
//! - (b) [`Session::depend`] records objects found already stored;
//! - (c) [`Session::check`] writes the lease and reads the sweep markers:
//!   for every sweep that did not finish before the session began, it
//!   says which references to re-check, or to wait while a delete batch
//!   chosen before the lease was seen is in flight (never for a whole
//!   sweep);
//! - (d) the caller writes the manifest; (e) [`Session::end`] rewrites the
//!   lease as ended, naming the committed point.

mod check;
#[cfg(test)]
mod heartbeat_tests;
mod life;
mod settle;

pub use life::{Began, LeaseLife, Life};

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OwnedMutexGuard;

use crate::backend::{PutMode, PutOptions};
use crate::error::{Error, Result};
use crate::gc::markers::{SweepLog, SweepState};
use crate::id::PointId;
use crate::keys;
use crate::lease::{Ended, LeaseRecord, ObjectRef};
use crate::names::VmName;
use crate::repo::Repository;

/// Sweep markers read at once (a backup's start, a check).
const MARKERS_AT_ONCE: usize = 8;

/// How long [`Session::abandon`] waits for the lease's removal.
pub const ABANDON_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug)]
pub struct Session {
    repo: Repository,
    key: String,
    record: Arc<Mutex<LeaseRecord>>,
    /// Lease writes one at a time, each holding it until the store has
    /// answered (`put_lease`), so that no write lands after the session
    /// ended.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Sweeps finished before the session began: nothing they deleted
    /// was relied on.
    done_at_start: BTreeSet<u64>,
    /// Sweeps running when the session began, with how many objects they
    /// had deleted by then.
    deleted_at_start: BTreeMap<u64, u64>,
    /// The highest sequence number seen when the session began.
    last_at_start: u64,
    /// Sweeps accounted for, with the lease content (deps, pins) they
    /// were judged against and whether they had finished then.
    settled: BTreeMap<u64, ((usize, usize), bool)>,
    /// Sweeps judged in the last `check` that had finished.
    finished: BTreeSet<u64>,
    /// The lease content at the last `check`.
    content: (usize, usize),
    /// Sweeps seen with a delete batch in flight: batches completed then,
    /// and the lease content written before that look.
    in_flight: BTreeMap<u64, (u64, (usize, usize))>,
    /// The store's time at the last `check`.
    checked_at: Option<DateTime<Utc>>,
    /// When the last `check` began, by this host's clock.
    check_began: Option<std::time::Instant>,
    /// Running repair sweeps, with how many objects they had deleted when
    /// the session last checked all it uses against them.
    targeted: BTreeMap<u64, u64>,
    /// Deletion counts of running repair sweeps a pending `Verify` covers.
    targeted_pending: BTreeMap<u64, u64>,
    /// The lease content of the first `check` that wrote it (and of every
    /// one since, with no stall between) and the highest sweep number that
    /// check listed: higher numbers began after that lease was written.
    baseline: Option<((usize, usize), u64)>,
    /// Deps (a prefix of them) found stored by a `Verify` asked after the
    /// lease naming them was written and no batch chosen before that was
    /// in flight. Every dep is checked so once, whatever the sweeps say:
    /// an index object may still name a pack a sweep deleted before the
    /// session began (it stays while it names a pack a lease protects),
    /// and a batch counted in `deleted_at_start` may still have been
    /// deleting when the session looked something up.
    deps_checked: usize,
    /// The deps recorded, to record each once: a pack many segments reuse
    /// chunks from was recorded by each of them (58 deps, each HEADed,
    /// for the 19 packs of a repository in `bench/results/packs-64k.md`).
    recorded: Mutex<HashSet<ObjectRef>>,
}

/// What [`Session::check`] asks of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No sweep can have removed anything the session uses, and every
    /// later deletion respects the lease as written: commit.
    Clear,
    /// A sweep is deleting a batch it chose before it could see the lease
    /// as it is now; ask again shortly.
    Wait {
        seq: u64,
        /// Why, for the user.
        reason: String,
        /// The longest the wait can last (then the sweep counts as dead).
        at_most_secs: u64,
    },
    /// These sweeps may have removed objects the session uses: check that
    /// the listed ones (or, with `all`, every referenced one) still exist,
    /// restore any missing, then [`Session::settle`] and check again.
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
            ended: None,
        };
        let b = repo.backend();
        b.put(&key, record.encode(repo.codec())?, PutMode::Create)
            .await?;
        let started = async {
            // The lease's own time is the session's start. Readers use the
            // object's time until a later write records it in the lease.
            let (at, log) = time_and_log(repo, &key).await?;
            // Unreadable or gone: count everything it deleted as after us.
            let running = log.running().map(|(seq, _)| seq);
            let deleted_at_start = read_markers(running, async |seq| {
                match SweepState::load(repo, seq, false).await {
                    Ok(Some(s)) => Ok(s.deleted()),
                    Ok(None) => Ok(0),
                    Err(e) if e.is_damage() => Ok(0),
                    Err(e) => Err(e),
                }
            })
            .await?;
            Ok((at, log, deleted_at_start))
        };
        let (at, log, deleted_at_start) = match started.await {
            Ok(s) => s,
            Err(e) => {
                // Nothing is pinned or written under the lease yet: take
                // it back (best effort: the store may be what failed), so
                // gc does not see a live session until it expires.
                let _ = b.delete_many(std::slice::from_ref(&key)).await;
                return Err(e);
            }
        };
        record.started = Some(at);
        Ok(Session {
            repo: repo.clone(),
            key,
            record: Arc::new(Mutex::new(record)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            done_at_start: log.done.keys().copied().collect(),
            deleted_at_start,
            last_at_start: log.last_seq(),
            settled: BTreeMap::new(),
            finished: BTreeSet::new(),
            content: (0, 0),
            in_flight: BTreeMap::new(),
            checked_at: None,
            check_began: None,
            targeted: BTreeMap::new(),
            targeted_pending: BTreeMap::new(),
            baseline: None,
            deps_checked: 0,
            recorded: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session id (the lease's name).
    pub fn id(&self) -> String {
        self.lock().session.clone()
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
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<ObjectRef> = refs.into_iter().filter(|r| recorded.insert(*r)).collect();
        self.lock().deps.extend(new);
    }

    /// The session's start on the store's clock (its lease's time).
    pub fn started(&self) -> Option<DateTime<Utc>> {
        self.lock().started
    }

    /// What the session recorded as relied on without writing it.
    pub fn deps(&self) -> Vec<ObjectRef> {
        self.lock().deps.clone()
    }

    /// Rewrites the lease (keeping it alive), unless the session ended.
    async fn write(&self) -> Result<()> {
        write_lease(&self.repo, &self.key, &self.record, self.writer.clone()).await
    }

    /// True when the manifest, written at `committed` (the store's time),
    /// came so long after the last `check` that the lease may have died in
    /// between: a sweep may then have missed both the lease and the point.
    /// The caller checks again ([`Session::check`]) and repairs.
    pub fn committed_late(&self, committed: DateTime<Utc>) -> bool {
        let ttl = self.repo.config().protocol.ttl();
        self.checked_at.is_none_or(|t| committed - t > ttl / 2)
    }

    /// How long ago the last `check` began, by this host's clock (`None`:
    /// no check yet).
    pub fn since_check(&self) -> Option<std::time::Duration> {
        self.check_began.map(|t| t.elapsed())
    }

    /// (e): ends the session. A committed point is named in the lease,
    /// rewritten as ended (sweeps that began before the commit learn of
    /// the point from it; a later sweep removes it). A session that
    /// committed nothing deletes its lease: what it wrote is garbage.
    pub async fn end(self, committed: Option<PointId>) -> Result<()> {
        match committed {
            Some(id) => {
                self.lock().ended = Some(Ended {
                    committed: Some(id),
                });
                let _one_at_a_time = self.writer.lock().await;
                let bytes = self.lock().encode(self.repo.codec())?;
                let opts = PutOptions::new(PutMode::Overwrite).urgent();
                self.repo.backend().put_opts(&self.key, bytes, opts).await?;
            }
            None => {
                let _one_at_a_time = self.writer.lock().await;
                self.lock().ended = Some(Ended { committed: None });
                self.repo
                    .backend()
                    .delete_many(std::slice::from_ref(&self.key))
                    .await?;
            }
        }
        Ok(())
    }

    /// Ends a session that committed nothing (a failed or cancelled
    /// backup or copy), waiting at most [`ABANDON_LIMIT`]: its lease only
    /// keeps garbage from gc, so a store that does not answer (a hung
    /// server, the very failure being reported) need not hold the user's
    /// error for the lease write in flight and the delete, each up to two
    /// attempts of the store's answer timeout (two minutes and more on a
    /// frozen S3 server, measured). Given up, the lease lives until its
    /// TTL, as a killed backup's does (`docs/design.md`, "Concurrency").
    pub async fn abandon(self) {
        let _ = tokio::time::timeout(ABANDON_LIMIT, self.end(None)).await;
    }

    /// Refreshes the lease in the background until dropped.
    pub fn heartbeat(&self) -> Heartbeat {
        let refresh = self.refresher();
        let every = self.repo.config().protocol.heartbeat();
        Heartbeat::every(every, move || {
            let refresh = refresh.clone();
            async move {
                // A failed refresh is not fatal: if the lease dies, the
                // sweeps that run meanwhile do not observe it, and `check`
                // then re-verifies everything.
                let _ = refresh.write().await;
            }
        })
    }

    /// What a heartbeat needs to write the lease, apart from the session.
    fn refresher(&self) -> Refresher {
        Refresher {
            repo: self.repo.clone(),
            key: self.key.clone(),
            record: self.record.clone(),
            writer: self.writer.clone(),
        }
    }
}

/// A session's lease as its heartbeats write it.
#[derive(Clone)]
struct Refresher {
    repo: Repository,
    key: String,
    record: Arc<Mutex<LeaseRecord>>,
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl Refresher {
    async fn write(&self) -> Result<()> {
        write_lease(&self.repo, &self.key, &self.record, self.writer.clone()).await
    }
}

impl Session {
    /// Refreshes the lease in the background until dropped, as
    /// [`Session::heartbeat`], for a session that never commits (a
    /// server's): its `check` never runs, so nothing else would notice
    /// the lease dying. Each accepted write is recorded in `life`; once
    /// it says the lease lapsed, the lease is not written again (a sweep
    /// may have taken it for dead and deleted what it pins: written
    /// again, it would pin points in neither `points/` nor `trash/`,
    /// which holds every later deletion). `told` hears the lease's state
    /// after every beat.
    pub fn heartbeat_watched(
        &self,
        life: std::sync::Arc<LeaseLife>,
        told: impl Fn(Life) + Send + Sync + 'static,
    ) -> Heartbeat {
        let refresh = self.refresher();
        let every = self.repo.config().protocol.heartbeat();
        // The lease's state is looked at every few seconds, between beats
        // and while a write hangs: looked at only when a beat ended, a
        // lapse (TTL less the margin) was seen a beat late, at the TTL or
        // after it, and after a host's suspend not before the next beat
        // (review 109.1).
        let watch = every.min(LIFE_WATCH);
        let lapsed = |life: &LeaseLife| matches!(life.life(), Life::Lapsed { .. });
        Heartbeat(tokio::spawn(async move {
            loop {
                let beat = tokio::time::Instant::now() + every;
                while tokio::time::Instant::now() < beat {
                    tokio::time::sleep_until(beat.min(tokio::time::Instant::now() + watch)).await;
                    told(life.life());
                }
                if lapsed(&life) {
                    continue;
                }
                let began = Began::now();
                let write = refresh.write();
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        written = &mut write => {
                            if written.is_ok() {
                                life.written(began);
                            }
                            break;
                        }
                        _ = tokio::time::sleep(watch) => told(life.life()),
                    }
                }
                told(life.life());
            }
        }))
    }
}

/// How often a server's lease's state is looked at (see
/// [`Session::heartbeat_watched`]).
const LIFE_WATCH: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes the lease unless its session ended (one write at a time).
async fn write_lease(
    repo: &Repository,
    key: &str,
    record: &Mutex<LeaseRecord>,
    writer: Arc<tokio::sync::Mutex<()>>,
) -> Result<()> {
    let held = writer.lock_owned().await;
    put_lease(repo, key, record, held).await.map(drop)
}

/// Writes the lease, holding the session's writer lock (`held`) until the
/// store has answered, and gives the lock back.
///
/// The PUT runs in a task of its own, which owns the lock: a caller that
/// stops waiting (a cancelled backup drops its work; a heartbeat is
/// aborted) does not cancel it. A store that has received a request may
/// apply it whether or not the client still waits, so a PUT dropped in
/// flight could land after the session's end deleted the lease, and bring
/// it back: every gc would then take it for a running backup until its
/// TTL ran out (found in review; `integration/tests/lease_landing.rs`).
/// `end` takes the lock, so it deletes only once every write sent has
/// been answered. A write that fails without an answer (a timeout), or
/// an attempt the client gave up on before a retry succeeded, may still
/// land: that lease lives until its TTL, as a killed backup's does. So a
/// Ctrl-C waits for the lease write in flight, at most the store's
/// request timeouts; the write is urgent, so an upload budget does not
/// hold it back behind the packs (`PutOptions::urgent`).
async fn put_lease(
    repo: &Repository,
    key: &str,
    record: &Mutex<LeaseRecord>,
    held: OwnedMutexGuard<()>,
) -> Result<OwnedMutexGuard<()>> {
    let bytes = {
        let r = record.lock().unwrap_or_else(|p| p.into_inner());
        if r.ended.is_some() {
            return Ok(held);
        }
        r.encode(repo.codec())?
    };
    let (repo, key) = (repo.clone(), key.to_string());
    let (put, held) = crate::task::detached("the lease write's task", async move {
        let opts = PutOptions::new(PutMode::Overwrite).urgent();
        let put = repo.backend().put_opts(&key, bytes, opts).await;
        (put, held)
    })
    .await?;
    put?;
    Ok(held)
}

/// The lease's time (its last write's, on the store's clock) and the
/// sweep log: each only needs the lease written, so one round trip for
/// the two.
async fn time_and_log(repo: &Repository, key: &str) -> Result<(DateTime<Utc>, SweepLog)> {
    let (head, log) = tokio::try_join!(
        async { repo.backend().head(key).await.map_err(Error::from) },
        SweepLog::read(repo)
    )?;
    Ok((head.last_modified, log))
}

/// What `read` gives for each sweep in `seqs`, their markers read
/// [`MARKERS_AT_ONCE`] at once.
async fn read_markers<T>(
    seqs: impl IntoIterator<Item = u64>,
    read: impl AsyncFn(u64) -> Result<T>,
) -> Result<BTreeMap<u64, T>> {
    let read = &read;
    futures::stream::iter(seqs)
        .map(|seq| async move { Ok((seq, read(seq).await?)) })
        .buffered(MARKERS_AT_ONCE)
        .try_collect()
        .await
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
