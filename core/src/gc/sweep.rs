//! One sweep, step by step (docs/design.md, "Concurrency", sweep G):
//!
//! 1. [`Sweep::begin`] writes `gc/sweeps/<seq>` create-only; its time
//!    (the store's) is the sweep's start.
//! 2. [`Sweep::read_leases`] (the first look at the leases, see
//!    [`super::protect`]), **then** [`Sweep::read_points`] (points before
//!    trash: prune writes trash before deleting the point).
//! 3. [`Sweep::mark`]: every node and chunk reachable from the points.
//! 4. [`Sweep::delete`]: lists nodes, then takes a census of packs and
//!    writes what replaces the packs and index objects to go (see
//!    [`packs`]); each batch of candidates is announced in the marker ([`Phase::Deleting`]), filtered after
//!    another look at the leases ([`Sweep::begin_batch`]), then deleted
//!    and the marker set back to [`Phase::Idle`] ([`Sweep::commit_batch`]).
//!    A backup that sees no batch in flight knows that every later
//!    deletion respects its lease as it is now; one that sees a batch in
//!    flight waits for that batch only.
//! 5. [`Sweep::finish`]: deletes unpinned trash, dead and old ended
//!    leases, old markers and staging files, and writes `gc/done/<seq>`.
//!
//! The marker is kept fresh by a heartbeat ([`Sweep::heartbeat`]); before
//! deleting, the sweep checks (by the store's clock) that it was never
//! silent for half the sweep TTL, else backups may have judged it dead
//! and it stops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::GcReport;
use super::census;
use super::markers::{Phase, SweepLog, SweepState, check_seq};
use super::marks::{self, Marks};
use super::pack_plan::{ClassRules, DEFAULT_MAX_WASTE_PCT, class_rules};
use super::protect::{PointKey, Protection};
use super::spill;
use crate::backend::{ObjectMeta, PutMode};
use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::placement::lookup::default_cache_dir;
use crate::progress::{GcStep, Notice, Progress};

/// Points marked between two `GcStep::Marking` notices.
const MARK_STEP: u64 = 100;
use crate::repo::Repository;
use crate::session::Heartbeat;

mod batches;
mod cancel;
mod cleanup;
mod index_writes;
mod keepers;
mod locked;
mod packs;
mod preflight;
mod publisher;
mod spare;
pub mod targeted;

use publisher::Publisher;

/// Delete requests carry at most this many keys (the S3 limit).
const BATCH: usize = 1000;
/// Markers of this many most recent sweeps are always kept.
const KEEP_MARKERS: u64 = 16;

/// A listed object the sweep may delete.
#[derive(Clone, Debug)]
pub enum Listed {
    Node(ObjectMeta, ObjectId),
    /// A pack with no live chunk, or one whose live chunks were moved.
    Pack(ObjectMeta, ObjectId),
    /// An index object whose surviving entries were written anew.
    Index(ObjectMeta, ObjectId),
}

impl Listed {
    /// A listed object under `nodes/`, if it is named like a node
    /// (anything else under the prefix is not ours to delete).
    pub fn node(meta: ObjectMeta) -> Option<Listed> {
        let id = keys::parse_content(&meta.key)?;
        Some(Listed::Node(meta, id))
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Listed::Node(meta, _) | Listed::Pack(meta, _) | Listed::Index(meta, _) => meta,
        }
    }

    fn name(&self) -> ObjectId {
        match self {
            Listed::Node(_, id) | Listed::Pack(_, id) | Listed::Index(_, id) => *id,
        }
    }
}

/// A deletion candidate: unmarked and old when listed.
#[derive(Clone, Debug)]
pub struct Candidate {
    listed: Listed,
}

impl Candidate {
    fn new(listed: Listed) -> Self {
        Candidate { listed }
    }

    /// The object's id (a node's) or name (a pack's, an index object's).
    pub fn id(&self) -> ObjectId {
        self.listed.name()
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.meta().key
    }

    fn meta(&self) -> &ObjectMeta {
        self.listed.meta()
    }
}

/// How a sweep judges packs: the rules of the class its packs are stored
/// in, the waste above which a hot pack is rewritten, and the entries an
/// index shard is sized for (tests shrink it); and the memory its chunk
/// marks may take before they go to files in `mark_dir` (`None`: `$TMPDIR`,
/// else the repository's cache directory; see `gc/spill.rs`).
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// For packs whose listing reports no storage class.
    pub rules: ClassRules,
    /// Minimum storage days per class (the repository's setting), for
    /// the classes listings report.
    pub min_storage_days: BTreeMap<String, u32>,
    pub max_waste_pct: u8,
    pub shard_entries: u64,
    pub mark_memory: usize,
    pub mark_dir: Option<PathBuf>,
}

impl PackOptions {
    /// The default options for a sweep of a repository with `config`:
    /// packs judged by the rules of the class chunk data is stored in
    /// (`client_class`, what this client asks for, else the class the
    /// config names, else a hot class without a minimum), with the
    /// config's minimum storage durations. `gc` and `prune` both take
    /// these: a sweep judging an archive repository's packs by hot rules
    /// would read them to rewrite them.
    pub fn for_repository(config: &RepoConfig, client_class: Option<&str>) -> PackOptions {
        let class = client_class
            .or(config.store.data_storage_class.as_deref())
            .unwrap_or_default();
        PackOptions {
            rules: class_rules(class, &config.store.min_storage_days),
            min_storage_days: config.store.min_storage_days.clone(),
            ..PackOptions::default()
        }
    }
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            rules: class_rules("", &Default::default()),
            min_storage_days: BTreeMap::new(),
            max_waste_pct: DEFAULT_MAX_WASTE_PCT,
            shard_entries: crate::placement::shard::SHARD_ENTRIES,
            mark_memory: marks::DEFAULT_BUDGET,
            mark_dir: None,
        }
    }
}

/// The running sweep a new one gave way to (see [`Sweep::begin`]).
#[derive(Debug)]
struct Yielded {
    seq: u64,
    host: String,
    /// When its marker was last refreshed (the store's clock).
    refreshed: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Sweep {
    repo: Repository,
    dry_run: bool,
    seq: u64,
    started: DateTime<Utc>,
    /// The running sweep this one gave way to, if any.
    yielded: Option<Yielded>,
    batch_size: usize,
    pack_opts: PackOptions,
    census: Option<census::Census>,
    marker: Arc<Publisher>,
    log: SweepLog,
    prot: Protection,
    points: BTreeSet<PointKey>,
    trash: BTreeSet<PointKey>,
    report: GcReport,
    /// Asks the sweep to stop at its next safe point (see [`cancel`]).
    progress: Option<Arc<Progress>>,
    /// Packs the repack wrote, for the undo of a cancelled sweep.
    new_packs: Vec<ObjectId>,
}

impl Sweep {
    /// Step 1. A dry run writes nothing and takes the local clock as the
    /// store's (it only reports).
    pub async fn begin(repo: &Repository, dry_run: bool) -> Result<Sweep> {
        let b = repo.backend();
        let mut log = SweepLog::read(repo).await?;
        let mut seq = log.last_seq() + 1;
        check_seq(seq)?;
        let host = crate::host::name();
        let state = |seq| SweepState {
            seq,
            host: host.clone(),
            ..SweepState::default()
        };
        let started = if dry_run {
            Utc::now()
        } else {
            preflight::may_sweep(b.as_ref()).await?;
            loop {
                match b
                    .put(
                        &keys::sweep(seq),
                        state(seq).encode(repo.codec(), &keys::sweep(seq))?,
                        PutMode::Create,
                    )
                    .await
                {
                    Ok(()) => break,
                    // Another sweep took the number.
                    Err(e) if e.is_already_exists() => {
                        log = SweepLog::read(repo).await?;
                        seq = log.last_seq().max(seq) + 1;
                        check_seq(seq)?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            b.head(&keys::sweep(seq)).await?.last_modified
        };
        // One sweep at a time: a sweep that listed an object as garbage
        // must not delete it after another sweep deleted it and a backup
        // stored it anew. Of sweeps starting together, the lowest number
        // goes on; a running sweep with a fresh marker makes this one
        // yield. (A sweep paused past the sweep TTL stops itself before
        // deleting again.) A marker that says its sweep is over (it gave
        // way itself, or stopped) is no reason to yield: it is fresh and
        // has no done marker, but that sweep deletes nothing more, and
        // yielding to it would make every sweep yield to the one before
        // while they keep starting.
        let ttl = repo.config().protocol.sweep_ttl();
        let mut yielded = None;
        if !dry_run {
            let now_log = SweepLog::read(repo).await?;
            for (other, refreshed) in now_log.running() {
                if other < seq && started - refreshed <= ttl {
                    let host = match SweepState::load(repo, other, false).await {
                        // Stopped (failed, or gave way itself): not running.
                        Ok(Some(s)) if s.phase.is_over() => continue,
                        Ok(Some(s)) => s.host,
                        // Gone or unreadable: it may be running.
                        _ => "another host".into(),
                    };
                    yielded = Some(Yielded {
                        seq: other,
                        host,
                        refreshed,
                    });
                    break;
                }
            }
        }
        let marker = Arc::new(Publisher {
            repo: repo.clone(),
            key: keys::sweep(seq),
            dry_run,
            state: Mutex::new(state(seq)),
            write: tokio::sync::Mutex::new(()),
            last: Mutex::new(started),
            max_silence: ttl / 2,
            dead: std::sync::atomic::AtomicBool::new(false),
        });
        if yielded.is_some() {
            marker.update(|s| s.phase = Phase::Stopped);
            marker.write().await?;
        }
        let sweep = Sweep {
            repo: repo.clone(),
            dry_run,
            seq,
            started,
            yielded,
            batch_size: BATCH,
            pack_opts: PackOptions::default(),
            census: None,
            marker,
            log,
            prot: Protection::new(repo, seq, started),
            points: BTreeSet::new(),
            trash: BTreeSet::new(),
            report: GcReport {
                seq,
                dry_run,
                ..GcReport::default()
            },
            progress: None,
            new_packs: Vec::new(),
        };
        Ok(sweep.with_pack_options(PackOptions::default()))
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The running sweep (number, host) this one gave way to: then it
    /// does nothing more (see [`Sweep::begin`]).
    pub fn yielded_to(&self) -> Option<(u64, &str)> {
        self.yielded.as_ref().map(|y| (y.seq, y.host.as_str()))
    }

    /// Why this sweep gave way, for the report: the sweep it gave way to,
    /// and how long ago its marker was refreshed and how long until a
    /// sweep killed meanwhile stops counting as running (its marker goes
    /// stale after the sweep TTL). A killed gc's marker makes the next
    /// ones give way until then, and that looked like a gc still running
    /// somewhere (found by a crash walk).
    pub fn yield_reason(&self) -> Option<String> {
        let Yielded {
            seq,
            host,
            refreshed,
        } = self.yielded.as_ref()?;
        let ttl = self.repo.config().protocol.sweep_ttl();
        let age = (self.started - *refreshed).max(chrono::Duration::zero());
        let left = (ttl - age).max(chrono::Duration::zero());
        Some(format!(
            "gc sweep {seq} is running on {host}; one sweep runs at a time (its marker was \
             refreshed {} s ago; if that gc was killed, it stops counting as running {} s \
             from now)",
            age.num_seconds(),
            left.num_seconds().max(1)
        ))
    }

    /// How packs are judged (`gc --max-waste`, the data's storage class).
    /// Also sets the memory of the chunk marks, before anything is
    /// marked (marks already there are never dropped: the budget then
    /// stays as it was).
    pub fn with_pack_options(mut self, opts: PackOptions) -> Self {
        let dir = opts
            .mark_dir
            .clone()
            .unwrap_or_else(|| spill::base_dir(default_cache_dir(&self.repo.config().repo_id)));
        if self.prot.marks.is_empty() {
            self.prot.marks = Marks::with_budget(opts.mark_memory, Some(dir));
        }
        self.pack_opts = opts;
        self
    }

    /// Stops at the next safe point once `progress` is cancelled (SIGINT),
    /// with [`Error::Cancelled`] (see [`cancel`]).
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Deletes in batches of at most `n` objects (default and maximum
    /// 1,000, the S3 limit). Smaller batches look at the leases more often.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.clamp(1, BATCH);
        self
    }

    /// Marks the sweep stopped after a failed step (best effort), so that
    /// the next sweep need not wait for its marker to go stale.
    pub async fn stop(&self) {
        if self.dry_run {
            return;
        }
        self.marker.update(|s| s.phase = Phase::Stopped);
        let _ = self.marker.write().await;
    }

    /// Step 2a: the first look at the leases.
    pub async fn read_leases(&mut self) -> Result<()> {
        self.look().await?;
        self.report.live_leases = self.prot.observed.len() as u64;
        Ok(())
    }

    /// Looks at the leases and publishes what the sweep now observes.
    async fn look(&mut self) -> Result<()> {
        let (now, _) = self.marker.write().await?;
        if self.marker.is_dead() {
            return self.refresh().await;
        }
        let r = &self.report;
        let deleted =
            r.chunks_deleted + r.nodes_deleted + r.packs_deleted + r.index_objects_deleted;
        self.prot.look(now, deleted).await?;
        let observed = self.prot.observed.values().cloned().collect();
        self.marker.update(|s| {
            s.observed = observed;
            s.leases_read_at = Some(now);
        });
        Ok(())
    }

    /// Step 2b: points, then trash.
    pub async fn read_points(&mut self) -> Result<()> {
        self.points = self.repo.list_points(None).await?.into_iter().collect();
        self.trash = self.repo.list_trashed_points().await?.into_iter().collect();
        self.report.points = self.points.len() as u64;
        self.step(GcStep::Listed {
            points: self.report.points,
            live_leases: self.report.live_leases,
        });
        Ok(())
    }

    /// Tells the user (through `progress`) where the sweep is.
    pub(super) fn step(&self, step: GcStep) {
        if let Some(p) = &self.progress {
            p.notice(Notice::GcStep(step));
        }
    }

    /// Step 3.
    pub async fn mark(&mut self) -> Result<()> {
        let points = self.points.clone();
        let of = points.len() as u64;
        for (i, (vm, id)) in points.into_iter().enumerate() {
            self.stop_if_cancelled().await?;
            // Pruned since the listing: its trash copy or nothing.
            self.prot.mark_point(&vm, &id).await?;
            let done = i as u64 + 1;
            if done.is_multiple_of(MARK_STEP) && done < of {
                self.step(GcStep::Marking { done, of });
            }
        }
        self.prot.marks.seal()?;
        self.count_marks();
        self.step(GcStep::Marked {
            nodes: self.report.nodes_marked,
            chunks: self.report.chunks_marked,
        });
        Ok(())
    }

    fn count_marks(&mut self) {
        let (nodes, chunks) = self.prot.marks.counts();
        self.report.nodes_marked = nodes as u64;
        self.report.chunks_marked = chunks as u64;
        self.report.mark_state_bytes = self.prot.marks.state_bytes() as u64;
        self.report.mark_passes = self.prot.marks.passes() as u64;
        self.report.pinned_points = self.prot.pinned.len() as u64;
    }

    /// Keeps the marker fresh in the background until dropped, so that
    /// backups see the sweep alive however long a step takes.
    pub fn heartbeat(&self) -> Heartbeat {
        let marker = self.marker.clone();
        Heartbeat::every(self.repo.config().protocol.sweep_heartbeat(), move || {
            let marker = marker.clone();
            // A failed refresh is not fatal: the check before the next
            // delete batch sees the silence and stops the sweep.
            async move {
                let _ = marker.write().await;
            }
        })
    }

    /// Rewrites the marker and checks, by the store's clock, that it was
    /// not silent for long enough for backups to judge the sweep dead.
    async fn refresh(&mut self) -> Result<()> {
        let (_, silent) = self.marker.write().await?;
        if self.marker.is_dead() {
            // Say so, so that backups need not wait for the marker to go
            // stale (best effort: a stale marker means the same).
            self.marker.update(|s| s.phase = Phase::Stopped);
            let _ = self.marker.write().await;
            return Err(Error::SweepStopped {
                seq: self.seq,
                reason: format!(
                    "its marker went more than {} s without a refresh (the last gap: {} s), so \
                     backups may have judged it dead (run gc again)",
                    self.marker.max_silence.num_seconds(),
                    silent.num_seconds()
                ),
                damage: false,
            });
        }
        Ok(())
    }
}
