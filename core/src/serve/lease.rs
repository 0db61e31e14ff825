//! The lease a server or mount holds on the points it serves, so that gc
//! does not delete their data underneath it: a backup session's lease
//! (`crate::session`) that pins the points and never commits. A point
//! pruned while served goes to `trash/`, as a running backup's parent
//! does, and its data stays until the lease ends.
//!
//! Its heartbeat watches whether refreshes reach the store: half a TTL
//! without one is a warning, and once the lease may have lapsed it is no
//! longer written and [`ServeLease::lapsed`] resolves, so the server or
//! mount stops (docs/design.md, "Serving points", "Lease").

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::id::PointId;
use crate::keys;
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::progress::{Notice, Progress, Warning};
use crate::repo::Repository;
use crate::session::{Began, Heartbeat, LeaseLife, Life, Session};

/// Pins points while they are served; refreshed in the background.
#[derive(Debug)]
pub struct ServeLease {
    session: Session,
    heartbeat: Heartbeat,
    /// Becomes `Some` (seconds without a refresh) once the lease lapsed.
    lapsed: watch::Receiver<Option<u64>>,
    ttl_secs: u64,
}

impl ServeLease {
    /// Writes the lease pinning `points` (the first one's VM names it).
    /// Read the manifests after this ([`ServeLease::load`]): a sweep then
    /// either sees the pins or had listed the points.
    pub async fn begin(
        repo: &Repository,
        points: &[(VmName, PointId)],
        progress: Arc<Progress>,
    ) -> Result<ServeLease> {
        let Some((vm, _)) = points.first() else {
            return Err(Error::InvalidArgument("no point to serve".into()));
        };
        let began = Began::now();
        let session = Session::begin(repo, vm, &crate::host::name()).await?;
        let protocol = &repo.config().protocol;
        let ttl = protocol.ttl().to_std().unwrap_or_default();
        let margin = protocol.margin().to_std().unwrap_or_default();
        let life = Arc::new(LeaseLife::new(ttl, margin, began));
        let (tell, lapsed) = watch::channel(None);
        let (lease, lapse_after) = (session.id(), life.lapse_after());
        // One warning per spell without a refresh, not one per beat.
        let warned = std::sync::atomic::AtomicBool::new(false);
        let heartbeat = session.heartbeat_watched(life, move |l| match l {
            Life::Alive => warned.store(false, std::sync::atomic::Ordering::Relaxed),
            Life::AtRisk { since } => {
                if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    progress.notice(Notice::Warning(Warning::ServeLeaseAtRisk {
                        lease: lease.clone(),
                        since_secs: since.as_secs(),
                        stops_in_secs: lapse_after.saturating_sub(since).as_secs(),
                    }));
                }
            }
            Life::Lapsed { since } => {
                tell.send_if_modified(|e| {
                    let first = e.is_none();
                    e.get_or_insert(since.as_secs());
                    first
                });
            }
        });
        let lease = ServeLease {
            session,
            heartbeat,
            lapsed,
            ttl_secs: ttl.as_secs(),
        };
        if let Err(e) = lease.session.pin(points.iter().cloned()).await {
            let _ = lease.end().await;
            return Err(e);
        }
        Ok(lease)
    }

    /// Resolves once the lease lapsed, with the error to stop with
    /// (never, if it stays alive).
    pub async fn lapsed(&self) -> Error {
        let mut rx = self.lapsed.clone();
        let since = match rx.wait_for(Option::is_some).await {
            Ok(since) => since.unwrap_or_default(),
            // The heartbeat is gone only when the lease ends.
            Err(_) => return std::future::pending().await,
        };
        self.error(since)
    }

    /// The error to stop with, if the lease lapsed.
    pub fn lapse(&self) -> Option<Error> {
        let since = *self.lapsed.borrow();
        since.map(|s| self.error(s))
    }

    fn error(&self, since_secs: u64) -> Error {
        Error::LeaseLapsed {
            lease: self.session.id(),
            since_secs,
            ttl_secs: self.ttl_secs,
        }
    }

    /// The manifest of a pinned point: from `points/`, or from `trash/`
    /// if it was pruned since it was named.
    pub async fn load(&self, repo: &Repository, vm: &VmName, id: &PointId) -> Result<Manifest> {
        match repo.load_manifest(vm, id).await {
            Err(Error::PointNotFound { .. }) => {
                let trashed = keys::trashed_point(vm, id);
                match repo.load_manifest_at(&trashed, vm, id).await {
                    Ok(m) => Ok(m),
                    Err(_) => Err(Error::PointNotFound {
                        point: format!("{vm}@{id}"),
                    }),
                }
            }
            r => r,
        }
    }

    /// Removes the lease: the points' data is gc's again.
    pub async fn end(self) -> Result<()> {
        drop(self.heartbeat);
        self.session.end(None).await
    }

    /// The lease's name (`leases/<id>`), for reports.
    pub fn id(&self) -> String {
        self.session.id()
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
