//! Records of removed newest points: `removed/<vm>/<point-id>`, an empty
//! object written by `forget`, `prune` and `repair` before they delete a
//! manifest that is, or may be, the VM's newest point.
//!
//! A change source (`--changed`, `--base`, a bitmap) tells what changed
//! since the VM's newest point, as its maker last backed it up; nothing
//! in it names that point. Once the newest point is removed, nothing in
//! the listing says it was there, and the next backup took the change
//! source against the point before: it reused segments that had changed
//! since, and the point restored wrong bytes from a backup that
//! succeeded. Until stop 53 the removing command only warned
//! (`newest_removed`); now a backup lists these records after the
//! points and sets its change source aside (reads the disk in full) when
//! one is as new as its parent or newer.
//!
//! Ordering makes it hold beside running commands: the record is written
//! before the manifest is deleted, and a backup lists the records after
//! the points; so a backup that did not see the point (or failed to load
//! it) sees the record. gc removes a record once a point of the VM dated
//! in a later second exists (a listing after the records'): every backup
//! then has that point or a newer one as its parent. Records of a VM
//! with no point left stay (one empty object per removed VM), since a
//! backup may still hold an older point it listed.
//!
//! Not sealed: the key says all, and the same names are in `points/`. A
//! planted record costs one full read of a disk; a deleted one brings
//! back the state before stop 53.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::Result;
use crate::id::PointId;
use crate::keys;
use crate::names::VmName;
use crate::repo::{Repository, put_once};

/// Records that `vm@id` is being removed as (maybe) the VM's newest
/// point. Create-only: a record already there is the same record.
pub async fn record(repo: &Repository, vm: &VmName, id: &PointId) -> Result<()> {
    put_once(
        repo.backend().as_ref(),
        &keys::removed_point(vm, id),
        Bytes::new(),
    )
    .await?;
    Ok(())
}

/// The records of `vm`'s removed points.
pub async fn list(repo: &Repository, vm: &VmName) -> Result<Vec<PointId>> {
    repo.backend()
        .list(&keys::removed_of(vm))
        .map_err(crate::Error::from)
        .try_filter_map(|m| async move { Ok(keys::parse_removed(&m.key).map(|(_, id)| id)) })
        .try_collect()
        .await
}

/// The newest removed point of `vm` that may be newer than `parent`: in
/// its second or a later one (points of one second are ordered by their
/// manifests, which a removed point no longer has), other than `parent`
/// itself (removed after the backup loaded it: its changes are still
/// relative to it, and the backup's lease keeps its data).
pub fn newer_than(records: &[PointId], parent: &PointId) -> Option<PointId> {
    records
        .iter()
        .filter(|r| *r != parent && r.time() >= parent.time())
        .max()
        .cloned()
}

/// Of the points about to be removed, those that may be their VM's
/// newest: dated in the second of the newest point that stays, or later
/// (all of them if none stays). `listed` is the VM's points now.
pub fn maybe_newest<'a>(
    listed: &[PointId],
    removing: &'a BTreeSet<PointId>,
) -> impl Iterator<Item = &'a PointId> {
    let staying = listed
        .iter()
        .filter(|id| !removing.contains(*id))
        .map(PointId::time)
        .max();
    removing
        .iter()
        .filter(move |id| staying.is_none_or(|t| id.time() >= t))
}

/// Records gc may remove: those of VMs that have a point dated in a
/// later second (the points listed after the records). Returns their
/// keys.
pub async fn superseded(repo: &Repository) -> Result<Vec<String>> {
    let records: Vec<(VmName, PointId)> = repo
        .backend()
        .list(keys::REMOVED)
        .map_err(crate::Error::from)
        .try_filter_map(|m| async move { Ok(keys::parse_removed(&m.key)) })
        .try_collect()
        .await?;
    let mut out = Vec::new();
    let vms: BTreeSet<&VmName> = records.iter().map(|(vm, _)| vm).collect();
    for vm in vms {
        let newest = repo
            .list_points(Some(vm))
            .await?
            .into_iter()
            .map(|(_, id)| id.time())
            .max();
        out.extend(
            records
                .iter()
                .filter(|(v, id)| v == vm && newest.is_some_and(|t| t > id.time()))
                .map(|(v, id)| keys::removed_point(v, id)),
        );
    }
    Ok(out)
}

#[cfg(test)]
#[path = "removed_tests.rs"]
mod tests;
