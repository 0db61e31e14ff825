//! The end of a backup: step (c) of the protocol (settling with the
//! sweeps that ran meanwhile, its first round beside the last uploads),
//! then the commit of the manifest, and (c) once more if the commit came
//! late (docs/design.md, "Concurrency").

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};

use super::{BackupRequest, repair};
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::manifest::{BackupStats, DiskManifest, Manifest};
use crate::progress::{Notice, Progress, Warning};
use crate::repo::{Repository, Stored};
use crate::session::{Check, Session};
use crate::source::DiskSource;

/// Writes the manifest; if the commit came late (the lease may have died
/// since the last check), checks the sweeps once more.
pub(super) async fn commit_and_recheck(
    repo: &Repository,
    req: &BackupRequest,
    commit: Commit,
    session: &mut Session,
    started: Instant,
    progress: &Progress,
) -> Result<Manifest> {
    let sources = commit
        .disks
        .iter()
        .map(|(s, _)| s.clone())
        .collect::<Vec<_>>();
    let replaced = commit.replaced.clone();
    // Long since the last round (the object lock's extension over a
    // large disk, a last round that read segments again): settle once
    // more now, so that a late commit is not found only after it.
    if last_check_too_old(repo, session) {
        settle_sweeps(repo, session, &commit, progress, None).await?;
    }
    let manifest = commit_point(repo, req.clone(), commit, started, progress).await?;
    if manifest.stats.objects_restored > 0 {
        progress.notice(Notice::Warning(Warning::ObjectsStoredAgain {
            objects: manifest.stats.objects_restored,
        }));
    }
    // Best effort: a stale record only costs another upload (or, for a
    // node, a check). Credentials that may not delete (the backup role)
    // leave the records to `repair`; the user is told.
    if let Err(e) = crate::damage::clear(repo, &replaced).await {
        progress.notice(Notice::Warning(Warning::DamageRecordsKept {
            records: replaced.len() as u64,
            reason: e.to_string(),
        }));
    }
    let committed = repo
        .backend()
        .head(&crate::keys::point(&manifest.vm, &manifest.id))
        .await?
        .last_modified;
    if session.committed_late(committed) {
        // Stalled between the check and the commit: a sweep may have
        // missed both the lease and the point. Check once more.
        let commit = Commit {
            disks: sources
                .into_iter()
                .zip(manifest.disks.iter().cloned())
                .collect(),
            replaced: Vec::new(),
            lock: None,
            newest_listed: None,
        };
        settle_sweeps(repo, session, &commit, progress, None).await?;
    }
    Ok(manifest)
}

/// The disks' manifests, ready to be committed, with their sources (to
/// store again what a sweep may have removed).
pub(super) struct Commit {
    pub(super) disks: Vec<(Arc<DiskSource>, DiskManifest)>,
    /// Keys stored over damaged copies: their damage records can go once
    /// the point is committed.
    pub(super) replaced: Vec<String>,
    /// Object lock: what keeping the point's objects locked took.
    pub(super) lock: Option<crate::lock::extend::Extended>,
    /// The VM's newest point when the backup listed them: the new point
    /// is dated after it (see [`point_time`]).
    pub(super) newest_listed: Option<super::prepare::Newest>,
}

/// Step (c) of the protocol: for every sweep that ran meanwhile, make sure
/// it left everything the point references, waiting only while a sweep
/// deletes a batch it chose before it could see this backup's lease.
pub(super) async fn settle_sweeps(
    repo: &Repository,
    session: &mut Session,
    commit: &Commit,
    progress: &Progress,
    first: Option<FirstCheck>,
) -> Result<()> {
    let began = session.started();
    let (first, mut looked) = match first {
        Some(f) => (Some(f.check), f.deps_present),
        None => (None, None),
    };
    session
        .settle_from(first, progress, async |all, deps| {
            // The first round's deps were looked at beside the uploads:
            // `settle_from` hands that round's own `Verify` to this first
            // call (`looked` is set only for one that asks for deps).
            let present = match looked.take() {
                Some(present) => present,
                None => !all && repair::all_exist(repo, deps).await?,
            };
            if present {
                return Ok(Vec::new());
            }
            let disks: Vec<_> = commit.disks.iter().map(|(s, d)| (s.clone(), d)).collect();
            let r = repair::ensure_present(repo, &disks, began).await?;
            if r.segments_restored > 0 {
                progress.notice(Notice::Warning(Warning::SegmentsReadAgain {
                    segments: r.segments_restored,
                }));
            }
            // Stored by others, maybe garbage a sweep is about to delete.
            Ok(r.existed)
        })
        .await
}

/// (c)'s first round, made while the last uploads are in flight.
pub(super) struct FirstCheck {
    check: Check,
    /// For a round that asks only to look at deps: whether all of them
    /// were found stored.
    deps_present: Option<bool>,
}

/// Whether the session's last check is too old to commit on
/// ([`check_too_old`] with the repository's lease TTL). `copy` commits
/// by the same rule.
pub(crate) fn last_check_too_old(repo: &Repository, session: &Session) -> bool {
    let ttl = repo.config().protocol.ttl().to_std().unwrap_or_default();
    check_too_old(session.since_check(), ttl)
}

/// Whether a check made `since` ago (`None`: none) is too old to commit
/// on: more than a quarter of the lease TTL `ttl`. The lease is alive
/// when the check writes it; if the heartbeat then stalls, it dies a TTL
/// later, and a sweep may miss both it and the point. A commit more than
/// half a TTL after its last check is judged late and checked again, but
/// only after the manifest is written, so a point could be committed
/// before what a sweep took from it is stored again (and stay so if the
/// backup died then). With the first round made beside the last uploads,
/// a slow upload made that much more likely (found in review: 6 of
/// 95,039 interleaved runs committed a broken point, 4 of them new), and
/// so do the object lock's extension and a last round that read segments
/// again; a fresh round then keeps the commit within the margin the check
/// before it always had.
fn check_too_old(since: Option<std::time::Duration>, ttl: std::time::Duration) -> bool {
    since.is_none_or(|d| d > ttl / 4)
}

pub(super) async fn first_check(repo: &Repository, session: &mut Session) -> Result<FirstCheck> {
    let check = session.check().await?;
    let deps_present = match &check {
        Check::Verify {
            all: false, deps, ..
        } => Some(repair::all_exist(repo, deps).await?),
        _ => None,
    };
    Ok(FirstCheck {
        check,
        deps_present,
    })
}

/// Writes the manifest (create-only): from here on the point exists.
async fn commit_point(
    repo: &Repository,
    req: BackupRequest,
    commit: Commit,
    started: Instant,
    progress: &Progress,
) -> Result<Manifest> {
    let time = point_time(req.time, commit.newest_listed, progress);
    let mut stats = BackupStats::default();
    let mut manifests = Vec::new();
    for (_, dm) in commit.disks {
        stats.add(&dm.stats);
        manifests.push(dm);
    }
    stats.lock = commit.lock;
    // The point's parent: the newest point any disk was based on.
    let parent = manifests.iter().filter_map(|d| d.parent.clone()).max();
    let mut manifest = Manifest {
        vm: req.vm,
        id: PointId::new(time),
        time,
        created: Utc::now().trunc_subsecs(6),
        parent,
        host: req.host,
        labels: req.labels,
        disks: manifests,
        stats,
        writer: format!("xfull {}", env!("CARGO_PKG_VERSION")),
    };
    // The random suffix makes collisions rare; create-only makes them safe.
    for _ in 0..8 {
        manifest.stats.seconds = started.elapsed().as_secs_f64();
        let (stored, len) = repo.write_manifest(&manifest).await?;
        if stored == Stored::New {
            manifest.stats.bytes_uploaded += len;
            manifest.stats.bytes_stored += len;
            return Ok(manifest);
        }
        manifest.id = PointId::new(time);
    }
    Err(Error::Internal(format!(
        "could not find a free point id for {} at {time}",
        manifest.vm
    )))
}

/// The new point's time: `--time` if given, else now, unless now is not
/// after the VM's newest point (`newest`): then just after it, with a
/// [`Warning::ClockBehind`]. Points are ordered by time, and the next
/// backup takes the newest as the parent its change source starts from;
/// a point dated before its own parent (this host's clock behind the
/// host that made it) would leave the next change file applied to that
/// parent, missing the writes in between (review at stop 49). An explicit
/// `--time` is the user's to choose.
fn point_time(
    given: Option<DateTime<Utc>>,
    newest: Option<super::prepare::Newest>,
    progress: &Progress,
) -> DateTime<Utc> {
    if let Some(t) = given {
        return t.trunc_subsecs(6);
    }
    let now = Utc::now().trunc_subsecs(6);
    match newest {
        Some(newest) if now <= newest.time => {
            // An unreadable newest point counts by the end of its second:
            // that is no sign of this clock being behind.
            if newest.exact {
                progress.notice(Notice::Warning(Warning::ClockBehind {
                    newest: newest
                        .time
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    behind_ms: (newest.time - now).num_milliseconds().max(0) as u64,
                }));
            }
            newest.time.trunc_subsecs(6) + chrono::Duration::microseconds(1)
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_check_older_than_a_quarter_ttl_is_not_committed_on() {
        let ttl = Duration::from_secs(600);
        let ago = |s: u64| Some(Duration::from_secs(s));
        assert!(!check_too_old(ago(1), ttl));
        assert!(!check_too_old(ago(149), ttl));
        assert!(check_too_old(ago(151), ttl));
        assert!(check_too_old(ago(400), ttl));
        assert!(check_too_old(None, ttl), "no check yet");
    }
}
