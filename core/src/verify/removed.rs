//! Points removed while verify ran. verify lists the points and reads
//! their manifests before it reads their nodes and chunks, and takes no
//! lease (it runs with read-only credentials), so a prune and the gc
//! after it may remove a point it listed, and sweep what only that point
//! used, in between. Those objects are then missing, and that is no
//! damage: nothing that exists refers to them (a crash walk found verify
//! stopping with exit 3 on such a node).
//!
//! So when something was found missing or bad and a listed point is gone
//! when the manifests are read again, an object is dropped from the
//! report only if all of these hold:
//! - no point that exists now references it (or holds it through a node
//!   it references): the points verify read, the points made since, and
//!   the points in `trash/` (prune moves a point a running backup pins
//!   there, and gc keeps what it references);
//! - it is gone from the store now (a node's HEAD says not found, a chunk
//!   is in no pack that can be read): damaged bytes still stored are
//!   damage whoever references them, because a backup that makes the same
//!   content would deduplicate against them without the damage record.
//!
//! Anything that cannot be read for this (a manifest, a listing) leaves
//! the report as it is.

use std::collections::{HashMap, HashSet};

use super::{NodeDamage, VerifyReport, point_damage};
use crate::error::{Error, Result};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::ObjectRef;
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::repo::Repository;

/// Points named in a warning, at most.
const NAMED: usize = 5;

/// What the second reading of the manifests found.
#[derive(Debug, Default)]
pub(super) struct Remaining {
    /// Damaged nodes that a point still there references.
    nodes: HashSet<ObjectId>,
    /// Listed points whose manifest is no longer in `points/`.
    removed: Vec<(VmName, PointId)>,
}

/// The nodes each damaged chunk is in.
pub(super) type Holders = HashMap<ObjectId, Vec<ObjectId>>;

impl Remaining {
    /// `m` is still there: the damaged nodes it references stay damage.
    pub(super) fn saw(&mut self, m: &Manifest, damaged: &HashMap<ObjectId, NodeDamage>) {
        let ids = m.disks.iter().flat_map(|d| d.segments.iter().flatten());
        self.nodes
            .extend(ids.filter(|id| damaged.contains_key(*id)).copied());
    }

    pub(super) fn removed(&mut self, vm: &VmName, id: &PointId) {
        self.removed.push((vm.clone(), id.clone()));
    }

    /// Drops from `report` what only removed points used and is gone now
    /// (see the module), and says so in a warning. `read` are the points
    /// verify read; `damaged` the damaged nodes; `holders` the nodes each
    /// damaged chunk is in. Nothing changes when no point was removed.
    pub(super) async fn drop_damage_of_removed(
        mut self,
        repo: &Repository,
        read: &[(VmName, PointId)],
        damaged: &HashMap<ObjectId, NodeDamage>,
        report: &mut VerifyReport,
        holders: &Holders,
    ) -> Result<()> {
        if self.removed.is_empty() {
            return Ok(());
        }
        let said = self.removed_names();
        let dropped = match self.others_seen(repo, read, damaged, report).await {
            Ok(true) => self.drop_gone(repo, report, holders).await?,
            // A manifest or listing that cannot be read: keep everything.
            Ok(false) => 0,
            Err(e) if e.is_damage() => 0,
            Err(e) => return Err(e),
        };
        let mut warning = format!(
            "{} point(s) were removed (pruned or forgotten) while verify ran: {said}",
            self.removed.len()
        );
        if dropped > 0 {
            warning.push_str(&format!(
                "; {dropped} object(s) only they used were gone by the time verify read them, \
                 which is no damage"
            ));
        }
        report.warnings.push(warning);
        Ok(())
    }

    fn removed_names(&self) -> String {
        let names: Vec<String> = self
            .removed
            .iter()
            .take(NAMED)
            .map(|(vm, id)| format!("{vm}@{id}"))
            .collect();
        let mut named = names.join(", ");
        if self.removed.len() > NAMED {
            named.push_str(&format!(" and {} more", self.removed.len() - NAMED));
        }
        named
    }

    /// Adds the references of every point that exists now and verify did
    /// not read: the removed ones kept in `trash/`, points made since,
    /// points trashed since; the damage found touches them as much, and
    /// the report says so. False if one could not be read.
    async fn others_seen(
        &mut self,
        repo: &Repository,
        read: &[(VmName, PointId)],
        damaged: &HashMap<ObjectId, NodeDamage>,
        report: &mut VerifyReport,
    ) -> Result<bool> {
        let mut known: HashSet<(VmName, PointId)> = read.iter().cloned().collect();
        for p in &self.removed {
            known.remove(p);
        }
        let mut others = repo.list_points(None).await?;
        others.extend(repo.list_trashed_points().await?);
        others.extend(self.removed.iter().cloned());
        others.sort();
        others.dedup();
        for (vm, id) in others.iter().filter(|p| !known.contains(*p)) {
            match repo.load_kept_manifest(vm, id).await {
                Ok(m) => {
                    self.saw(&m, damaged);
                    report.damaged.extend(point_damage(&m, damaged));
                }
                Err(Error::PointNotFound { .. }) => {}
                Err(e) if e.is_damage() => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Drops the missing and bad objects no point uses that are gone
    /// now; returns how many.
    async fn drop_gone(
        &self,
        repo: &Repository,
        report: &mut VerifyReport,
        holders: &Holders,
    ) -> Result<usize> {
        let used = |n: &ObjectId| self.nodes.contains(n);
        let chunk_used = |c: &ObjectId| holders.get(c).is_some_and(|h| h.iter().any(used));
        let unused = |key: &str| match keys::parse_content(key) {
            Some(id) if key.starts_with(keys::NODES) => !used(&id),
            Some(id) => !chunk_used(&id),
            None => false,
        };
        let key_of = |r: &ObjectRef| match r {
            ObjectRef::Node(n) => Some(keys::node(n)),
            ObjectRef::Chunk(c) => Some(keys::chunk(c)),
            ObjectRef::Pack(_) | ObjectRef::Index(_) => None,
        };
        let candidates: Vec<String> = report
            .missing
            .iter()
            .filter_map(key_of)
            .chain(report.bad_objects.iter().map(|(k, _)| k.clone()))
            .filter(|k| unused(k))
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        let gone = crate::damage::gone_now(repo, &candidates).await?;
        let before = report.missing.len() + report.bad_objects.len();
        report
            .missing
            .retain(|r| key_of(r).is_none_or(|k| !gone.contains(&k)));
        report.bad_objects.retain(|(k, _)| !gone.contains(k));
        Ok(before - report.missing.len() - report.bad_objects.len())
    }
}
