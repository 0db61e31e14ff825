//! What a server or mount serves: the points named, pinned by one lease,
//! each disk an export sharing one cache.

use std::path::PathBuf;
use std::sync::Arc;

use super::overlay::Overlay;
use super::overlay_disk::OverlayDisk;
use super::{PartCache, PointDisk, ServeLease};
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::nbd::Export;
use crate::progress::Progress;
use crate::repo::Repository;

/// The least `--cache`: one part. A smaller cache holds no part, so every
/// read, 4 KiB or not, fetched and verified a whole part again.
pub const MIN_CACHE_BYTES: u64 = crate::restore::PART;

/// How points are served.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Bytes of parts kept in memory, for all served disks together.
    pub cache_bytes: u64,
    /// Parts (at most 16 MiB of a segment) fetched ahead of a sequential
    /// reader.
    pub read_ahead: usize,
    /// Writes go to this overlay (one disk only); `None`: read-only.
    pub overlay: Option<PathBuf>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            cache_bytes: 256 << 20,
            read_ahead: 2,
            overlay: None,
        }
    }
}

/// A point to serve and which of its disks (empty: all).
#[derive(Clone, Debug)]
pub struct ServeSpec {
    pub vm: VmName,
    pub id: PointId,
    pub disks: Vec<String>,
}

/// Served points: the lease pinning them, their manifests, one export per
/// disk (in the order asked).
#[derive(Debug)]
pub struct Served {
    lease: Option<ServeLease>,
    pub manifests: Vec<Manifest>,
    /// (point index, export)
    pub exports: Vec<(usize, Arc<dyn Export>)>,
    pub cache: Arc<PartCache>,
}

impl Served {
    /// Pins the points (the lease comes first, then the manifests are
    /// read: see [`ServeLease::begin`]) and opens their disks.
    pub async fn open(
        repo: &Repository,
        specs: &[ServeSpec],
        opts: &ServeOptions,
        progress: Arc<Progress>,
    ) -> Result<Served> {
        // Serving reads chunk data: a backup-only key is refused before
        // anything is written (as restore is).
        repo.codec().require_data("serve or mount")?;
        let pins: Vec<_> = specs.iter().map(|s| (s.vm.clone(), s.id.clone())).collect();
        let lease = ServeLease::begin(repo, &pins, progress.clone()).await?;
        let cache = PartCache::new(opts.cache_bytes);
        let opened = async {
            // Opened after the lease: the served points' chunks are in it
            // (and looked for again if a sweep moves them).
            let index = repo.chunks().open_index().await?;
            let mut manifests = Vec::new();
            let mut named = Vec::new();
            for s in specs {
                let m = lease.load(repo, &s.vm, &s.id).await?;
                let disks: Vec<String> = if s.disks.is_empty() {
                    m.disks.iter().map(|d| d.name.to_string()).collect()
                } else {
                    s.disks.clone()
                };
                named.push(disks);
                manifests.push(m);
            }
            // Counted before any overlay is opened: opening creates the
            // file with the first disk's header and locks it, so the
            // second disk's open said "in use by another process" and a
            // retry with --disk for another disk was refused (review
            // 104.4).
            let count: usize = named.iter().map(Vec::len).sum();
            if opts.overlay.is_some() && count != 1 {
                return Err(Error::InvalidArgument(format!(
                    "--overlay serves one disk writable; {count} disks were named (use --disk)"
                )));
            }
            let mut exports: Vec<(usize, Arc<dyn Export>)> = Vec::new();
            for (n, (m, disks)) in manifests.iter().zip(named).enumerate() {
                for disk in disks {
                    let base = PointDisk::new(
                        repo,
                        index.clone(),
                        m,
                        &disk,
                        cache.clone(),
                        opts.read_ahead,
                        progress.clone(),
                    )?;
                    let export: Arc<dyn Export> = match &opts.overlay {
                        None => Arc::new(base),
                        Some(path) => {
                            let overlay = Overlay::open(path, &m.point_name(), &disk, base.size())?;
                            Arc::new(OverlayDisk::new(base, overlay))
                        }
                    };
                    exports.push((n, export));
                }
            }
            Ok((manifests, exports))
        };
        match opened.await {
            Ok((manifests, exports)) => Ok(Served {
                lease: Some(lease),
                manifests,
                exports,
                cache,
            }),
            Err(e) => {
                let _ = lease.end().await;
                Err(e)
            }
        }
    }

    /// Ends serving: removes the lease (the points' data is gc's again)
    /// and flushes writable overlays.
    pub async fn close(mut self) -> Result<()> {
        let mut first = None;
        for (_, e) in &self.exports {
            if e.writable()
                && let Err(err) = e.flush().await
            {
                first.get_or_insert(Error::Internal(format!("overlay: {err}")));
            }
        }
        if let Some(lease) = self.lease.take() {
            lease.end().await?;
        }
        first.map_or(Ok(()), Err)
    }

    /// Resolves once the lease lapsed (see [`ServeLease::lapsed`]): stop
    /// serving, then [`Served::close`].
    pub async fn lapsed(&self) -> Error {
        match &self.lease {
            Some(l) => l.lapsed().await,
            None => std::future::pending().await,
        }
    }

    /// The error to stop with, if the lease lapsed.
    pub fn lapse(&self) -> Option<Error> {
        self.lease.as_ref().and_then(ServeLease::lapse)
    }

    /// The lease pinning the points (`leases/<id>`).
    pub fn lease_id(&self) -> Option<String> {
        self.lease.as_ref().map(ServeLease::id)
    }
}
