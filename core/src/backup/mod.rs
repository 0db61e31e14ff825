//! Backup: one express-full point of a VM's disks.
//!
//! Every disk is read (holes skipped), cut into fixed segments, each
//! segment chunked with FastCDC; a segment whose node equals the parent's
//! at the same place reuses it, new chunks are stored create-only, then
//! the nodes, then the manifest. The point exists exactly when its
//! manifest does, so a failed or killed backup leaves no point.

pub mod incremental;
mod pipeline;
pub mod segment;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};

use crate::error::{Error, Result};
use crate::id::PointId;
use crate::manifest::{BackupStats, DiskManifest, Manifest};
use crate::names::{DiskName, VmName};
use crate::progress::Progress;
use crate::repo::{Repository, Stored};
use crate::source::DiskSource;

/// What to back up, and how to label it.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub vm: VmName,
    pub disks: Vec<(DiskName, PathBuf)>,
    /// Dedup against this point instead of the VM's latest.
    pub parent: Option<PointId>,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    /// Record the point under this time instead of now.
    pub time: Option<DateTime<Utc>>,
}

/// Runs a backup and returns the committed point's manifest.
pub async fn backup(
    repo: &Repository,
    req: BackupRequest,
    progress: Arc<Progress>,
) -> Result<Manifest> {
    let started = Instant::now();
    // Check everything the user gave before storing a single byte.
    if req.disks.is_empty() {
        return Err(Error::InvalidArgument(
            "no disk given: use --disk NAME=PATH".into(),
        ));
    }
    let mut names = HashSet::new();
    for (name, _) in &req.disks {
        if !names.insert(name) {
            return Err(Error::InvalidArgument(format!(
                "disk {name} is given twice"
            )));
        }
    }
    let sources = req
        .disks
        .iter()
        .map(|(name, path)| Ok((name.clone(), Arc::new(DiskSource::open(path)?))))
        .collect::<Result<Vec<_>>>()?;
    let parent = match &req.parent {
        Some(id) => Some(repo.load_manifest(&req.vm, id).await?),
        None => match repo.latest(&req.vm).await? {
            Some(id) => Some(repo.load_manifest(&req.vm, &id).await?),
            None => None,
        },
    };

    let seg_size = repo.config().segment_size;
    progress.add_total(sources.iter().map(|(_, s)| s.size()).sum());
    let mut disks = Vec::new();
    let mut stats = BackupStats::default();
    for (name, source) in sources {
        let disk_started = Instant::now();
        let parent_segments = parent
            .as_ref()
            .and_then(|p| p.disk(name.as_str()).ok())
            .filter(|d| d.segment_size == seg_size)
            .map(|d| d.segments.clone())
            .unwrap_or_default();
        let size = source.size();
        let result = pipeline::run(repo, source, parent_segments, progress.clone()).await?;
        let mut disk_stats = result.stats;
        disk_stats.seconds = disk_started.elapsed().as_secs_f64();
        stats.add(&disk_stats);
        disks.push(DiskManifest {
            name,
            size,
            segment_size: seg_size,
            segments: result.segments,
            source: "full-scan".into(),
            stats: disk_stats,
        });
    }

    let time = req.time.unwrap_or_else(Utc::now).trunc_subsecs(0);
    let mut manifest = Manifest {
        vm: req.vm,
        id: PointId::new(time),
        time,
        parent: parent.map(|p| p.id),
        host: req.host,
        labels: req.labels,
        disks,
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
