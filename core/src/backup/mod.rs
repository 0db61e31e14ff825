//! Backup: one express-full point of a VM's disks.
//!
//! Each disk gets a plan ([`plan`]): without a parent or with
//! `--full-scan`, every segment is read; with a change source, segments no
//! change touches reuse the parent's node unread and touched segments are
//! re-chunked around the changes ([`incremental`]). A sample of the reused
//! segments is re-read to catch a change source that missed writes
//! ([`audit`]). New chunks are stored create-only, then the nodes, then the
//! manifest: the point exists exactly when its manifest does, so a failed
//! or killed backup leaves no point.

pub mod audit;
#[cfg(test)]
mod audit_tests;
mod bitmaps;
mod clock;
mod commit;
pub mod incremental;
mod parent_check;
#[cfg(test)]
mod parent_choice_tests;
mod pipeline;
pub mod plan;
mod prepare;
pub mod qmp;
pub mod repair;
mod scan;
pub mod segment;
pub mod trust;
mod upload;
mod zero_check;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::changes::snapshot;
use crate::damage::KnownDamage;
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::manifest::{Audit, DiskManifest, Manifest};
use crate::names::{DiskName, VmName};
use crate::placement::session::{DiskUploads, SessionPacks};
use crate::progress::{Notice, Progress, Warning};
use crate::repo::Repository;
use crate::session::Session;
use crate::source::DiskSource;
use crate::task::blocking;
use clock::{check_newest_not_ahead, check_time};
pub(crate) use commit::last_check_too_old;
use commit::{Commit, commit_and_recheck, first_check, settle_sweeps};
use pipeline::DiskResult;
use plan::{ChangeSource, DiskPlan};
use prepare::{Prepared, find_parents, prepare};
use trust::{Present, Trust};

/// Block size of `--base` snapshot comparisons.
const BASE_BLOCK: u64 = 4096;

/// What to back up, and how.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub vm: VmName,
    pub disks: Vec<(DiskName, PathBuf)>,
    /// Change sources by disk; other disks are scanned in full.
    pub changes: BTreeMap<DiskName, ChangeSource>,
    /// Share of the segments a change source calls unchanged to re-read.
    pub audit_percent: f64,
    /// Deduplicate against this point instead of each disk's latest.
    pub parent: Option<PointId>,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    /// Record the point under this time instead of now.
    pub time: Option<DateTime<Utc>>,
    /// Accept a `time` further ahead than the clock margin.
    pub allow_future: bool,
    /// QEMU checkpoint bitmaps created at this point's moment, by disk
    /// (recorded in the manifest; see [`qmp`]).
    pub checkpoints: BTreeMap<DiskName, String>,
}

impl BackupRequest {
    /// A backup of `disks` of `vm` from `host`, dated now, with nothing
    /// else asked: no change source, parent, labels or checkpoints.
    pub fn new(vm: VmName, disks: Vec<(DiskName, PathBuf)>, host: impl Into<String>) -> Self {
        BackupRequest {
            vm,
            disks,
            changes: BTreeMap::new(),
            audit_percent: 0.0,
            parent: None,
            labels: BTreeMap::new(),
            host: host.into(),
            time: None,
            allow_future: false,
            checkpoints: BTreeMap::new(),
        }
    }
}

/// Runs a backup and returns the committed point's manifest.
/// Cancelling `progress` before the commit stops it cleanly: the lease is
/// removed and no point is stored.
pub async fn backup(
    repo: &Repository,
    req: BackupRequest,
    progress: Arc<Progress>,
) -> Result<Manifest> {
    let started = Instant::now();
    check_time(repo, &req)?;
    let mut disks = prepare(&req).await?;
    for d in &disks {
        // An NBD export is the guest-visible disk, not a container file.
        if d.source.is_local() {
            crate::image_format::warn_if_container(&d.name, &d.source, &progress);
        }
    }
    // The lease comes before reading any parent (docs/design.md,
    // "Concurrency"): a parent read after it is either protected by the
    // sweeps that see the lease, or re-checked before the commit.
    let mut session = Session::begin(repo, &req.vm, &req.host).await?;
    // The generation the point is locked for: the one this backup began in.
    let lock = repo
        .config()
        .object_lock
        .map(|l| (l, l.current(repo.config().protocol.margin())));
    if let Err(e) = crate::lock::check_writer_clock(repo, session.started()) {
        session.abandon().await;
        return Err(e);
    }
    let heartbeat = session.heartbeat();
    let work = async {
        // The parents, read and pinned; beside them what the backup may
        // rely on as stored (see `trust`) and the chunk index. Neither
        // of those needs the pin, only the lease written: what the backup
        // finds in the index and relies on is recorded in the lease (as a
        // pack dependency). So the round trips of the three overlap. All
        // three run to their end (join, not try_join): a pin PUT dropped
        // in flight could land after the failed session deleted its
        // lease, which would then look alive to gc until its TTL. The
        // parents' error, if any, is the one reported, as before.
        let parents = async {
            let newest = find_parents(repo, &req, &mut disks, &progress).await?;
            session
                .pin(disks.iter().filter_map(|d| {
                    d.parent
                        .as_ref()
                        .map(|(id, _)| (req.vm.clone(), id.clone()))
                }))
                .await?;
            Ok::<_, Error>(newest)
        };
        let placement = repo.chunks();
        let (pinned, known, index) =
            tokio::join!(parents, KnownDamage::load(repo), placement.open_index());
        let (newest_listed, known, index) = (pinned?, known?, index?);
        check_newest_not_ahead(repo, &req, newest_listed.as_ref())?;
        let full_scan_with_parent = disks
            .iter()
            .any(|d| matches!(d.changes, ChangeSource::FullScan) && d.parent.is_some());
        let present = tokio::sync::OnceCell::new();
        if full_scan_with_parent {
            let _ = present.set(Arc::new(Present::load(repo).await?));
        }
        let ctx = DiskCtx {
            audit_percent: req.audit_percent,
            known,
            present,
            packs: placement.session(index),
            progress: progress.clone(),
        };
        let (mut commit, last) = back_up_disks(repo, disks, &ctx, &session).await?;
        commit.newest_listed = newest_listed;
        if let Some(reason) = ctx.packs.index_damage() {
            progress.notice(Notice::Warning(Warning::IndexDamaged { reason }));
        }
        // (c)'s first round beside the upload of the last packs and the
        // index object: it needs the deps (all recorded once every chunk
        // was looked up), not the session's own objects, which are
        // younger than its lease (the cutoff spares them). A pack or
        // index object the upload finds already stored is a dep recorded
        // after that round: the next one writes and checks it.
        let uploads = async {
            if let (Some(u), Some((_, dm))) = (last, commit.disks.last_mut()) {
                pipeline::count_packs(u, &mut dm.stats).await?;
            }
            ctx.packs.finish().await
        };
        let (finished, first) = tokio::join!(uploads, first_check(repo, &mut session));
        finished?;
        session.depend(ctx.packs.take_existed());
        // After a slow last upload that round is too old to settle on.
        let first = Some(first?).filter(|_| !last_check_too_old(repo, &session));
        settle_sweeps(repo, &mut session, &commit, &progress, first).await?;
        if let Some((lock, generation)) = lock {
            let disks = commit.disks.iter_mut().map(|(_, d)| d);
            let deps = session.deps();
            let done =
                crate::lock::extend::for_backup(repo, &lock, generation, &deps, disks, &progress);
            commit.lock = Some(done.await?);
        }
        Ok::<_, Error>(commit)
    };
    let prepared = tokio::select! {
        r = work => r,
        _ = progress.cancelled() => Err(Error::Cancelled {
            cleaned: "the backup stopped before storing a point; its lease was removed \
                      (what it uploaded is garbage for the next gc)"
                .into(),
        }),
    };
    // From here on the commit is not interrupted: it is short, and a point
    // half committed is worse than a point.
    let result = match prepared {
        Ok(commit) => {
            commit_and_recheck(repo, &req, commit, &mut session, started, &progress).await
        }
        Err(e) => Err(e),
    };
    drop(heartbeat);
    // A committed point is named in the ended lease (for sweeps that began
    // before the commit); a failed session's objects are garbage.
    match result {
        Ok(manifest) => {
            session.end(Some(manifest.id.clone())).await?;
            Ok(manifest)
        }
        Err(e) => {
            session.abandon().await;
            Err(e)
        }
    }
}

/// What every disk of a backup shares.
struct DiskCtx {
    audit_percent: f64,
    /// Objects with damage records.
    known: KnownDamage,
    /// The repository's objects, for full scans with a parent: loaded
    /// before the first disk if one is a full scan, else by the first
    /// disk whose audit turns it into one (a whole walk of the index:
    /// once per backup, not per disk).
    present: tokio::sync::OnceCell<Arc<Present>>,
    /// The session's pack writer and dedup lookups.
    packs: Arc<SessionPacks>,
    progress: Arc<Progress>,
}

async fn back_up_disks(
    repo: &Repository,
    mut disks: Vec<Prepared>,
    ctx: &DiskCtx,
    session: &Session,
) -> Result<(Commit, Option<DiskUploads>)> {
    ctx.progress
        .add_total(disks.iter().map(|d| d.source.size()).sum());
    let mut out: Vec<(Arc<DiskSource>, DiskManifest)> = Vec::new();
    let mut replaced = Vec::new();
    let mut uploads = None;
    for d in disks.drain(..) {
        // The disk before's last puts end before this disk packs (memory
        // stays one disk's packs in flight).
        if let (Some(u), Some((_, dm))) = (uploads.take(), out.last_mut()) {
            pipeline::count_packs(u, &mut dm.stats).await?;
        }
        let source = d.source.clone();
        let (dm, r) = back_up_disk(repo, d, ctx).await?;
        session.depend(r.existed);
        session.depend(ctx.packs.take_existed());
        replaced.extend(r.replaced);
        uploads = Some(r.uploads);
        out.push((source, dm));
    }
    // The caller waits for the last disk's last puts and finishes the
    // session's packs (their index object makes them findable) before
    // any point names them.
    Ok((
        Commit {
            disks: out,
            replaced,
            lock: None,
            newest_listed: None,
        },
        uploads,
    ))
}

async fn back_up_disk(
    repo: &Repository,
    d: Prepared,
    ctx: &DiskCtx,
) -> Result<(DiskManifest, DiskResult)> {
    let (audit_percent, progress) = (ctx.audit_percent, ctx.progress.clone());
    let started = Instant::now();
    let cfg = repo.config().clone();
    let size = d.source.size();
    let parent = d.parent.as_ref().map(|(_, p)| p);
    let (mut plan, mut source) = match (&d.changes, parent) {
        (_, None) => (
            DiskPlan::full(size, cfg.segment_size, None),
            match &d.changes {
                ChangeSource::FullScan => "full-scan (no parent)".to_string(),
                _ => "full-scan (no parent: the change source was not needed)".to_string(),
            },
        ),
        (ChangeSource::FullScan, Some(p)) => (
            DiskPlan::full(size, cfg.segment_size, Some(p)),
            match &d.changes_set_aside {
                Some(why) => format!("full-scan: the change source was set aside: {why}"),
                None => "full-scan".to_string(),
            },
        ),
        (ChangeSource::Extents(_), Some(p)) => {
            let (set, desc) = d.extents.clone().unwrap_or_default();
            (
                DiskPlan::incremental(size, p, &set),
                format!("extents: {desc}"),
            )
        }
        (ChangeSource::Bitmaps(b), Some(p)) => match qmp::unusable_checkpoint(b, p) {
            // The bitmap does not start at this parent: read it all.
            Some(why) => (
                DiskPlan::full(size, cfg.segment_size, Some(p)),
                format!("full-scan: {why}"),
            ),
            None => {
                let (set, desc) = d.extents.clone().unwrap_or_default();
                (
                    DiskPlan::incremental(size, p, &set),
                    format!("dirty bitmaps: {desc}"),
                )
            }
        },
        (ChangeSource::Base(old), Some(p)) => {
            let desc = format!("snapshot diff against {}", old.display());
            let (old, new) = (old.clone(), d.source.path().to_path_buf());
            let set = blocking("snapshot diff", move || {
                snapshot::diff_images(&old, &new, BASE_BLOCK)
            })
            .await??;
            (DiskPlan::incremental(size, p, &set), desc)
        }
    };

    // The reused segments the audit reads are picked first: the parent
    // check fetches their nodes too (a worker checks the segment against
    // it), so that one found unsound is read in full and stored again
    // instead. The touched ones are picked after it, among those still
    // touched (a pick it turned into a full read would audit nothing).
    let auditing = plan.reported.is_some() && audit_percent > 0.0;
    if auditing {
        audit::mark_reused(&mut plan, audit_percent);
    }
    // So is the node of the reused segment where the zeros the disk reads
    // to its end start (see `zero_check`).
    if plan.reported.is_some() {
        zero_check::note_tail(d.source.clone(), &mut plan, cfg.segment_size).await?;
    }
    let (damaged, damaged_nodes) =
        parent_check::drop_damaged_parents(repo, &mut plan, &ctx.known, parent).await?;
    if damaged > 0 {
        source = format!(
            "{source}; {damaged} segment(s) read in full: their parent nodes are missing or \
             damaged, or hold damaged chunks"
        );
        progress.notice(Notice::Warning(Warning::ParentSegmentsDamaged {
            disk: d.name.to_string(),
            segments: damaged,
        }));
    }
    // The audit's segments are read by the pipeline's workers, which fail
    // with `AuditMismatch` when one differs; those the check turned into
    // full reads are no longer audited.
    if auditing {
        audit::mark_touched(&mut plan, audit_percent);
    }
    let mut audit = auditing.then(|| Audit {
        segments: audit::marked(&plan),
        mismatch_at: None,
    });
    let reported = plan.reported;
    // Every reused segment's zeros against its parent, unread (see
    // `zero_check`); a hit is an audit mismatch found before the pipeline.
    let zeroed = match reported {
        Some(_) => match zero_check::first_zeroed(
            d.source.clone(),
            &plan,
            cfg.segment_size,
            parent.map_or(&[][..], |p| &p.last_data),
        )
        .await?
        {
            None => {
                zero_check::zeroed_tail(repo, d.source.clone(), &plan, cfg.segment_size).await?
            }
            hit => hit,
        },
        None => None,
    };
    if zeroed.is_some() && audit.is_none() {
        audit = Some(Audit {
            segments: 0,
            mismatch_at: None,
        });
    }
    let mut trust = Trust::new(&ctx.known, &damaged_nodes);
    if matches!(d.changes, ChangeSource::FullScan) {
        trust.present = ctx.present.get().cloned();
    }
    let mut result = match zeroed {
        Some(offset) => Err(Error::AuditMismatch { offset }),
        None => {
            pipeline::run(
                repo,
                d.source.clone(),
                plan,
                Arc::new(trust),
                ctx.packs.clone(),
                progress.clone(),
            )
            .await
        }
    };
    if let Err(Error::AuditMismatch { offset }) = result {
        // The change source missed a write: nothing it says can be trusted
        // for this disk. Scan it all instead.
        let found = match zeroed {
            Some(_) => "zeros, where the parent held data,",
            None => "data",
        };
        source = format!(
            "full-scan: the audit found {found} at offset {offset} that the change source \
             ({source}) did not report"
        );
        if let Some(a) = audit.as_mut() {
            a.mismatch_at = Some(offset);
        }
        let full = DiskPlan::full(size, cfg.segment_size, parent);
        // Now a full scan: it makes its point whole like any other.
        let mut trust = Trust::new(&ctx.known, &damaged_nodes);
        trust.present = match parent.is_some() || ctx.present.initialized() {
            true => Some(
                ctx.present
                    .get_or_try_init(|| async { Present::load(repo).await.map(Arc::new) })
                    .await?
                    .clone(),
            ),
            false => None,
        };
        result = pipeline::run(
            repo,
            d.source.clone(),
            full,
            Arc::new(trust),
            ctx.packs.clone(),
            progress,
        )
        .await;
    }
    let mut result = result?;
    let mut stats = std::mem::take(&mut result.stats);
    if let (Some(r), None) = (reported, audit.as_ref().and_then(|a| a.mismatch_at)) {
        stats.bytes_changed = r;
    }
    stats.seconds = started.elapsed().as_secs_f64();
    // Until object lock's step replaces it: the parent's generation.
    let lock_generation = d.parent.as_ref().and_then(|(_, p)| p.lock_generation);
    let segments = std::mem::take(&mut result.segments);
    let last_data = zero_check::last_data_marks(&segments, &result.marks, parent);
    let dm = DiskManifest {
        name: d.name,
        size,
        segment_size: cfg.segment_size,
        segments,
        last_data,
        source,
        parent: d.parent.map(|(id, _)| id),
        audit,
        stats,
        checkpoint: d.checkpoint,
        lock_generation,
    };
    Ok((dm, result))
}
