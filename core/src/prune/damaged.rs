//! Points with recorded damage do not count toward the retention rules.
//!
//! `verify`, `restore` and backups record what they found damaged under
//! `damage/` (`crate::damage`). A retention job that counted a damaged
//! point as one of the points to keep removed a whole one in its place:
//! `--keep-last 1` after verify found the newest point damaged kept only
//! that point and removed the last restorable copy (review, stop 48).
//! So the rules are applied to the points without recorded damage, and a
//! damaged point is kept where the rules applied to every point would
//! keep it (it may still restore in part, and `repair --disk` may mend
//! it): prune never removes more than it did before.
//!
//! What it costs: one listing of `damage/`. A record of a node is seen
//! in the manifests prune reads anyway. A record of a chunk needs the
//! nodes of the points that might count: only the points the rules keep
//! are looked at (one manifest GET each, and each node not seen before:
//! nodes are shared between points, so about the segments of one point
//! and what later points changed), again after each damaged one found,
//! and nothing is fetched when no chunk has a record.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;

use super::policy::{self, Candidate, Decision, Policy};
use crate::damage::KnownDamage;
use crate::error::{Error, Result};
use crate::id::{ObjectId, PointId};
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::repo::Repository;

/// Nodes fetched at once while looking for damaged chunks.
const IN_FLIGHT: usize = 16;

/// The damage records, and what was learnt of nodes from them.
pub(super) struct Damage {
    known: KnownDamage,
    /// Nodes looked at for damaged chunks: why each is damaged, if it is.
    nodes: HashMap<ObjectId, Option<String>>,
}

impl Damage {
    pub(super) async fn load(repo: &Repository) -> Result<Damage> {
        Ok(Damage {
            known: KnownDamage::load(repo).await?,
            nodes: HashMap::new(),
        })
    }

    /// Why `m` is damaged by a record of one of its nodes, if it is.
    pub(super) fn of_manifest(&self, m: &Manifest) -> Option<String> {
        let nodes = m.disks.iter().flat_map(|d| d.segments.iter().flatten());
        nodes
            .into_iter()
            .find(|id| self.known.nodes.contains(id))
            .map(|id| format!("its node {} has a damage record", id.short()))
    }

    /// Why the point `vm@id` is damaged by a record of one of its
    /// chunks, or by a node that cannot be read, if it is. A point gone
    /// meanwhile is not (there is nothing to keep).
    async fn of_chunks(
        &mut self,
        repo: &Repository,
        vm: &VmName,
        id: &PointId,
    ) -> Result<Option<String>> {
        let m = match repo.load_manifest(vm, id).await {
            Ok(m) => m,
            Err(Error::PointNotFound { .. }) => return Ok(None),
            Err(e) if e.is_damage() => return Ok(Some(format!("its manifest: {e}"))),
            Err(e) => return Err(e),
        };
        let ids: BTreeSet<ObjectId> = m
            .disks
            .iter()
            .flat_map(|d| d.segments.iter().flatten().copied())
            .collect();
        let fresh: Vec<ObjectId> = ids
            .iter()
            .filter(|n| !self.nodes.contains_key(n))
            .copied()
            .collect();
        let known = &self.known;
        let mut looked = futures::stream::iter(fresh)
            .map(|n| async move {
                let why = match repo.load_node(&n).await {
                    Ok(node) => node
                        .chunk_ids()
                        .find(|c| known.chunks.contains(c))
                        .map(|c| format!("its chunk {} has a damage record", c.short())),
                    Err(e) if e.is_damage() => Some(format!("its node {}: {e}", n.short())),
                    Err(e) => return Err(e),
                };
                Ok((n, why))
            })
            .buffer_unordered(IN_FLIGHT);
        let mut found = Vec::new();
        while let Some(r) = looked.next().await {
            found.push(r?);
        }
        drop(looked);
        self.nodes.extend(found);
        Ok(ids
            .iter()
            .find_map(|n| self.nodes.get(n).cloned().flatten()))
    }
}

/// The plan of one VM's readable points (newest first), `damaged`
/// holding those whose manifest names a node with a record. Each
/// decision on a damaged point says why it is.
pub(super) async fn plan(
    repo: &Repository,
    vm: &VmName,
    candidates: &[Candidate],
    mut damaged: BTreeMap<PointId, String>,
    damage: &mut Damage,
    policy: &Policy,
) -> Result<Vec<Decision>> {
    let rules = |points: &[Candidate]| policy::plan(points, policy).map_err(Error::InvalidArgument);
    let every = rules(candidates)?;
    let mut looked: BTreeSet<PointId> = BTreeSet::new();
    let whole = loop {
        let whole: Vec<Candidate> = candidates
            .iter()
            .filter(|c| !damaged.contains_key(&c.id))
            .cloned()
            .collect();
        let plan = rules(&whole)?;
        if damage.known.chunks.is_empty() {
            break plan;
        }
        // The points that count: each looked at once, and planned again
        // without those found damaged, so the next ones count instead.
        let mut found = false;
        for d in plan.iter().filter(|d| d.keep) {
            if !looked.insert(d.id.clone()) {
                continue;
            }
            if let Some(why) = damage.of_chunks(repo, vm, &d.id).await? {
                damaged.insert(d.id.clone(), why);
                found = true;
            }
        }
        if !found {
            break plan;
        }
    };
    let order: HashMap<&PointId, &Candidate> = candidates.iter().map(|c| (&c.id, c)).collect();
    let mut out: Vec<Decision> = whole;
    for mut d in every {
        let Some(why) = damaged.get(&d.id) else {
            continue;
        };
        if d.keep {
            d.reasons
                .push("damaged: not counted toward the rules".to_string());
        }
        d.damaged = Some(why.clone());
        out.push(d);
    }
    // Newest first, in backup's order, as the policy's plan is.
    out.sort_by(|a, b| {
        let (a, b) = (order[&a.id], order[&b.id]);
        (b.time, b.created, &b.id).cmp(&(a.time, a.created, &a.id))
    });
    Ok(out)
}
