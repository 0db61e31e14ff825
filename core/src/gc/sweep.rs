//! One sweep, step by step (docs/design.md, "Concurrency", sweep G):
//!
//! 1. [`Sweep::begin`] writes `gc/sweeps/<seq>`; its time (the store's) is
//!    the sweep's start.
//! 2. [`Sweep::read_leases`], **then** [`Sweep::read_points`] (points
//!    before trash: prune writes trash before deleting the point).
//! 3. [`Sweep::mark`]: every node and chunk reachable from the points, the
//!    pinned points and the live leases' dependencies; each node once.
//! 4. [`Sweep::delete`]: lists nodes and chunks and deletes, in batches,
//!    those unmarked and older than both the sweep's start and the oldest
//!    live lease's start, minus the clock margin. Before each batch the
//!    marker is refreshed; if the store's clock says more than half a TTL
//!    passed since the previous refresh (its own or the heartbeat's,
//!    [`Sweep::heartbeat`]), backups may have judged the sweep dead and
//!    stopped waiting for it, so it stops.
//! 5. [`Sweep::finish`]: deletes unpinned trash, dead leases and old
//!    markers, and writes `gc/done/<seq>` naming the leases it honoured.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::GcReport;
use super::markers::{DoneMarker, Honoured, SweepLog, SweepMarker};
use super::marks::Marks;
use crate::backend::{ObjectMeta, PutMode};
use crate::error::{Error, Result};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::{ObjectRef, SeenLease, read_leases};
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::repo::Repository;
use crate::session::Heartbeat;

/// Rewrites a sweep's marker; returns the store's time of the write.
async fn write_marker(repo: &Repository, seq: u64) -> Result<DateTime<Utc>> {
    let key = keys::sweep(seq);
    let marker = SweepMarker {
        seq,
        host: crate::host::name(),
    };
    let b = repo.backend();
    b.put(&key, marker.encode()?, PutMode::Overwrite).await?;
    Ok(b.head(&key).await?.last_modified)
}

/// Delete requests carry at most this many keys (the S3 limit).
const BATCH: usize = 1000;
/// Markers of this many most recent sweeps are always kept.
const KEEP_MARKERS: u64 = 16;
/// Nodes fetched at once while marking.
const FETCHES: usize = 32;

type PointKey = (VmName, PointId);

#[derive(Debug)]
pub struct Sweep {
    repo: Repository,
    dry_run: bool,
    seq: u64,
    started: DateTime<Utc>,
    /// The store's time at the last marker refresh (by the sweep or its
    /// heartbeat).
    last_refresh: Arc<Mutex<DateTime<Utc>>>,
    log: SweepLog,
    live: Vec<SeenLease>,
    dead: Vec<ObjectMeta>,
    points: BTreeSet<PointKey>,
    trash: BTreeSet<PointKey>,
    honoured: Vec<Honoured>,
    /// Why nothing may be deleted this time, if so.
    hold: Option<String>,
    marks: Marks,
    report: GcReport,
}

impl Sweep {
    /// Step 1. A dry run writes nothing and takes the local clock as the
    /// store's (it only reports).
    pub async fn begin(repo: &Repository, dry_run: bool) -> Result<Sweep> {
        let b = repo.backend();
        let mut log = SweepLog::read(repo).await?;
        let mut seq = log.last_seq() + 1;
        let started = if dry_run {
            Utc::now()
        } else {
            let host = crate::host::name();
            loop {
                let marker = SweepMarker {
                    seq,
                    host: host.clone(),
                };
                match b
                    .put(&keys::sweep(seq), marker.encode()?, PutMode::Create)
                    .await
                {
                    Ok(()) => break,
                    // Another sweep took the number.
                    Err(e) if e.is_already_exists() => {
                        log = SweepLog::read(repo).await?;
                        seq = log.last_seq().max(seq) + 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            b.head(&keys::sweep(seq)).await?.last_modified
        };
        Ok(Sweep {
            repo: repo.clone(),
            dry_run,
            seq,
            started,
            last_refresh: Arc::new(Mutex::new(started)),
            log,
            live: Vec::new(),
            dead: Vec::new(),
            points: BTreeSet::new(),
            trash: BTreeSet::new(),
            honoured: Vec::new(),
            hold: None,
            marks: Marks::default(),
            report: GcReport {
                seq,
                dry_run,
                ..GcReport::default()
            },
        })
    }

    /// Step 2a.
    pub async fn read_leases(&mut self) -> Result<()> {
        let (live, dead) = read_leases(&self.repo, self.started).await?;
        self.report.live_leases = live.len() as u64;
        self.live = live;
        self.dead = dead;
        Ok(())
    }

    /// Step 2b: points, then trash.
    pub async fn read_points(&mut self) -> Result<()> {
        self.points = self.repo.list_points(None).await?.into_iter().collect();
        let trash: Vec<ObjectMeta> = self
            .repo
            .backend()
            .list(&format!("{}{}", keys::TRASH, keys::POINTS))
            .try_collect()
            .await?;
        self.trash = trash
            .iter()
            .filter_map(|m| keys::parse_point(m.key.strip_prefix(keys::TRASH)?))
            .collect();
        self.report.points = self.points.len() as u64;
        Ok(())
    }

    fn pinned(&self) -> BTreeSet<PointKey> {
        self.live
            .iter()
            .flat_map(|l| l.record.pins.iter().cloned())
            .collect()
    }

    /// Step 3.
    pub async fn mark(&mut self) -> Result<()> {
        let pinned = self.pinned();
        self.report.pinned_points = pinned.len() as u64;
        let mut roots: Vec<PointKey> = self.points.iter().cloned().collect();
        roots.extend(pinned.iter().filter(|p| !self.points.contains(*p)).cloned());
        let mut gone = HashSet::new();
        for (vm, id) in roots {
            match self.load_point(&vm, &id).await? {
                Some(m) => self.mark_point(&m).await?,
                None => {
                    gone.insert((vm, id));
                }
            }
        }
        let live = std::mem::take(&mut self.live);
        for lease in &live {
            let mut nodes = Vec::new();
            for dep in &lease.record.deps {
                match dep {
                    ObjectRef::Chunk(id) => self.marks.chunk(id),
                    ObjectRef::Node(id) => nodes.push(*id),
                }
            }
            // A dependency that is gone is the session's to find (it
            // re-checks); it is not damage of any point.
            self.mark_nodes(nodes, false).await?;
            let r = &lease.record;
            let pins_resolved = r.pins.iter().all(|p| !gone.contains(p));
            if !pins_resolved {
                // A running (or just finished) backup uses a point that
                // was pruned before its pin was seen: what it uses is
                // unknown, so nothing is deleted this time.
                self.hold = Some(format!(
                    "backup session {} uses a point pruned meanwhile",
                    r.session
                ));
            }
            self.honoured.push(Honoured {
                session: r.session.clone(),
                pins: r.pins.len() as u64,
                deps: r.deps.len() as u64,
                pins_resolved,
            });
        }
        self.live = live;
        self.marks.seal();
        let (nodes, chunks) = self.marks.counts();
        self.report.nodes_marked = nodes as u64;
        self.report.chunks_marked = chunks as u64;
        self.report.mark_state_bytes = self.marks.state_bytes() as u64;
        Ok(())
    }

    /// A point from `points/`, else from `trash/`; `None` if it is in
    /// neither any more (pruned since the listing).
    async fn load_point(&self, vm: &VmName, id: &PointId) -> Result<Option<Manifest>> {
        for key in [keys::point(vm, id), keys::trashed_point(vm, id)] {
            match self.repo.load_manifest_at(&key, vm, id).await {
                Ok(m) => return Ok(Some(m)),
                Err(Error::PointNotFound { .. }) => continue,
                Err(e) => return Err(self.stop(format!("cannot read point {vm}@{id}: {e}"))),
            }
        }
        Ok(None)
    }

    async fn mark_point(&mut self, m: &Manifest) -> Result<()> {
        let nodes = m
            .disks
            .iter()
            .flat_map(|d| d.segments.iter().flatten().copied())
            .collect();
        self.mark_nodes(nodes, true).await
    }

    /// Marks nodes not marked yet and their chunks. A missing or damaged
    /// node of a point stops the sweep: its chunks cannot be known, and
    /// deleting around it could destroy what a repair needs.
    async fn mark_nodes(&mut self, ids: Vec<ObjectId>, of_point: bool) -> Result<()> {
        let fresh: Vec<ObjectId> = ids.into_iter().filter(|id| self.marks.node(*id)).collect();
        // The stream holds its own handle, so chunks are marked as nodes
        // arrive (no list of a whole point's chunks in memory).
        let repo = self.repo.clone();
        let mut loaded = futures::stream::iter(fresh)
            .map(|id| {
                let repo = &repo;
                async move { (id, repo.load_node(&id).await) }
            })
            .buffer_unordered(FETCHES);
        let mut failed = None;
        while let Some((id, node)) = loaded.next().await {
            match node {
                Ok(n) => n.chunk_ids().for_each(|c| self.marks.chunk(&c)),
                Err(e) if of_point => {
                    failed.get_or_insert(format!(
                        "node {} cannot be read ({e}); run `xfull verify`",
                        id.short()
                    ));
                }
                Err(_) => {}
            }
        }
        drop(loaded);
        match failed {
            Some(reason) => Err(self.stop(reason)),
            None => Ok(()),
        }
    }

    /// Stops the sweep because of damage.
    fn stop(&self, reason: String) -> Error {
        Error::SweepStopped {
            seq: self.seq,
            reason,
            damage: true,
        }
    }

    /// Keeps the marker fresh in the background until dropped, so that
    /// waiting backups see the sweep alive however long a step takes.
    pub fn heartbeat(&self) -> Heartbeat {
        let (repo, seq, last) = (self.repo.clone(), self.seq, self.last_refresh.clone());
        Heartbeat::every(repo.config().protocol.heartbeat(), move || {
            let (repo, last) = (repo.clone(), last.clone());
            async move {
                // A failed refresh is not fatal: the check before the next
                // delete batch sees the silence and stops the sweep.
                if let Ok(t) = write_marker(&repo, seq).await {
                    let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
                    *l = (*l).max(t);
                }
            }
        })
    }

    /// Rewrites the marker and checks, by the store's clock, that it was
    /// not silent for long enough for backups to judge the sweep dead.
    async fn refresh(&mut self) -> Result<()> {
        let now = write_marker(&self.repo, self.seq).await?;
        let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
        let silent = now - *last;
        if silent > self.repo.config().protocol.ttl() / 2 {
            return Err(Error::SweepStopped {
                seq: self.seq,
                reason: format!(
                    "its marker went {} s without a refresh, so backups may have stopped \
                     waiting for it (run gc again)",
                    silent.num_seconds()
                ),
                damage: false,
            });
        }
        *last = now;
        Ok(())
    }

    /// Objects older than this and unmarked may go: older than the sweep's
    /// start and the oldest live lease's, minus the clock margin.
    fn cutoff(&self) -> DateTime<Utc> {
        let oldest_lease = self.live.iter().map(SeenLease::start).min();
        oldest_lease.map_or(self.started, |l| l.min(self.started))
            - self.repo.config().protocol.margin()
    }

    /// Step 4.
    pub async fn delete(&mut self) -> Result<()> {
        if let Some(why) = &self.hold {
            self.report.held = Some(format!("{why}; nothing deleted (run gc again later)"));
            return Ok(());
        }
        let cutoff = self.cutoff();
        for prefix in [keys::NODES, keys::CHUNKS] {
            let is_node = prefix == keys::NODES;
            let mut batch = Vec::new();
            let mut freed = 0;
            // The listing holds its own handle, so batches can be deleted
            // while it goes on (deleting listed keys is safe on S3 and
            // local directories alike).
            let backend = self.repo.backend().clone();
            let mut listing = backend.list(prefix);
            while let Some(meta) = listing.try_next().await? {
                // Anything else under the prefix is not ours to delete.
                let Some(id) = keys::parse_content(&meta.key) else {
                    continue;
                };
                let live = if is_node {
                    self.marks.has_node(&id)
                } else {
                    self.marks.has_chunk(&id)
                };
                if is_node {
                    self.report.nodes_listed += 1;
                } else {
                    self.report.chunks_listed += 1;
                }
                if live {
                    continue;
                }
                if meta.last_modified >= cutoff {
                    self.report.young_kept += 1;
                    continue;
                }
                freed += meta.size;
                batch.push(meta.key);
                if batch.len() == BATCH {
                    self.delete_batch(&mut batch, is_node, &mut freed).await?;
                }
            }
            drop(listing);
            self.delete_batch(&mut batch, is_node, &mut freed).await?;
        }
        Ok(())
    }

    async fn delete_batch(
        &mut self,
        batch: &mut Vec<String>,
        is_node: bool,
        freed: &mut u64,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if !self.dry_run {
            self.refresh().await?;
            self.repo.backend().delete_many(batch).await?;
        }
        let n = batch.len() as u64;
        if is_node {
            self.report.nodes_deleted += n;
        } else {
            self.report.chunks_deleted += n;
        }
        self.report.bytes_freed += std::mem::take(freed);
        batch.clear();
        Ok(())
    }

    /// Step 5.
    pub async fn finish(mut self) -> Result<GcReport> {
        let pinned = self.pinned();
        let mut doomed: Vec<String> = self
            .trash
            .iter()
            .filter(|p| !pinned.contains(*p))
            .map(|(vm, id)| keys::trashed_point(vm, id))
            .collect();
        self.report.trash_removed = doomed.len() as u64;
        self.report.dead_leases_removed = self.dead.len() as u64;
        doomed.extend(self.dead.iter().map(|m| m.key.clone()));
        // Markers matter to backups that began before the sweep finished;
        // those of sweeps over before the oldest live lease began (and
        // before this one) are of no use to anyone. The newest stay, so
        // sequence numbers keep counting up.
        let ttl = self.repo.config().protocol.ttl();
        let cutoff = self.cutoff();
        for (&seq, &refreshed) in &self.log.started {
            let over = match self.log.done.get(&seq) {
                Some(&done) => done < cutoff,
                None => self.started - refreshed > ttl && refreshed < cutoff,
            };
            if seq + KEEP_MARKERS <= self.seq && over {
                doomed.push(keys::sweep(seq));
                doomed.push(keys::done(seq));
            }
        }
        if self.dry_run {
            return Ok(self.report);
        }
        for part in doomed.chunks(BATCH) {
            self.refresh().await?;
            self.repo.backend().delete_many(part).await?;
        }
        // Staging files of killed writers, by the same age rule as objects
        // (a running writer's are younger than its lease).
        self.refresh().await?;
        self.report.incomplete_removed =
            self.repo.backend().remove_incomplete(self.cutoff()).await?;
        let done = DoneMarker {
            seq: self.seq,
            honoured: self.honoured.clone(),
            chunks_deleted: self.report.chunks_deleted,
            nodes_deleted: self.report.nodes_deleted,
        };
        self.repo
            .backend()
            .put(&keys::done(self.seq), done.encode()?, PutMode::Create)
            .await?;
        Ok(self.report)
    }
}
