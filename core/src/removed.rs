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
//! it) sees the record.
//!
//! A record no longer counts once the parent was made after it: the
//! store wrote the parent's manifest after the record (both by the
//! store's clock), and the manifest's `created` (its maker's clock) is
//! no earlier than the record less the clock margin. The record is
//! dated by the removed point's id, and one dated ahead (a host's
//! clock, `--time --allow-future`, removed as `NewestPointAhead`
//! advises) otherwise set aside the change source of every later backup
//! until the clock passed that date (review 88). `created` too, not the
//! store's time alone: `copy` stores points made long before, and those
//! keep their `created`, so one copied in meanwhile still counts as
//! older than the record. A maker's clock behind the store's by more
//! than the margin only keeps a record counting (a full read more). gc
//! removes a record once the VM has a point dated in a later second, or
//! its newest points (by date) were all made after it (listings after
//! the records'): every backup then has such a point or a newer one as
//! its parent. Records of a VM with no point left stay (one empty object
//! per removed VM), since a backup may still hold an older point it
//! listed.
//!
//! Not sealed: the key says all, and the same names are in `points/`. A
//! planted record costs one full read of a disk (the next backup's
//! parent was made after it); a deleted one brings back the state
//! before stop 53.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
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

/// A record: the point removed, and when the store wrote the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub point: PointId,
    pub at: DateTime<Utc>,
}

/// The records of `vm`'s removed points.
pub async fn list(repo: &Repository, vm: &VmName) -> Result<Vec<Record>> {
    let listed = listed_under(repo, &keys::removed_of(vm)).await?;
    Ok(listed.into_iter().map(|(_, r)| r).collect())
}

/// The records listed under `prefix`, with their VMs.
async fn listed_under(repo: &Repository, prefix: &str) -> Result<Vec<(VmName, Record)>> {
    repo.backend()
        .list(prefix)
        .map_err(crate::Error::from)
        .try_filter_map(|m| async move {
            Ok(keys::parse_removed(&m.key).map(|(vm, point)| {
                let at = m.last_modified;
                (vm, Record { point, at })
            }))
        })
        .try_collect()
        .await
}

/// When a point was made: its manifest's `created` (its maker's clock)
/// and, if known, when the store wrote the manifest.
#[derive(Clone, Copy, Debug)]
pub struct Made {
    pub created: DateTime<Utc>,
    pub stored: Option<DateTime<Utc>>,
}

impl Made {
    /// Whether the point was made after `r` was recorded (see the module).
    fn after(&self, r: &Record, margin: Duration) -> bool {
        self.stored.is_some_and(|s| s > r.at) && self.created >= r.at - margin
    }
}

/// The newest removed point that may be newer than the parent `parent`:
/// in its second or a later one (points of one second are ordered by
/// their manifests, which a removed point no longer has), other than
/// `parent` itself (removed after the backup loaded it: its changes are
/// still relative to it, and the backup's lease keeps its data), and
/// not recorded before the parent was made.
pub fn newer_than(
    records: &[Record],
    parent: &PointId,
    made: Made,
    margin: Duration,
) -> Option<PointId> {
    records
        .iter()
        .filter(|r| &r.point != parent && r.point.time() >= parent.time())
        .filter(|r| !made.after(r, margin))
        .map(|r| &r.point)
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
/// later second, or whose points of the newest second were all made
/// after the record as a backup judges it ([`Made`]; one that cannot be
/// read counts as not). The points are listed after the records. Returns
/// their keys.
pub async fn superseded(repo: &Repository) -> Result<Vec<String>> {
    let records = listed_under(repo, keys::REMOVED).await?;
    let margin = repo.config().protocol.margin();
    let mut out = Vec::new();
    let vms: BTreeSet<&VmName> = records.iter().map(|(vm, _)| vm).collect();
    for vm in vms {
        let listed: Vec<(PointId, DateTime<Utc>)> = (repo.backend())
            .list(&keys::points_of(vm))
            .map_err(crate::Error::from)
            .try_filter_map(|m| async move {
                Ok(keys::parse_point(&m.key).map(|(_, id)| (id, m.last_modified)))
            })
            .try_collect()
            .await?;
        let Some(second) = listed.iter().map(|(id, _)| id.time()).max() else {
            continue;
        };
        // How the newest second's points were made (one that cannot be
        // read: `None`, as if made before every record).
        let mut newest: Vec<Option<Made>> = Vec::new();
        for (id, stored) in listed.iter().filter(|(id, _)| id.time() == second) {
            newest.push(match repo.load_manifest(vm, id).await {
                Ok(m) => Some(Made {
                    created: m.created,
                    stored: Some(*stored),
                }),
                Err(e) if e.is_damage() || matches!(e, crate::Error::PointNotFound { .. }) => None,
                Err(e) => return Err(e),
            });
        }
        let all_after = |r: &Record| newest.iter().all(|m| m.is_some_and(|m| m.after(r, margin)));
        out.extend(
            (records.iter().filter(|(v, _)| v == vm))
                .filter(|(_, r)| second > r.point.time() || all_after(r))
                .map(|(v, r)| keys::removed_point(v, &r.point)),
        );
    }
    Ok(out)
}

#[cfg(test)]
#[path = "removed_tests.rs"]
mod tests;
