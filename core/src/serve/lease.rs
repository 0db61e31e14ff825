//! The lease a server or mount holds on the points it serves, so that gc
//! does not delete their data underneath it: a backup session's lease
//! (`crate::session`) that pins the points and never commits. A point
//! pruned while served goes to `trash/`, as a running backup's parent
//! does, and its data stays until the lease ends.

use crate::error::{Error, Result};
use crate::id::PointId;
use crate::keys;
use crate::manifest::Manifest;
use crate::names::VmName;
use crate::repo::Repository;
use crate::session::{Heartbeat, Session};

/// Pins points while they are served; refreshed in the background.
#[derive(Debug)]
pub struct ServeLease {
    session: Session,
    heartbeat: Heartbeat,
}

impl ServeLease {
    /// Writes the lease pinning `points` (the first one's VM names it).
    /// Read the manifests after this ([`ServeLease::load`]): a sweep then
    /// either sees the pins or had listed the points.
    pub async fn begin(repo: &Repository, points: &[(VmName, PointId)]) -> Result<ServeLease> {
        let Some((vm, _)) = points.first() else {
            return Err(Error::InvalidArgument("no point to serve".into()));
        };
        let session = Session::begin(repo, vm, &crate::host::name()).await?;
        let heartbeat = session.heartbeat();
        let lease = ServeLease { session, heartbeat };
        if let Err(e) = lease.session.pin(points.iter().cloned()).await {
            let _ = lease.end().await;
            return Err(e);
        }
        Ok(lease)
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
