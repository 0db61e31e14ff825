//! Backups of a running QEMU's disks driven over QMP (`--qmp SOCKET`,
//! disks given as `qmp:NODE_OR_DRIVE`): a pull-mode view is set up for
//! them ([`crate::qmp::pull`]), the disks are read from its NBD exports
//! with the parent's checkpoint bitmap as the change source, the new
//! checkpoint is recorded in the point, and the view is torn down, the
//! parent's checkpoint being dropped only if the point was stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backup::plan::{BitmapRef, ChangeSource};
use crate::backup::prepare::walk_parents;
use crate::backup::{BackupRequest, backup};
use crate::error::{Error, Result};
use crate::manifest::{DiskManifest, Manifest};
use crate::names::DiskName;
use crate::progress::{Notice, Progress, Warning};
use crate::qmp::{DiskRequest, PullOptions, PullSession, Qmp, QmpError};
use crate::repo::Repository;

/// The prefix of a disk given as a QEMU node or drive.
pub const QMP_DISK: &str = "qmp:";

/// Where QEMU is and where the view's files go.
#[derive(Debug, Clone)]
pub struct QmpSource {
    pub socket: PathBuf,
    /// An NBD server QEMU already runs, to add the exports to.
    pub nbd_socket: Option<PathBuf>,
    /// For the fleecing images (they grow by what the guest writes while
    /// the backup runs) and the session's lock file.
    pub work_dir: PathBuf,
}

/// Why a checkpoint bitmap cannot serve as the changes since `parent`,
/// if it cannot: it must be the one the parent point recorded.
pub(super) fn unusable_checkpoint(bitmaps: &[BitmapRef], parent: &DiskManifest) -> Option<String> {
    let b = bitmaps.iter().find(|b| b.checkpoint)?;
    match &parent.checkpoint {
        Some(c) if *c == b.name => None,
        Some(c) => Some(format!(
            "the parent point recorded checkpoint {c}, not {}: the bitmap does not start at \
             the parent",
            b.name
        )),
        None => Some(format!(
            "the parent point recorded no checkpoint, so bitmap {} does not start at it",
            b.name
        )),
    }
}

/// The checkpoint recorded by each of `disks`' parent, for the disks
/// that have one (the value is `None` when the parent recorded none),
/// found as the engine finds parents (`find_parents`): in `--parent`, or
/// the newest point of the VM that has the disk with the repository's
/// segment size, skipping points pruned since the listing or whose
/// manifest is damaged. A checkpoint of another point than the engine
/// then picks is not used (`unusable_checkpoint`).
async fn parent_checkpoints(
    repo: &Repository,
    req: &BackupRequest,
    disks: &[DiskName],
) -> Result<HashMap<DiskName, Option<String>>> {
    let seg = repo.config().segment_size;
    let mut found = HashMap::new();
    if disks.is_empty() {
        return Ok(found);
    }
    // The engine warns of damaged points it skips; an older point's
    // checkpoint may still serve: a damaged newest point must not stop
    // every backup through QMP.
    walk_parents(
        repo,
        req,
        |_, _| {},
        |m, _| {
            for name in disks {
                if !found.contains_key(name)
                    && let Ok(pd) = m.disk(name.as_str())
                    && pd.segment_size == seg
                {
                    found.insert(name.clone(), pd.checkpoint.clone());
                }
            }
            disks.iter().all(|d| found.contains_key(d))
        },
    )
    .await?;
    Ok(found)
}

/// Runs `req` with its `qmp:` disks read through a view set up over QMP.
pub async fn backup_with_qmp(
    repo: &Repository,
    mut req: BackupRequest,
    q: &QmpSource,
    progress: Arc<Progress>,
) -> Result<Manifest> {
    let qmp_err = |e: QmpError| Error::Hypervisor {
        socket: q.socket.display().to_string(),
        message: e.to_string(),
    };
    let qmp_disks: Vec<DiskName> = req
        .disks
        .iter()
        .filter(|(_, p)| p.to_str().is_some_and(|p| p.starts_with(QMP_DISK)))
        .map(|(n, _)| n.clone())
        .collect();
    let parents = parent_checkpoints(repo, &req, &qmp_disks).await?;
    let mut wanted = Vec::new();
    for (name, path) in &req.disks {
        let Some(node) = path.to_str().and_then(|p| p.strip_prefix(QMP_DISK)) else {
            continue;
        };
        if req.changes.contains_key(name) {
            return Err(Error::InvalidArgument(format!(
                "disk {name} is read through --qmp, which takes its changes from QEMU's \
                 checkpoints: give it no --changed, --base or --bitmap"
            )));
        }
        let since = parents.get(name).cloned().flatten();
        wanted.push(DiskRequest {
            name: name.to_string(),
            node: node.to_string(),
            since,
        });
    }
    if wanted.is_empty() {
        return Err(Error::InvalidArgument(
            "--qmp is given but no disk is qmp:NODE".into(),
        ));
    }
    let mut conn = Qmp::connect(&q.socket).await.map_err(qmp_err)?;
    let opts = PullOptions {
        work_dir: q.work_dir.clone(),
        // Per repository, so that two repositories keep separate chains.
        bitmap_prefix: format!(
            "xfull-{}",
            repo.config()
                .repo_id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(16)
                .collect::<String>()
        ),
        nbd_socket: q.nbd_socket.clone(),
    };
    let session = PullSession::start(&mut conn, &wanted, &opts)
        .await
        .map_err(qmp_err)?;
    for n in session.notes() {
        progress.notice(Notice::Warning(Warning::HypervisorCleanup {
            message: n.clone(),
        }));
    }
    for d in session.disks() {
        let name = d.name.parse()?;
        if let Some(entry) = req.disks.iter_mut().find(|(n, _)| *n == name) {
            entry.1 = PathBuf::from(&d.uri);
        }
        match &d.since {
            Some(since) => {
                req.changes.insert(
                    name.clone(),
                    ChangeSource::Bitmaps(vec![BitmapRef {
                        name: since.clone(),
                        uri: None,
                        checkpoint: true,
                    }]),
                );
            }
            None if parents.contains_key(&name) => {
                progress.notice(Notice::Warning(Warning::CheckpointUnusable {
                    disk: d.name.clone(),
                    reason: d
                        .full_read
                        .clone()
                        .unwrap_or_else(|| "reading the disk in full".into()),
                }))
            }
            None => {}
        }
        req.checkpoints.insert(name, d.checkpoint.clone());
    }
    let result = backup(repo, req, progress.clone()).await;
    for n in session.finish(&mut conn, result.is_ok()).await {
        progress.notice(Notice::Warning(Warning::HypervisorCleanup { message: n }));
    }
    result
}
