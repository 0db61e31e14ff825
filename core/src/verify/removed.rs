//! Points removed while verify ran. verify lists the points and reads
//! their manifests before it reads their nodes and chunks, and takes no
//! lease (it runs with read-only credentials), so a prune and the gc
//! after it may remove a point it listed, and sweep what only that point
//! used, in between. Those objects are then missing, and that is no
//! damage: nothing that exists refers to them (a crash walk found verify
//! stopping with exit 3 on such a node).
//!
//! So when something was found missing or bad and a listed point is gone
//! when the manifests are read again (verifying every point; with points
//! named, only the warning is given), a *node* is dropped from the report
//! only if both hold:
//! - no point that exists now references it: the points verify read, the
//!   points made since, and the points in `trash/` (prune moves a point a
//!   running backup pins there, and gc keeps what it references);
//! - it is gone from the store now (its HEAD says not found): damaged
//!   bytes still stored are damage whoever references them, because a
//!   backup that makes the same content would deduplicate against them
//!   without the damage record.
//!
//! Chunks are never dropped: which nodes of the points read meanwhile
//! hold a chunk is not known without reading them, and an index lookup
//! can miss a chunk a concurrent sweep is moving. A removed point's
//! chunks rarely show anyway: its nodes were swept with it, so nothing
//! maps them to damage.
//!
//! Anything that cannot be read for this (a manifest, a listing, a HEAD)
//! leaves the report as it is, with a warning.

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

    /// Drops from `report` the nodes only removed points used that are
    /// gone now (see the module), and says so in a warning. `read` are
    /// the points verify read (`named`: the caller named them); `damaged`
    /// the damaged nodes, `covers` what the nodes some segment uses at
    /// another length cover. Nothing changes when no point was removed.
    pub(super) async fn drop_damage_of_removed(
        mut self,
        repo: &Repository,
        read: &[(VmName, PointId)],
        named: bool,
        damaged: &HashMap<ObjectId, NodeDamage>,
        covers: &HashMap<ObjectId, u64>,
        report: &mut VerifyReport,
    ) {
        if self.removed.is_empty() {
            return;
        }
        let said = self.removed_names();
        let mut warning = format!(
            "{} point(s) were removed (pruned or forgotten) while verify ran: {said}",
            self.removed.len()
        );
        if !named {
            let dropped = match self.others_seen(repo, read, damaged, covers, report).await {
                Ok(()) => self.drop_gone(repo, report).await,
                Err(e) => Err(e),
            };
            match dropped {
                Ok(0) => {}
                Ok(n) => warning.push_str(&format!(
                    "; {n} node(s) only they used were gone by the time verify read them, \
                     which is no damage"
                )),
                Err(e) => warning.push_str(&format!(
                    "; what only they used could not be told apart from damage ({e}), so all \
                     of it is reported"
                )),
            }
        }
        report.warnings.push(warning);
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
    /// the report says so.
    async fn others_seen(
        &mut self,
        repo: &Repository,
        read: &[(VmName, PointId)],
        damaged: &HashMap<ObjectId, NodeDamage>,
        covers: &HashMap<ObjectId, u64>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let mut known: HashSet<(VmName, PointId)> = read.iter().cloned().collect();
        // Already reported damaged: not read again.
        known.extend(report.damaged_manifests.iter().cloned());
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
                    report.damaged.extend(point_damage(&m, damaged, covers));
                }
                Err(Error::PointNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drops the missing and bad nodes no point uses that are gone now;
    /// returns how many.
    async fn drop_gone(&self, repo: &Repository, report: &mut VerifyReport) -> Result<usize> {
        let unused = |key: &str| {
            key.starts_with(keys::NODES)
                && keys::parse_content(key).is_some_and(|n| !self.nodes.contains(&n))
        };
        let key_of = |r: &ObjectRef| match r {
            ObjectRef::Node(n) => Some(keys::node(n)),
            ObjectRef::Chunk(_) | ObjectRef::Pack(_) | ObjectRef::Index(_) => None,
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
