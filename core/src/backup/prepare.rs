//! Before anything is stored: every disk's source, change files and
//! parent checked ([`prepare`], [`find_parents`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::plan::ChangeSource;
use super::{BackupRequest, bitmaps};
use crate::changes::{ExtentSet, parse};
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::manifest::{DiskManifest, Manifest};
use crate::names::DiskName;
use crate::progress::{Notice, Progress, Warning};
use crate::repo::Repository;
use crate::source::DiskSource;

/// A disk checked and ready to back up.
pub(super) struct Prepared {
    pub(super) name: DiskName,
    pub(super) source: Arc<DiskSource>,
    pub(super) changes: ChangeSource,
    /// Parsed extent files (for `ChangeSource::Extents`).
    pub(super) extents: Option<(ExtentSet, String)>,
    pub(super) parent: Option<(PointId, DiskManifest)>,
    pub(super) checkpoint: Option<String>,
    /// Why the change source was set aside for a full read: the parent
    /// is not the VM's newest point (see [`find_parents`]).
    pub(super) changes_set_aside: Option<String>,
}

/// Checks every argument, source and change file before anything is
/// stored.
pub(super) async fn prepare(req: &BackupRequest) -> Result<Vec<Prepared>> {
    if req.disks.is_empty() {
        return Err(Error::InvalidArgument(
            "no disk given: use --disk NAME=PATH".into(),
        ));
    }
    if !(0.0..=100.0).contains(&req.audit_percent) {
        return Err(Error::InvalidArgument(format!(
            "--audit-unchanged {} must be a percentage from 0 to 100",
            req.audit_percent
        )));
    }
    let mut names = HashSet::new();
    for (name, _) in &req.disks {
        if !names.insert(name) {
            return Err(Error::InvalidArgument(format!(
                "disk {name} is given twice"
            )));
        }
    }
    if let Some(name) = req.changes.keys().find(|n| !names.contains(n)) {
        return Err(Error::InvalidArgument(format!(
            "a change source names disk {name}, which no --disk gives"
        )));
    }
    let mut out = Vec::new();
    for (name, path) in &req.disks {
        let changes = req
            .changes
            .get(name)
            .cloned()
            .unwrap_or(ChangeSource::FullScan);
        let own: Vec<String> = match &changes {
            ChangeSource::Bitmaps(b) => b
                .iter()
                .filter(|b| b.uri.is_none())
                .map(|b| b.name.clone())
                .collect(),
            _ => Vec::new(),
        };
        let source = DiskSource::open_any(path, &own).await?;
        if !own.is_empty() && source.is_local() {
            return Err(Error::InvalidArgument(format!(
                "disk {name}: --bitmap {name}={} reads a dirty bitmap from the disk's own NBD \
                 export, but the disk is the file {}; give NAME@URI for a bitmap of another \
                 export, or the disk as an NBD URI",
                own[0],
                path.display()
            )));
        }
        let source = Arc::new(source);
        let extents = match &changes {
            ChangeSource::Extents(files) => Some(read_extents(files, source.size())?),
            ChangeSource::Base(old) => {
                if !source.is_local() {
                    return Err(Error::InvalidArgument(format!(
                        "disk {name}: --base compares two image files, but the disk is the NBD \
                         export {}; use --bitmap for an NBD disk",
                        path.display()
                    )));
                }
                // Compared with itself the disk shows no change: every
                // segment would reuse the parent's, and the point restore
                // the parent's bytes, from a backup that succeeded.
                if source.same_disk(&DiskSource::open(old)?)? {
                    return Err(Error::InvalidArgument(format!(
                        "disk {name}: --base {name}={} is the disk's own image {} (the same \
                         file): compared with itself the disk shows no change, and the point \
                         would hold the parent's bytes; give the image of the disk as it was \
                         at the parent point (a snapshot), or back up without --base",
                        old.display(),
                        path.display()
                    )));
                }
                None
            }
            ChangeSource::Bitmaps(b) => Some(bitmaps::read(name, &source, b).await?),
            ChangeSource::FullScan => None,
        };
        out.push(Prepared {
            name: name.clone(),
            source,
            changes,
            extents,
            parent: None,
            checkpoint: req.checkpoints.get(name).cloned(),
            changes_set_aside: None,
        });
    }
    Ok(out)
}

/// The union of several extent files, and a description of them.
fn read_extents(files: &[PathBuf], size: u64) -> Result<(ExtentSet, String)> {
    let mut all = ExtentSet::new();
    let mut formats = Vec::new();
    for f in files {
        let (set, format) = parse::read_change_file(f, size)?;
        all = all.union(&set);
        formats.push(format!("{} ({})", f.display(), format.name()));
    }
    Ok((all, formats.join(", ")))
}

/// Each disk's parent: in `--parent` if given, else the newest point of
/// the VM that has the disk (with the repository's segment size).
///
/// A change source (`--changed`, `--base`, `--bitmap`) says what changed
/// since the VM's newest point, the one its maker last backed up: nothing
/// in it names that point. So when a disk's parent is not the newest
/// point as listed (a newer one is damaged or gone, lacks the disk, or
/// has another segment size), the changes between the two are in no
/// change source, and taking it against the older parent would reuse
/// segments that changed: a point that restores wrong bytes, from a
/// backup that succeeds (found by review at stop 49). Such a disk is read
/// in full against its parent instead (still deduplicated), with a
/// [`Warning::ChangesSetAside`]. `--parent` names the point the changes
/// are relative to, and is taken at its word.
pub(super) async fn find_parents(
    repo: &Repository,
    req: &BackupRequest,
    disks: &mut [Prepared],
    progress: &Progress,
) -> Result<Option<Newest>> {
    let seg = repo.config().segment_size;
    let mut seen_newest = false;
    // When each parent taken was made (for `crate::removed`).
    let mut created: BTreeMap<PointId, DateTime<Utc>> = BTreeMap::new();
    let skipped = |id: &PointId, e: &Error| {
        progress.notice(Notice::Warning(Warning::DamagedParentSkipped {
            point: format!("{}@{id}", req.vm),
            reason: e.to_string(),
        }));
    };
    let newest = walk_parents(repo, req, skipped, |m, passed| {
        if !seen_newest {
            seen_newest = true;
            warn_dropped_disks(m, disks, progress);
        }
        for d in disks.iter_mut().filter(|d| d.parent.is_none()) {
            match m.disk(d.name.as_str()) {
                Ok(pd) if pd.segment_size == seg => {
                    d.parent = Some((m.id.clone(), pd.clone()));
                    created.insert(m.id.clone(), m.created);
                    if d.changes_set_aside.is_none() {
                        d.changes_set_aside = passed.map(str::to_string);
                    }
                }
                Ok(pd) => {
                    let why = format!(
                        "the newer point {} holds it with segments of {} bytes",
                        m.point_name(),
                        pd.segment_size
                    );
                    d.changes_set_aside.get_or_insert(why);
                }
                Err(_) => {
                    let why = format!("the newer point {} does not hold it", m.point_name());
                    d.changes_set_aside.get_or_insert(why);
                }
            }
        }
        disks.iter().all(|d| d.parent.is_some())
    })
    .await?;
    // A newest point removed leaves a record (`crate::removed`), listed
    // after the points; `--parent` is taken at its word.
    if req.parent.is_none()
        && disks
            .iter()
            .any(|d| d.parent.is_some() && !bound(&d.changes))
    {
        let records = crate::removed::list(repo, &req.vm).await?;
        let margin = repo.config().protocol.margin();
        for d in disks.iter_mut().filter(|d| d.changes_set_aside.is_none()) {
            let Some((parent, _)) = &d.parent else {
                continue;
            };
            // Not taken by the walk (never so): counts as made long ago.
            let created = (created.get(parent).copied()).unwrap_or(DateTime::<Utc>::MIN_UTC);
            let mut made = crate::removed::Made {
                created,
                stored: None,
            };
            let newer = |made| crate::removed::newer_than(&records, parent, made, margin);
            // Only when a record may be newer: a HEAD of the parent's
            // manifest says when the store wrote it (gone or unreadable:
            // as if before every record).
            if newer(made).is_some() {
                let key = crate::keys::point(&req.vm, parent);
                made.stored = repo
                    .backend()
                    .head(&key)
                    .await
                    .ok()
                    .map(|m| m.last_modified);
            }
            if let Some(r) = newer(made) {
                d.changes_set_aside = Some(format!(
                    "the newer point {}@{r} was removed (forget, prune or repair)",
                    req.vm
                ));
            }
        }
    }
    for d in disks.iter_mut() {
        let bound = bound(&d.changes);
        let why = d.changes_set_aside.take();
        let (Some((parent, _)), Some(why), false) = (&d.parent, why, bound) else {
            continue;
        };
        progress.notice(Notice::Warning(Warning::ChangesSetAside {
            disk: d.name.to_string(),
            parent: format!("{}@{parent}", req.vm),
            reason: why.clone(),
        }));
        d.changes = ChangeSource::FullScan;
        d.changes_set_aside = Some(why);
    }
    Ok(newest)
}

/// Whether a change source holds whatever came after its parent: a QMP
/// checkpoint bitmap is the parent's own (`unusable_checkpoint` checks
/// the name it recorded), and a full scan needs no change information.
fn bound(changes: &ChangeSource) -> bool {
    match changes {
        ChangeSource::Bitmaps(b) => b.iter().all(|b| b.checkpoint),
        ChangeSource::FullScan => true,
        _ => false,
    }
}

/// The VM's newest point as a backup listed it, and its time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Newest {
    pub(super) time: DateTime<Utc>,
    pub(super) point: PointId,
    /// `time` is the manifest's; else the end of the id's second (the
    /// manifest could not be read).
    pub(super) exact: bool,
}

/// The manifests a backup takes parents from, newest first, each given
/// to `take` until it says it has all it needs: `--parent`'s alone, or
/// the VM's points, skipping those pruned since the listing and those
/// whose manifest is damaged (told to `damaged`: an older point can be a
/// parent). With each manifest `take` is told why a point listed as newer
/// was passed over, if one was (damaged, gone, or of the same second and
/// not readable, so not known to be older). The engine (`find_parents`)
/// and the QMP checkpoint lookup walk the same way, so a checkpoint is
/// looked for in the point the engine then picks. Returns the VM's newest
/// point as listed (with `--parent` too) and its time: its manifest's, or
/// the end of its id's second if it cannot be read (its time within that
/// second is unknown).
pub(super) async fn walk_parents(
    repo: &Repository,
    req: &BackupRequest,
    mut damaged: impl FnMut(&PointId, &Error),
    mut take: impl FnMut(&Manifest, Option<&str>) -> bool,
) -> Result<Option<Newest>> {
    // `--parent` with a whole id needs no listing (one round trip fewer
    // before the lease; `s3::a_backup_given_its_parents_whole_id...`):
    // the point made is then dated after that parent only.
    let (candidates, unordered) = match &req.parent {
        Some(id) => (vec![id.clone()], Vec::new()),
        None => {
            let listed = repo.point_ids(&req.vm).await?;
            let mut ids = repo.order_points(&req.vm, listed.clone()).await?;
            // Points of one second that could not be read to be ordered
            // (damaged, or pruned since the listing).
            let ordered: BTreeSet<&PointId> = ids.iter().collect();
            let unordered: Vec<PointId> = (listed.iter())
                .filter(|id| !ordered.contains(id))
                .cloned()
                .collect();
            ids.reverse();
            (ids, unordered)
        }
    };
    let end_of_second = |id: &PointId| {
        Some(Newest {
            time: id.time() + Duration::seconds(1) - Duration::microseconds(1),
            point: id.clone(),
            exact: false,
        })
    };
    let exact = |time, point: &PointId| {
        let point = point.clone();
        Some(Newest {
            time,
            point,
            exact: true,
        })
    };
    let mut newest = unordered.iter().filter_map(end_of_second).max();
    let mut passed: Option<String> = None;
    for id in candidates {
        // (`--parent` is taken at its word.)
        if passed.is_none()
            && req.parent.is_none()
            && let Some(u) = unordered.iter().find(|u| u.time() >= id.time())
        {
            passed = Some(format!(
                "the point {}@{u}, of the same second or newer, cannot be read",
                req.vm
            ));
        }
        let m = match repo.load_manifest(&req.vm, &id).await {
            Ok(m) => m,
            // Pruned since the listing: the next older point will do (an
            // explicit --parent that is gone is still an error).
            Err(Error::PointNotFound { .. }) if req.parent.is_none() => {
                let why = format!("the newer point {}@{id} was removed meanwhile", req.vm);
                passed.get_or_insert(why);
                newest = newest.max(end_of_second(&id));
                continue;
            }
            Err(e) if e.is_damage() && req.parent.is_none() => {
                damaged(&id, &e);
                let why = format!("the newer point {}@{id} is damaged", req.vm);
                passed.get_or_insert(why);
                newest = newest.max(end_of_second(&id));
                continue;
            }
            Err(e) => return Err(e),
        };
        // Newest first: the first manifest read gives the time.
        newest = newest.max(exact(m.time, &m.id));
        if take(&m, passed.as_deref()) {
            break;
        }
    }
    Ok(newest)
}

/// A disk the newest point (or `--parent`) has and this backup omits
/// would silently leave the VM's newest state: say so (prune keeps the
/// point that still holds it).
pub(super) fn warn_dropped_disks(newest: &Manifest, disks: &[Prepared], progress: &Progress) {
    for pd in &newest.disks {
        if !disks.iter().any(|d| d.name == pd.name) {
            progress.notice(Notice::Warning(Warning::DiskDropped {
                disk: pd.name.to_string(),
                point: newest.point_name(),
            }));
        }
    }
}
