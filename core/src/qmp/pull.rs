//! A pull-mode backup view of a running VM's disks, set up over QMP as
//! libvirt's `backup-begin` does in pull mode:
//!
//! 1. a small qcow2 "fleecing" image per disk, backed by the disk;
//! 2. one QMP `transaction` that, for every disk at once, adds the next
//!    checkpoint bitmap and starts a `blockdev-backup` with `sync: none`
//!    into the fleecing image: from then on QEMU copies every block the
//!    guest overwrites into the image first, so the image reads as the
//!    disks were at the transaction (one moment for all disks);
//! 3. an NBD export of each fleecing image, carrying the previous
//!    checkpoint's bitmap (the changes since the parent point) as the
//!    `qemu:dirty-bitmap:NAME` context.
//!
//! [`PullSession::finish`] tears it all down. The previous checkpoint is
//! removed only once the point is committed: a failed backup removes the
//! new checkpoint instead, and a killed one leaves both, so change
//! tracking is never lost (the next run reads the parent's checkpoint,
//! which still covers everything since the parent).
//!
//! Leftovers of a killed run (nodes, jobs, exports named `xfull-TAG-*`)
//! are found by their lock file in the work directory: a tag whose lock
//! is not held by a live process is torn down by the next session.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

mod leftovers;

use super::blockdev::NodeInfo;
use super::client::Qmp;
use super::error::QmpError;
use crate::nbd::NbdUri;
use leftovers::{clean_leftovers, new_lock};

/// How long QEMU may take to drop an export or end a cancelled job.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Where the fleecing images and the session's lock file go; it must
    /// be on the host QEMU runs on (the QMP socket is a unix socket, so
    /// it is) and have room for what the guest writes during the backup.
    pub work_dir: PathBuf,
    /// Names this repository's checkpoint bitmaps (`PREFIX.TAG.DISK`), so that
    /// backups of one VM into two repositories keep separate bitmaps.
    pub bitmap_prefix: String,
    /// An NBD server QEMU already runs (its unix socket), to add the
    /// exports to. Without it xfull starts one on a private socket in
    /// `work_dir` and stops it afterwards.
    pub nbd_socket: Option<PathBuf>,
}

/// A disk to back up: its name in the point, the QEMU node or drive, and
/// the checkpoint bitmap its parent point recorded, if any.
#[derive(Debug, Clone)]
pub struct DiskRequest {
    pub name: String,
    pub node: String,
    pub since: Option<String>,
}

/// One disk of a running session.
#[derive(Debug, Clone)]
pub struct PullDisk {
    pub name: String,
    /// The node the bitmaps live on.
    pub node: String,
    pub size: u64,
    /// The checkpoint bitmap this session created for this disk
    /// (`PREFIX.TAG.NAME`): the next backup's `since`.
    pub checkpoint: String,
    /// The bitmap exported with the view (changes since the parent), or
    /// `None` when the disk must be read in full (`full_read` says why).
    pub since: Option<String>,
    pub full_read: Option<String>,
    /// `nbd+unix:///EXPORT?socket=PATH`
    pub uri: String,
}

impl PullDisk {
    /// The NBD metadata context of `since`, if any.
    pub fn bitmap_context(&self) -> Option<String> {
        self.since
            .as_ref()
            .map(|b| format!("qemu:dirty-bitmap:{b}"))
    }
}

/// What a session created in QEMU, in the order it must be undone.
#[derive(Debug, Default)]
struct Created {
    exports: Vec<String>,
    jobs: Vec<String>,
    /// (qcow2 node, file node, image path)
    images: Vec<(Option<String>, Option<String>, PathBuf)>,
    nbd_server: bool,
    checkpoints: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct PullSession {
    tag: String,
    /// [`PullOptions::bitmap_prefix`]: names this repository's
    /// checkpoints, for removing the stale ones.
    bitmap_prefix: String,
    disks: Vec<PullDisk>,
    created: Created,
    lock_path: PathBuf,
    _lock: File,
    /// What cleaning up a killed run's leftovers could not do.
    notes: Vec<String>,
}

impl PullSession {
    /// Sets up the view of `disks`. On an error, whatever was created is
    /// removed again before it is returned.
    pub async fn start(
        qmp: &mut Qmp,
        disks: &[DiskRequest],
        opts: &PullOptions,
    ) -> Result<PullSession, QmpError> {
        let (tag, lock_path, lock) = new_lock(&opts.work_dir)?;
        let notes = clean_leftovers(qmp, &opts.work_dir, &tag).await;
        let mut s = PullSession {
            tag,
            bitmap_prefix: opts.bitmap_prefix.clone(),
            disks: Vec::new(),
            created: Created::default(),
            lock_path,
            _lock: lock,
            notes,
        };
        match s.set_up(qmp, disks, opts).await {
            Ok(()) => Ok(s),
            Err(e) => {
                let undone = s.tear_down(qmp).await.is_empty();
                let checkpoints = std::mem::take(&mut s.created.checkpoints);
                for (node, name) in checkpoints {
                    let _ = qmp.remove_bitmap(&node, &name).await;
                }
                s.release_lock(undone);
                Err(e)
            }
        }
    }

    pub fn disks(&self) -> &[PullDisk] {
        &self.disks
    }

    /// What the start-up found of earlier, killed sessions and could not
    /// clean (for the CLI to show).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Tears the view down. With `committed`, the point that read it is
    /// stored: the parents' checkpoints (and stale checkpoints of this
    /// repository's killed runs) are removed. Without, the new
    /// checkpoints are removed and the parents' kept. Returns what could
    /// not be undone (the backup's outcome does not depend on it).
    pub async fn finish(mut self, qmp: &mut Qmp, committed: bool) -> Vec<String> {
        let mut notes = self.tear_down(qmp).await;
        let undone = notes.is_empty();
        let own: Vec<String> = self.disks.iter().map(|d| d.checkpoint.clone()).collect();
        for d in &self.disks {
            let remove: Vec<String> = if committed {
                stale_checkpoints(qmp, d, &self.bitmap_prefix, &own).await
            } else {
                vec![d.checkpoint.clone()]
            };
            for name in remove {
                if let Err(e) = qmp.remove_bitmap(&d.node, &name).await {
                    notes.push(format!("could not remove bitmap {name} of {}: {e}", d.node));
                }
            }
        }
        self.release_lock(undone);
        notes
    }

    /// Removes the session's lock file if its objects in QEMU are gone
    /// (`undone`); otherwise keeps it, unlocked once the session is
    /// dropped, so that the next session tears down what is left. Removed
    /// after a failed teardown, it left the objects to no session: a
    /// `xfull-TAG-*` whose lock is not in the work directory is left alone
    /// (review 105.3). Checkpoint bitmaps are not the lock's: the next
    /// commit removes stale ones by their prefix.
    fn release_lock(&self, undone: bool) {
        if undone {
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }

    async fn set_up(
        &mut self,
        qmp: &mut Qmp,
        disks: &[DiskRequest],
        opts: &PullOptions,
    ) -> Result<(), QmpError> {
        let mut nodes = Vec::new();
        for d in disks {
            let node = qmp.resolve_node(&d.node).await.map_err(|e| match e {
                QmpError::Unusable(m) => QmpError::Unusable(format!("disk {}: {m}", d.name)),
                e => e,
            })?;
            nodes.push(node);
        }
        for (i, (d, node)) in disks.iter().zip(&nodes).enumerate() {
            let prefix = format!("xfull-{}-{i}", self.tag);
            let path = opts.work_dir.join(format!("{prefix}.qcow2"));
            self.created.images.push((None, None, path.clone()));
            create_fleece(qmp, &prefix, &path, node, &mut self.created).await?;
            let (since, full_read) = usable_since(d, node);
            self.disks.push(PullDisk {
                name: d.name.clone(),
                node: node.node_name.clone(),
                size: node.size,
                // One name per disk, not one per session: a disk's
                // recorded checkpoint must not be found on another disk's
                // node (node names change between starts of a VM, and
                // `qmp:NODE` may then name another disk), where its bits
                // say nothing of this disk's writes and would mark
                // changed segments unchanged.
                checkpoint: format!("{}.{}.{}", opts.bitmap_prefix, self.tag, d.name),
                since,
                full_read,
                uri: String::new(),
            });
        }
        let mut actions = Vec::new();
        for (i, (d, node)) in self.disks.iter().zip(&nodes).enumerate() {
            actions.push(json!({"type": "block-dirty-bitmap-add", "data": {
                "node": d.node, "name": d.checkpoint,
                "persistent": node.can_persist_bitmaps()}}));
            actions.push(json!({"type": "blockdev-backup", "data": {
                "device": d.node, "target": format!("xfull-{}-{i}", self.tag),
                "sync": "none", "job-id": format!("xfull-{}-{i}", self.tag)}}));
        }
        let done = qmp
            .execute("transaction", json!({ "actions": actions }))
            .await;
        // QEMU's refusal of a transaction undoes all of it; any other
        // failure (no answer in time, the connection lost) may come after
        // QEMU ran it, and its jobs would be left to copy every guest
        // write into the image (review 105.3). So they are recorded as
        // created then too: ending a job or removing a bitmap that does
        // not exist is tolerated by the teardown.
        if !matches!(done, Err(QmpError::Command { .. })) {
            for (i, d) in self.disks.iter().enumerate() {
                self.created.jobs.push(format!("xfull-{}-{i}", self.tag));
                self.created
                    .checkpoints
                    .push((d.node.clone(), d.checkpoint.clone()));
            }
        }
        done?;
        let socket = match &opts.nbd_socket {
            Some(s) => s.clone(),
            None => {
                let s = opts.work_dir.join(format!("xfull-{}.nbd", self.tag));
                let addr = json!({"type": "unix", "data": {"path": s.display().to_string()}});
                match qmp
                    .execute("nbd-server-start", json!({ "addr": addr }))
                    .await
                {
                    Ok(_) => self.created.nbd_server = true,
                    Err(QmpError::Command { desc, .. }) if desc.contains("already running") => {
                        return Err(QmpError::Unusable(format!(
                            "QEMU already runs an NBD server ({desc}); give its unix socket \
                             with --qmp-nbd-socket so that xfull adds its exports there"
                        )));
                    }
                    Err(e) => return Err(e),
                }
                s
            }
        };
        for (i, d) in self.disks.iter_mut().enumerate() {
            let export = format!("xfull-{}-{}", self.tag, d.name);
            let mut args = json!({"type": "nbd", "id": export, "node-name":
                format!("xfull-{}-{i}", self.tag), "name": export, "writable": false});
            if let Some(b) = &d.since {
                args["bitmaps"] = json!([{"node": d.node, "name": b}]);
            }
            qmp.execute("block-export-add", args).await?;
            self.created.exports.push(export.clone());
            // Through `NbdUri`, which percent-encodes: the socket's path
            // (under the work directory) may hold '#', '&' or '%'.
            d.uri = NbdUri::unix(socket.clone(), export).to_string();
        }
        Ok(())
    }

    /// Removes exports, jobs, images and the NBD server, in that order,
    /// going on past failures; returns what failed.
    async fn tear_down(&mut self, qmp: &mut Qmp) -> Vec<String> {
        let c = std::mem::take(&mut self.created);
        let mut notes = Vec::new();
        for id in &c.exports {
            if let Err(e) = remove_export(qmp, id).await {
                notes.push(format!("could not remove NBD export {id}: {e}"));
            }
        }
        for job in &c.jobs {
            if let Err(e) = cancel_job(qmp, job).await {
                notes.push(format!("could not end job {job}: {e}"));
            }
        }
        for (fmt, file, path) in c.images.iter().rev() {
            for node in [fmt, file].into_iter().flatten() {
                if let Err(e) = qmp
                    .execute("blockdev-del", json!({"node-name": node}))
                    .await
                {
                    notes.push(format!("could not remove block node {node}: {e}"));
                }
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    notes.push(format!("could not remove {}: {e}", path.display()))
                }
                _ => {}
            }
        }
        if c.nbd_server
            && let Err(e) = qmp.execute("nbd-server-stop", Value::Null).await
        {
            notes.push(format!("could not stop the NBD server: {e}"));
        }
        self.created.checkpoints = c.checkpoints;
        notes
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// The parent's checkpoint, if QEMU still has it and it can be trusted;
/// otherwise why the disk is read in full.
fn usable_since(d: &DiskRequest, node: &NodeInfo) -> (Option<String>, Option<String>) {
    let Some(name) = &d.since else {
        return (
            None,
            Some("no checkpoint yet: the first backup through QMP reads the disk in full".into()),
        );
    };
    let why = match node.bitmap(name) {
        // Named `PREFIX.TAG.DISK` since per-disk names; a name without
        // this disk's (an earlier build's, shared by every disk of its
        // point) may be found on another disk's node, whose bits say
        // nothing of this disk's writes.
        _ if !name.ends_with(&format!(".{}", d.name)) => format!(
            "the parent's checkpoint bitmap {name} is not named for disk {} (an earlier \
             xfull named one checkpoint for all disks of a point, so it may be another \
             disk's)",
            d.name
        ),
        None => format!(
            "the parent's checkpoint bitmap {name} is gone from node {} (removed, or QEMU \
             restarted and the bitmap was not persistent)",
            node.node_name
        ),
        Some(b) if b.inconsistent => format!(
            "the parent's checkpoint bitmap {name} is marked inconsistent (QEMU stopped \
             uncleanly)"
        ),
        Some(b) if !b.recording => {
            format!("the parent's checkpoint bitmap {name} is disabled (not recording writes)")
        }
        // QEMU refuses to export a bitmap a job or another export holds:
        // asked for anyway, it failed every backup until someone removed
        // the holder (review 105.2). Its bits are still good; read in
        // full, the point is right, and the commit's removal of the stale
        // checkpoint, refused while it is busy, succeeds at a later one.
        Some(b) if b.busy => format!(
            "the parent's checkpoint bitmap {name} is in use by another operation (an export \
             or job left behind?)"
        ),
        Some(_) => return (Some(name.clone()), None),
    };
    (None, Some(format!("{why}; reading the disk in full")))
}

/// This repository's checkpoints (`PREFIX.*`) on `d`'s node other than
/// the ones this session made (`own`).
async fn stale_checkpoints(
    qmp: &mut Qmp,
    d: &PullDisk,
    bitmap_prefix: &str,
    own: &[String],
) -> Vec<String> {
    let prefix = format!("{bitmap_prefix}.");
    match qmp.resolve_node(&d.node).await {
        Ok(n) => n
            .bitmaps
            .into_iter()
            .map(|b| b.name)
            .filter(|b| b.starts_with(&prefix) && !own.contains(b))
            .collect(),
        Err(_) => d.since.iter().cloned().collect(),
    }
}

/// A qcow2 image at `path` backed by `disk`, as node `name` over file
/// node `name-f`; recorded in `created` as each part comes to exist.
async fn create_fleece(
    qmp: &mut Qmp,
    name: &str,
    path: &Path,
    disk: &NodeInfo,
    created: &mut Created,
) -> Result<(), QmpError> {
    let file_node = format!("{name}-f");
    let filename = path.display().to_string();
    qmp.run_job(
        &format!("{name}-c1"),
        "blockdev-create",
        json!({"job-id": format!("{name}-c1"),
               "options": {"driver": "file", "filename": filename, "size": 0}}),
    )
    .await?;
    qmp.execute(
        "blockdev-add",
        json!({"driver": "file", "filename": filename, "node-name": file_node}),
    )
    .await?;
    let entry = created.images.last_mut().expect("the image was recorded");
    entry.1 = Some(file_node.clone());
    qmp.run_job(
        &format!("{name}-c2"),
        "blockdev-create",
        json!({"job-id": format!("{name}-c2"),
               "options": {"driver": "qcow2", "file": file_node, "size": disk.size}}),
    )
    .await?;
    qmp.execute(
        "blockdev-add",
        json!({"driver": "qcow2", "node-name": name, "file": file_node,
               "backing": disk.node_name}),
    )
    .await?;
    entry.0 = Some(name.to_string());
    Ok(())
}

async fn remove_export(qmp: &mut Qmp, id: &str) -> Result<(), QmpError> {
    qmp.execute("block-export-del", json!({"id": id, "mode": "hard"}))
        .await?;
    qmp.wait_event(&format!("removing export {id}"), TEARDOWN_LIMIT, |n, d| {
        n == "BLOCK_EXPORT_DELETED" && d["id"] == id
    })
    .await
    .map(drop)
}

async fn cancel_job(qmp: &mut Qmp, job: &str) -> Result<(), QmpError> {
    match qmp
        .execute("block-job-cancel", json!({"device": job, "force": true}))
        .await
    {
        Ok(_) => qmp.wait_job(job, "null").await,
        // Gone already (it failed on its own, say).
        Err(QmpError::Command { class, .. }) if class == "DeviceNotActive" => Ok(()),
        Err(e) => Err(e),
    }
}
