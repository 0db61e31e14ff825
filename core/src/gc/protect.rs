//! What a sweep must not delete, and how it learns more of it while it
//! runs. A sweep looks at the leases when it starts and again before
//! every delete batch ([`Protection::look`]); every lease it has observed
//! live stays protected for the rest of the sweep, even after the lease
//! ends or dies:
//!
//! - its pinned points' nodes and chunks (a pinned point that cannot be
//!   found holds every further deletion);
//! - its dependencies (a node dependency with its chunks);
//! - everything the session wrote: the cutoff is lowered to the session's
//!   start, so nothing younger is deleted.
//!
//! Ended leases name the point their session committed: it is marked, so
//! a point committed after the sweep listed `points/` is safe too.
//! [`Observed`] records, per session, what the sweep had already deleted
//! before it knew of it, so that the backup can check exactly that.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::markers::Observed;
use super::marks::Marks;
use crate::backend::ObjectMeta;
use crate::config::Protocol;
use crate::error::{Error, Result};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::{LeaseAge, LeaseRecord, ObjectRef, SeenLease, age};
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::repo::Repository;

/// Nodes fetched at once while marking.
const FETCHES: usize = 32;

pub(super) type PointKey = (VmName, PointId);

/// A listed lease object and what was read of it.
#[derive(Debug, Clone)]
struct Known {
    meta: ObjectMeta,
    /// `None` if it could not be read (then it holds the sweep while live).
    record: Option<LeaseRecord>,
}

/// The live-object knowledge of one sweep.
#[derive(Debug)]
pub(super) struct Protection {
    repo: Repository,
    seq: u64,
    proto: Protocol,
    pub marks: Marks,
    /// Points whose nodes were marked (exact).
    marked_points: BTreeSet<PointKey>,
    known: BTreeMap<String, Known>,
    /// Live sessions observed, by session id.
    pub observed: BTreeMap<String, Observed>,
    /// How many deps and pins of each observed session are protected.
    seen: BTreeMap<String, (usize, usize)>,
    /// Objects older than this (and unmarked) may be deleted.
    pub cutoff: DateTime<Utc>,
    /// The cutoff the first deletion used (the largest ever used: the
    /// cutoff only goes down).
    pub first_cutoff: Option<DateTime<Utc>>,
    /// Why nothing more may be deleted, if so.
    pub hold: Option<String>,
    /// Packs the live leases name as dependencies (chunks reused from
    /// them): never deleted nor rewritten by this sweep.
    pub pack_deps: HashSet<ObjectId>,
    /// Index objects the live leases name as dependencies: not deleted.
    pub index_deps: HashSet<ObjectId>,
    /// Points the live leases pin (trash holding them stays).
    pub pinned: BTreeSet<PointKey>,
    /// Leases not refreshed within the TTL, or dated in the future.
    pub dead: BTreeMap<String, ObjectMeta>,
    /// Ended leases, with their time.
    pub ended: BTreeMap<String, ObjectMeta>,
    /// Objects under `leases/` not named like a lease (left alone).
    pub stray: BTreeSet<String>,
    /// Leases dated further ahead than the clock margin.
    pub future: BTreeSet<String>,
    /// Looks at the leases so far.
    pub looks: u64,
}

impl Protection {
    pub fn new(repo: &Repository, seq: u64, started: DateTime<Utc>) -> Self {
        let proto = repo.config().protocol;
        Protection {
            repo: repo.clone(),
            seq,
            proto,
            marks: Marks::default(),
            marked_points: BTreeSet::new(),
            known: BTreeMap::new(),
            observed: BTreeMap::new(),
            seen: BTreeMap::new(),
            cutoff: started - proto.margin(),
            first_cutoff: None,
            hold: None,
            pack_deps: HashSet::new(),
            index_deps: HashSet::new(),
            pinned: BTreeSet::new(),
            dead: BTreeMap::new(),
            ended: BTreeMap::new(),
            stray: BTreeSet::new(),
            future: BTreeSet::new(),
            looks: 0,
        }
    }

    /// Looks at the leases as of `now` (the store's time, taken before the
    /// listing), having deleted `deleted` objects so far.
    pub async fn look(&mut self, now: DateTime<Utc>, deleted: u64) -> Result<()> {
        self.looks += 1;
        let result = self.look_at_leases(now, deleted).await;
        if self.marks.late_overflowed() {
            self.hold.get_or_insert(format!(
                "more than {} chunks were marked while this sweep deleted (points committed \
                 meanwhile), more than it holds",
                crate::gc::marks::LATE_CAP
            ));
        }
        result
    }

    async fn look_at_leases(&mut self, now: DateTime<Utc>, deleted: u64) -> Result<()> {
        let metas: Vec<ObjectMeta> = self.repo.backend().list(keys::LEASES).try_collect().await?;
        for meta in metas {
            match age(&meta, now, &self.proto) {
                LeaseAge::Stray => {
                    self.stray.insert(meta.key.clone());
                    continue;
                }
                LeaseAge::Future => {
                    self.future.insert(meta.key.clone());
                    self.dead.insert(meta.key.clone(), meta);
                    continue;
                }
                LeaseAge::Dead | LeaseAge::Live => {}
            }
            let live = age(&meta, now, &self.proto) == LeaseAge::Live;
            let Some(known) = self.read(meta).await? else {
                continue; // deleted since the listing
            };
            match &known.record {
                Some(r) if r.ended.is_some() => {
                    let committed = r.ended.as_ref().and_then(|e| e.committed.clone());
                    self.dead.remove(&known.meta.key);
                    self.ended
                        .insert(known.meta.key.clone(), known.meta.clone());
                    if let Some(id) = committed {
                        // Committed after this sweep listed points, maybe:
                        // mark it. Pruned since: nobody needs it.
                        let _ = self.mark_point(&r.vm, &id).await?;
                    }
                }
                Some(r) if live => {
                    self.dead.remove(&known.meta.key);
                    let seen = SeenLease {
                        record: r.clone(),
                        meta: known.meta.clone(),
                    };
                    self.observe(&seen, deleted).await?;
                }
                None if live => {
                    self.hold.get_or_insert(format!(
                        "lease {} cannot be read, so what it protects is unknown (it counts \
                         as dead once not refreshed for the lease TTL)",
                        known.meta.key
                    ));
                }
                _ => {
                    self.dead.insert(known.meta.key.clone(), known.meta.clone());
                }
            }
        }
        Ok(())
    }

    /// The lease's record, read again only if it changed since the last
    /// look (its size or time). `None` if it is gone; a record that cannot
    /// be decoded is remembered as unreadable.
    async fn read(&mut self, meta: ObjectMeta) -> Result<Option<Known>> {
        if let Some(k) = self.known.get(&meta.key)
            && k.meta.size == meta.size
            && k.meta.last_modified == meta.last_modified
        {
            return Ok(Some(k.clone()));
        }
        match LeaseRecord::load(&self.repo, &meta.key).await {
            Ok(Some(record)) => Ok(Some(self.remember(meta, Some(record)))),
            Ok(None) => Ok(None),
            Err(e) if e.is_damage() => Ok(Some(self.remember(meta, None))),
            Err(e) => Err(e),
        }
    }

    fn remember(&mut self, meta: ObjectMeta, record: Option<LeaseRecord>) -> Known {
        let k = Known { meta, record };
        self.known.insert(k.meta.key.clone(), k.clone());
        k
    }

    /// Protects what a live lease names, recording the first observation.
    async fn observe(&mut self, lease: &SeenLease, deleted: u64) -> Result<()> {
        let r = &lease.record;
        let start = lease.start();
        if !self.observed.contains_key(&r.session) {
            // What the session wrote is younger than its start; the
            // deletions so far spared it if their cutoff was not later.
            let written_safe = self
                .first_cutoff
                .is_none_or(|c0| start - self.proto.margin() >= c0);
            self.observed.insert(
                r.session.clone(),
                Observed {
                    session: r.session.clone(),
                    deleted_before: deleted,
                    deps_first: r.deps.len() as u64,
                    pins: 0,
                    pins_safe: true,
                    written_safe,
                },
            );
        }
        self.cutoff = self.cutoff.min(start - self.proto.margin());
        let (deps_seen, pins_seen) = self.seen.get(&r.session).copied().unwrap_or((0, 0));
        let mut nodes = Vec::new();
        for dep in r.deps.iter().skip(deps_seen) {
            match dep {
                ObjectRef::Chunk(id) => self.marks.chunk(id)?,
                ObjectRef::Node(id) => nodes.push(*id),
                ObjectRef::Pack(name) => {
                    self.pack_deps.insert(*name);
                }
                ObjectRef::Index(name) => {
                    self.index_deps.insert(*name);
                }
            }
        }
        // A dependency that is gone is the session's to find (it checks);
        // it is not damage of any point.
        self.mark_nodes(nodes, false).await?;
        let mut safe = true;
        for (vm, id) in r.pins.iter().skip(pins_seen) {
            self.pinned.insert((vm.clone(), id.clone()));
            let already = self.marked_points.contains(&(vm.clone(), id.clone()));
            if !already {
                if !self.mark_point(vm, id).await? {
                    // Pruned before the pin was seen: what the session
                    // uses of it is unknown, so nothing more is deleted.
                    self.hold.get_or_insert(format!(
                        "backup session {} uses point {vm}@{id}, which was pruned meanwhile",
                        r.session
                    ));
                    safe = false;
                } else if deleted > 0 {
                    // Found and protected now, but earlier deletions did
                    // not know it.
                    safe = false;
                }
            }
        }
        self.seen
            .insert(r.session.clone(), (r.deps.len(), r.pins.len()));
        if let Some(o) = self.observed.get_mut(&r.session) {
            o.pins = r.pins.len() as u64;
            o.pins_safe &= safe;
        }
        Ok(())
    }

    /// Marks a point (from `points/`, else `trash/`); false if it is in
    /// neither. A damaged manifest stops the sweep.
    pub async fn mark_point(&mut self, vm: &VmName, id: &PointId) -> Result<bool> {
        let key = (vm.clone(), id.clone());
        if self.marked_points.contains(&key) {
            return Ok(true);
        }
        let Some(m) = self.load_point(vm, id).await? else {
            return Ok(false);
        };
        self.marked_points.insert(key);
        let nodes = m
            .disks
            .iter()
            .flat_map(|d| d.segments.iter().flatten().copied())
            .collect();
        self.mark_nodes(nodes, true).await?;
        Ok(true)
    }

    async fn load_point(&self, vm: &VmName, id: &PointId) -> Result<Option<Manifest>> {
        match self.repo.load_kept_manifest(vm, id).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::PointNotFound { .. }) => Ok(None),
            Err(e) if e.is_damage() => Err(Error::SweepStopped {
                seq: self.seq,
                reason: format!(
                    "point {vm}@{id} cannot be read ({e}), so what it references is \
                     unknown; run `xfull repair` (or `xfull forget {vm}@{id}`) to \
                     remove it"
                ),
                damage: true,
            }),
            Err(e) => Err(e),
        }
    }

    /// Marks nodes not marked yet and their chunks. A missing or damaged
    /// node of a point stops the sweep: its chunks cannot be known, and
    /// deleting around it could destroy what a repair needs. One only a
    /// lease names (`of_point` false: its backup checks it again) is
    /// passed over, unmarked, so that a point referencing it still loads
    /// it and stops the sweep; it stayed marked with none of its chunks,
    /// and every point using it was then swept around (review 106.1).
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
                Ok(n) => {
                    for c in n.chunk_ids() {
                        self.marks.chunk(&c)?;
                    }
                }
                Err(e) if of_point && e.is_damage() => {
                    failed.get_or_insert(format!(
                        "node {} cannot be read ({e}); run `xfull verify`",
                        id.short()
                    ));
                }
                Err(e) if of_point || !e.is_damage() => return Err(e),
                Err(_) => self.marks.unmark_node(&id),
            }
        }
        drop(loaded);
        match failed {
            Some(reason) => Err(Error::SweepStopped {
                seq: self.seq,
                reason,
                damage: true,
            }),
            None => Ok(()),
        }
    }

    /// Records the cutoff of the first deletion (call before deleting).
    pub fn deleting(&mut self) {
        self.first_cutoff.get_or_insert(self.cutoff);
    }

    /// May `meta` be deleted, as far as this sweep knows now?
    pub fn deletable(&self, meta: &ObjectMeta, id: &ObjectId, is_node: bool) -> bool {
        let live = if is_node {
            self.marks.has_node(id)
        } else {
            self.marks.has_chunk(id)
        };
        !live && meta.last_modified < self.cutoff
    }
}
