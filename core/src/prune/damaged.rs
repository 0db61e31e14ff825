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
//! in the manifests prune reads anyway. Only when a chunk has a record,
//! each point of the VM not already known damaged is looked at once: its
//! manifest read again (at most twice the manifest reads of a prune
//! without records) and each of the VM's nodes once (shared between
//! points: about one point's segments and what later points changed; a
//! set of those seen, about 80 bytes each, one VM at a time). A node that
//! cannot be read is seen then too, and only then.

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

/// Manifests read ahead of the one whose nodes are looked at.
const MANIFESTS_AHEAD: usize = 4;

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
        m.disks
            .iter()
            .flat_map(|d| d.segments.iter().flatten())
            .find(|id| self.known.nodes.contains(id))
            .map(|id| format!("its node {} has a damage record", id.short()))
    }

    /// Adds to `damaged` each point of `candidates` (one VM's) damaged
    /// by a record of one of its chunks, or by a node that cannot be
    /// read. Every point not yet known damaged is looked at once: its
    /// manifest again, and each node not seen before in this VM.
    /// Looking only at the points the rules keep, and planning again
    /// after each damaged one, took a round per point where a stale
    /// record named a chunk every point shares (review 103).
    async fn look_at_chunks(
        &mut self,
        repo: &Repository,
        vm: &VmName,
        candidates: &[Candidate],
        damaged: &mut BTreeMap<PointId, String>,
    ) -> Result<()> {
        // One VM's nodes at a time: the set is not the repository's.
        self.nodes.clear();
        let ids: Vec<PointId> = candidates
            .iter()
            .filter(|c| !damaged.contains_key(&c.id))
            .map(|c| c.id.clone())
            .collect();
        let mut manifests = futures::stream::iter(ids)
            .map(|id| async move {
                let m = repo.load_manifest(vm, &id).await;
                (id, m)
            })
            .buffered(MANIFESTS_AHEAD);
        while let Some((id, m)) = manifests.next().await {
            let why = match m {
                Ok(m) => self.of_nodes(repo, &m).await?,
                // Removed meanwhile: nothing to keep.
                Err(Error::PointNotFound { .. }) => None,
                Err(e) if e.is_damage() => Some(format!("its manifest: {e}")),
                Err(e) => return Err(e),
            };
            if let Some(why) = why {
                damaged.insert(id, why);
            }
        }
        Ok(())
    }

    /// Why `m` is damaged by a record of one of its chunks, or by a node
    /// that cannot be read, if it is.
    async fn of_nodes(&mut self, repo: &Repository, m: &Manifest) -> Result<Option<String>> {
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
    if !damage.known.chunks.is_empty() {
        damage
            .look_at_chunks(repo, vm, candidates, &mut damaged)
            .await?;
    }
    let whole: Vec<Candidate> = candidates
        .iter()
        .filter(|c| !damaged.contains_key(&c.id))
        .cloned()
        .collect();
    let whole = rules(&whole)?;
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

#[cfg(test)]
#[path = "damaged_tests.rs"]
mod tests;
