//! Copying one point: a writer's session on the target, as a backup's
//! (docs/design.md, "Concurrency"): (a) the lease before anything of the
//! target is read, the reference point pinned; (b) what the copy relies
//! on and did not write recorded as the lease's dependencies; (c) the
//! sweeps that ran meanwhile settled, what they may have taken copied
//! again; (d) the manifest put create-only, last; (e) the lease ended,
//! naming the point.

use std::collections::HashSet;

use super::locked::target_manifest;
use super::nodes::{Copier, trusted_nodes};
use super::{CopyCounts, Run, in_source, is_source_damage, recheck};
use crate::damage::KnownDamage;
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::keys;
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::progress::{Notice, Warning};
use crate::repo::Stored;
use crate::session::Session;

/// Distinct nodes asked about at once.
const BATCH: usize = 64;
/// Node ids remembered as done within a point (a repeat after that is
/// found in the target and costs a lookup).
const SEEN_CAP: usize = 1 << 20;

/// How one point went.
pub(super) enum PointResult {
    /// The target had it already.
    Present,
    /// Removed from the source since it was listed.
    Gone,
    /// Copied now.
    Copied(CopyCounts),
}

pub(super) async fn copy_point(run: &Run<'_>, vm: &VmName, id: &PointId) -> Result<PointResult> {
    match run.target.load_manifest(vm, id).await {
        Ok(_) => return Ok(PointResult::Present),
        Err(Error::PointNotFound { .. }) => {}
        // A damaged manifest under this point's key is never replaced
        // (create-only): `forget` it in the target, then copy again. Said
        // of the target: `--repo` is the source.
        Err(e) if e.is_damage() => {
            return Err(Error::TargetPointDamaged {
                point: format!("{vm}@{id}"),
                target_location: run.target.location(),
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(e),
    }
    let manifest = match run.source.load_manifest(vm, id).await {
        Ok(m) => m,
        Err(Error::PointNotFound { point }) => {
            run.progress
                .notice(Notice::Warning(Warning::CopySourceGone { point }));
            return Ok(PointResult::Gone);
        }
        Err(e) => return Err(in_source(run.source, e)),
    };
    run.progress
        .add_total(manifest.disks.iter().map(|d| d.size).sum());
    let mut session = Session::begin(run.target, vm, &run.host).await?;
    // With object lock, the target's generation the copy began in (as a
    // backup's): what the point relies on is retained for it.
    let config = run.target.config();
    let lock = config
        .object_lock
        .map(|l| (l, l.current(config.protocol.margin())));
    if let Err(e) = crate::lock::check_writer_clock(run.target, session.started()) {
        session.abandon().await;
        return Err(e);
    }
    let heartbeat = session.heartbeat();
    let work = async {
        // Read after the lease, as a backup reads them.
        let known = KnownDamage::load(run.target).await?;
        let reference = reference_point(run, &manifest, &session).await?;
        let trusted = trusted_nodes(reference.as_ref());
        // Opened once the lease is written: packs found through it are
        // recorded in the lease before the copy relies on them.
        let placement = run.target.chunks();
        let packs = placement.session(placement.open_index().await?);
        let mut copier = Copier::new(run, packs.clone(), trusted, known);
        copy_nodes(run, &manifest, &session, &mut copier).await?;
        copier.flush(&session).await?;
        if let Some(reason) = packs.index_damage() {
            let damaged = Warning::IndexDamaged { reason };
            run.progress.notice(Notice::Warning(damaged));
        }
        settle(run, &mut session, &manifest).await?;
        let deps = session.deps();
        let m = target_manifest(run, &manifest, reference.as_ref(), lock, &deps).await?;
        // Under object lock that renewed every node and pack it relies
        // on, maybe slowly: a commit more than a quarter TTL after the
        // last check is not made on it (a sweep may have missed a lease
        // that died meanwhile), by backup's rule.
        if crate::backup::last_check_too_old(run.target, &session) {
            settle(run, &mut session, &manifest).await?;
        }
        Ok::<_, Error>((copier.counts, m, copier.replaced))
    };
    // A cancellation wins over work that is ready too: nothing of the
    // point is committed once the user asked to stop.
    let prepared = tokio::select! {
        biased;
        _ = run.progress.cancelled() => Err(Error::Cancelled {
            cleaned: format!(
                "the copy stopped before storing {}; its lease in the target was removed (what \
                 it stored there is unreferenced: gc deletes it, or the same copy run again \
                 uses it)",
                manifest.point_name()
            ),
        }),
        r = work => r,
    };
    // The commit is not interrupted: it is short.
    let result = match prepared {
        Ok((counts, m, replaced)) => {
            let committed = commit(run, &m, &mut session, counts).await;
            if committed.is_ok() {
                clear_records(run, &replaced).await;
            }
            committed
        }
        Err(e) => Err(e),
    };
    drop(heartbeat);
    match result {
        Ok(counts) => {
            session.end(Some(id.clone())).await?;
            Ok(PointResult::Copied(counts))
        }
        Err(e) => {
            session.abandon().await;
            // A copy reads the source under no lease of its own (the
            // source may be read-only to it): a prune and gc there may
            // remove the point meanwhile, and what went with it is then
            // missing. That is the point gone, not damage. (The target's
            // damage is never that: it stops the copy.)
            if is_source_damage(&e) && matches!(run.source.point_gone(vm, id).await, Ok(true)) {
                let point = format!("{vm}@{id}");
                run.progress
                    .notice(Notice::Warning(Warning::CopySourceGone { point }));
                return Ok(PointResult::Gone);
            }
            Err(e)
        }
    }
}

/// The target's point this copy builds on, whose nodes it trusts without
/// a look: the source point's parent if the target has it, else the VM's
/// newest point there. Read after the lease and pinned, as a backup pins
/// its parent. None if the target has no such point (or it is damaged:
/// then nothing is trusted and everything is looked at).
async fn reference_point(
    run: &Run<'_>,
    manifest: &Manifest,
    session: &Session,
) -> Result<Option<Manifest>> {
    let vm = &manifest.vm;
    let listed = run.target.points_in_order(vm).await?;
    let pick = manifest
        .parent
        .as_ref()
        .filter(|p| listed.contains(p))
        .or(listed.last())
        .cloned();
    let Some(pid) = pick else {
        return Ok(None);
    };
    session.pin([(vm.clone(), pid.clone())]).await?;
    match run.target.load_manifest(vm, &pid).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.is_damage() || matches!(e, Error::PointNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every node of the point, in disk order, a batch at a time, with the
/// length of its segment (a node used at two lengths is damage: it is
/// checked at each).
async fn copy_nodes(
    run: &Run<'_>,
    manifest: &Manifest,
    session: &Session,
    copier: &mut Copier<'_>,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut done = 0u64;
    for disk in &manifest.disks {
        for (i, node) in disk.segments.iter().enumerate() {
            let range = disk.segment_range(i);
            done += range.end - range.start;
            let Some(node) = node else { continue };
            if seen.len() >= SEEN_CAP {
                seen.clear();
            }
            let used = (*node, range.end - range.start);
            if seen.insert(used) {
                batch.push(used);
            }
            if batch.len() == BATCH {
                copier.batch(session, &batch).await?;
                batch.clear();
                run.progress.add_done(std::mem::take(&mut done));
            }
        }
    }
    copier.batch(session, &batch).await?;
    run.progress.add_done(done);
    Ok(())
}

/// (c): for every sweep that ran meanwhile, makes sure the target still
/// holds everything the point references, copying again from the
/// source what it lost; waits only while a sweep deletes a batch it
/// chose before it could see this lease.
pub(super) async fn settle(
    run: &Run<'_>,
    session: &mut Session,
    manifest: &Manifest,
) -> Result<()> {
    let began = session.started();
    session
        .settle_with(&run.progress, async |all, deps| {
            if !all && crate::backup::repair::all_exist(run.target, deps).await? {
                return Ok(Vec::new());
            }
            recheck::ensure_present(run, manifest, began).await
        })
        .await
}

/// (d): the manifest, create-only, after everything it references; (c)
/// once more if the commit came so late that the lease may have died.
async fn commit(
    run: &Run<'_>,
    manifest: &Manifest,
    session: &mut Session,
    mut counts: CopyCounts,
) -> Result<CopyCounts> {
    let (stored, len) = run.target.write_manifest(manifest).await?;
    if stored == Stored::New {
        counts.bytes_stored += len;
    }
    let key = keys::point(&manifest.vm, &manifest.id);
    let committed = run.target.backend().head(&key).await?.last_modified;
    if session.committed_late(committed) {
        settle(run, session, manifest).await?;
    }
    Ok(counts)
}

/// Best effort, once the point is committed: the damage records of what
/// the copy stored again (a stale record only costs a later backup an
/// upload). Credentials that may not delete leave them, with a warning.
async fn clear_records(run: &Run<'_>, replaced: &[String]) {
    if replaced.is_empty() {
        return;
    }
    if let Err(e) = crate::damage::clear(run.target, replaced).await {
        run.progress
            .notice(Notice::Warning(Warning::DamageRecordsKept {
                records: replaced.len() as u64,
                reason: e.to_string(),
            }));
    }
}
