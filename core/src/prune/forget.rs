//! `forget`: removes named points, whether their manifests can be read or
//! not (a damaged manifest restores nothing and `prune` keeps it, since it
//! cannot date it). The same rules as prune: a point a running backup
//! pins goes to the trash first.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Removed, read_pins, remove};
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::names::VmName;
use crate::repo::Repository;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Forgotten {
    pub dry_run: bool,
    /// `VM@ID` of each point removed (or, in a dry run, to remove).
    pub points: Vec<String>,
    /// Of those, the ones a running backup pins (moved to the trash).
    pub pinned: Vec<String>,
    pub removed: Removed,
    /// VMs whose newest point is among those removed: change information
    /// for their next backup may be relative to it.
    pub newest_removed: Vec<VmName>,
}

/// Removes the points; each must exist (by the listing, so a damaged one
/// counts).
pub async fn forget(
    repo: &Repository,
    points: &[(VmName, PointId)],
    dry_run: bool,
) -> Result<Forgotten> {
    let mut newest_removed = Vec::new();
    // (every listed id, damaged ones too; the newest datable one)
    let mut listed: BTreeMap<VmName, (Vec<PointId>, Option<PointId>)> = BTreeMap::new();
    for (vm, _) in points {
        if !listed.contains_key(vm) {
            let all = repo.point_ids(vm).await?;
            let newest = repo.latest(vm).await?;
            listed.insert(vm.clone(), (all, newest));
        }
    }
    for (vm, id) in points {
        let (ids, newest) = &listed[vm];
        if !ids.contains(id) {
            return Err(Error::PointNotFound {
                point: format!("{vm}@{id}"),
            });
        }
        if newest.as_ref() == Some(id) && !newest_removed.contains(vm) {
            newest_removed.push(vm.clone());
        }
    }
    let mut unique = points.to_vec();
    unique.sort();
    unique.dedup();
    let pins = read_pins(repo).await?;
    let name = |(vm, id): &(VmName, PointId)| format!("{vm}@{id}");
    let mut out = Forgotten {
        dry_run,
        points: unique.iter().map(name).collect(),
        pinned: unique
            .iter()
            .filter(|(vm, id)| pins.contains(vm, id))
            .map(name)
            .collect(),
        removed: Removed::default(),
        newest_removed,
    };
    if !dry_run {
        out.removed = remove(repo, &pins, &unique).await?;
        // A newest point object lock kept is still the newest: no record
        // was written, and change information still applies (review).
        let kept = |vm: &VmName| {
            let newest = listed[vm].1.as_ref().map(|id| format!("{vm}@{id}"));
            out.removed
                .locked
                .iter()
                .any(|l| Some(&l.point) == newest.as_ref())
        };
        out.newest_removed.retain(|vm| !kept(vm));
    }
    Ok(out)
}
