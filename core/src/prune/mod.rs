//! `prune`: plans per VM which points to keep ([`policy`]) and removes the
//! others' manifests. A manifest that a lease pins (a running backup uses
//! it as its parent) is moved to `trash/` instead, where the sweeps keep
//! it until no live lease pins it. Chunks and nodes are left to `gc`.

mod damaged;
pub mod forget;
pub mod policy;
pub mod span;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::ObjectMeta;
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::keys;
use crate::lease::LeaseRecord;
use crate::names::VmName;
use crate::repo::Repository;
use policy::{Candidate, Decision, Policy};

/// The plan for one VM.
#[derive(Clone, Debug, Serialize)]
pub struct VmPlan {
    pub vm: VmName,
    /// Newest first.
    pub decisions: Vec<Decision>,
    /// The VM's newest (readable) point is among those removed: change
    /// information taken since it does not apply to the point then
    /// newest (as `forget` says; review, stop 50).
    pub newest_removed: bool,
    /// Points dated in the future (retention counts from the newest), and
    /// the newest point removed.
    pub warnings: Vec<String>,
}

impl VmPlan {
    pub fn to_remove(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Plans every VM (or one). A point whose manifest cannot be read is kept
/// and says why: deciding on it blindly could remove the wrong point.
pub async fn plan(repo: &Repository, vm: Option<&VmName>, policy: &Policy) -> Result<Vec<VmPlan>> {
    if policy.is_empty() {
        return Err(Error::InvalidArgument(
            "no --keep-... option given: refusing to remove every point".into(),
        ));
    }
    let mut by_vm: BTreeMap<VmName, Vec<PointId>> = BTreeMap::new();
    for (v, id) in repo.list_points(vm).await? {
        by_vm.entry(v).or_default().push(id);
    }
    if let Some(v) = vm
        && by_vm.is_empty()
    {
        return Err(Error::InvalidArgument(format!("VM {v} has no points")));
    }
    let mut damage = damaged::Damage::load(repo).await?;
    let mut plans = Vec::new();
    for (vm, ids) in by_vm {
        // Each manifest is cut down to what planning needs as it arrives:
        // kept whole (segment lists and all, up to tens of MB for a large
        // disk), a VM's points together could exhaust memory, and every
        // later prune with it (review, stop 56).
        let damage_ref = &damage;
        // Each point with why its manifest counts as damaged, if it does.
        type Loaded = (PointId, Result<(Candidate, Option<String>)>);
        let loaded: Vec<Loaded> = futures::stream::iter(ids)
            .map(|id| {
                let vm = &vm;
                async move {
                    let m = repo.load_manifest(vm, &id).await.map(|m| {
                        let damaged = damage_ref.of_manifest(&m);
                        let c = Candidate {
                            id: id.clone(),
                            time: m.time,
                            created: m.created,
                            labels: m.labels,
                            disks: m.disks.iter().map(|d| d.name.to_string()).collect(),
                        };
                        (c, damaged)
                    });
                    (id, m)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut candidates = Vec::new();
        let mut unreadable = Vec::new();
        let mut damaged_points = BTreeMap::new();
        for (id, m) in loaded {
            match m {
                Ok((c, damaged)) => {
                    if let Some(why) = damaged {
                        damaged_points.insert(id, why);
                    }
                    candidates.push(c)
                }
                // Pruned by someone else meanwhile: nothing to decide.
                Err(Error::PointNotFound { .. }) => {}
                Err(e) if e.is_damage() => unreadable.push(Decision {
                    time: id.time(),
                    id,
                    keep: true,
                    reasons: vec![format!("manifest unreadable, kept ({e})")],
                    // The reason above gives the error.
                    damaged: Some("its manifest cannot be read".into()),
                }),
                Err(e) => return Err(e),
            }
        }
        let mut decisions =
            damaged::plan(repo, &vm, &candidates, damaged_points, &mut damage, policy).await?;
        // Only `--keep-label` with `--forget-disks` can (every other rule
        // keeps the newest point). A newer unreadable point is no
        // parent: a backup sets its change source aside for it.
        let newest = decisions.first().filter(|d| !d.keep).map(|d| d.id.clone());
        decisions.extend(unreadable);
        let damaged = decisions.iter().filter(|d| d.damaged.is_some()).count();
        // Stable: points of one time stay in the plan's order.
        decisions.sort_by_key(|d| std::cmp::Reverse(d.time));
        let ahead = chrono::Utc::now() + repo.config().protocol.margin();
        let mut warnings: Vec<String> = decisions
            .iter()
            .filter(|d| d.time > ahead)
            .map(|d| {
                format!(
                    "point {vm}@{} is dated {}, in the future: retention counts from the newest \
                     point, so this plan is measured from it (`xfull forget` removes it)",
                    d.id,
                    d.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .collect();
        if damaged > 0 {
            warnings.push(format!(
                "{damaged} point(s) of VM {vm} are damaged (see each one) and do not count toward \
                 the rules: whole points are kept in their place; `xfull repair` removes the \
                 damage (with --disk, stores it again) and clears stale records"
            ));
        }
        if let Some(id) = &newest {
            warnings.push(format!(
                "the plan removes {vm}@{id}, the newest point of VM {vm}: change information \
                 (--changed, --base, --bitmap) taken since it does not apply to the point then \
                 newest; the next backup of {vm} reads its disks in full (told by a record \
                 under removed/)"
            ));
        }
        plans.push(VmPlan {
            vm,
            decisions,
            newest_removed: newest.is_some(),
            warnings,
        });
    }
    Ok(plans)
}

/// The points leases pin. Every lease of a session not ended counts, live
/// or not: prune does not judge ages (a sweep does, by the store's clock),
/// and a dead lease's pins only delay the removal of a manifest to the
/// next sweep. A lease that cannot be read pins everything; objects under
/// `leases/` not named like a lease are not leases.
#[derive(Clone, Debug, Default)]
pub struct Pins {
    points: BTreeSet<(VmName, PointId)>,
    everything: bool,
}

impl Pins {
    pub fn contains(&self, vm: &VmName, id: &PointId) -> bool {
        self.everything || self.points.contains(&(vm.clone(), id.clone()))
    }
}

pub async fn read_pins(repo: &Repository) -> Result<Pins> {
    let metas: Vec<ObjectMeta> = repo.backend().list(keys::LEASES).try_collect().await?;
    let mut pins = Pins::default();
    for m in metas {
        if keys::parse_lease(&m.key).is_none() {
            continue;
        }
        match LeaseRecord::load(repo, &m.key).await {
            Ok(Some(r)) if r.ended.is_some() => {}
            Ok(Some(r)) => pins.points.extend(r.pins),
            Ok(None) => {}
            Err(e) if e.is_damage() => pins.everything = true,
            Err(e) => return Err(e),
        }
    }
    Ok(pins)
}

/// What removing points did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Removed {
    pub removed: u64,
    /// Of those, moved to `trash/` because a lease pins them.
    pub trashed: u64,
    /// Points left in place because object lock retains their manifest:
    /// a later prune removes them once it ends.
    pub locked: Vec<LockedPoint>,
}

/// A point prune would remove that object lock keeps.
#[derive(Clone, Debug, Serialize)]
pub struct LockedPoint {
    pub point: String,
    /// When its manifest's retention ends.
    pub until: chrono::DateTime<chrono::Utc>,
}

/// When `key`'s retention ends, if it has not ended yet (with the clock
/// margin: the store judges it by its own clock). `None` in a repository
/// without object lock, without a request.
pub(crate) async fn locked_until(
    repo: &Repository,
    key: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    if repo.config().object_lock.is_none() {
        return Ok(None);
    }
    crate::lock::locked_until(
        repo.backend().as_ref(),
        key,
        repo.config().protocol.margin(),
    )
    .await
}

/// Removes the points' manifests: pinned ones go to `trash/` first (written
/// before the point is deleted, so a sweep listing points then trash sees
/// the manifest in one place or the other). One that may be its VM's
/// newest point is recorded in `removed/` first (`crate::removed`): a
/// backup's change source is relative to it. One listing per VM.
pub async fn remove(
    repo: &Repository,
    pins: &Pins,
    points: &[(VmName, PointId)],
) -> Result<Removed> {
    let b = repo.backend();
    let mut out = Removed::default();
    let mut by_vm: BTreeMap<&VmName, BTreeSet<PointId>> = BTreeMap::new();
    for (vm, id) in points {
        by_vm.entry(vm).or_default().insert(id.clone());
    }
    let mut newest: BTreeSet<(VmName, PointId)> = BTreeSet::new();
    for (vm, removing) in &by_vm {
        let listed = repo.point_ids(vm).await?;
        let maybe = crate::removed::maybe_newest(&listed, removing);
        newest.extend(maybe.map(|id| ((*vm).clone(), id.clone())));
    }
    for (vm, id) in points {
        let key = keys::point(vm, id);
        // Deleting it on S3 would only hide it behind a delete marker.
        match locked_until(repo, &key).await {
            Ok(Some(until)) => {
                out.locked.push(LockedPoint {
                    point: format!("{vm}@{id}"),
                    until,
                });
                continue;
            }
            Ok(None) => {}
            Err(Error::Backend(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
        if pins.contains(vm, id) {
            let bytes = match b.get_at_most(&key, repo.max_manifest()).await {
                Ok(bytes) => bytes,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            crate::repo::put_once(b.as_ref(), &keys::trashed_point(vm, id), bytes).await?;
            out.trashed += 1;
        }
        if newest.contains(&(vm.clone(), id.clone())) {
            crate::removed::record(repo, vm, id).await?;
        }
        b.delete_many(std::slice::from_ref(&key)).await?;
        out.removed += 1;
    }
    Ok(out)
}
