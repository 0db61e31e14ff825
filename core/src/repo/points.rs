//! Points: reading, listing, ordering and writing manifests. Every
//! manifest is opened under its point's key and must hold that point.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{Repository, Stored};
use crate::crypto::SealKind;
use crate::error::{Error, Result};
use crate::id::PointId;
use crate::keys;
use crate::manifest::{Manifest, ManifestSummary};
use crate::names::VmName;
use crate::point_spec::PointSpec;

impl Repository {
    pub async fn load_manifest(&self, vm: &VmName, id: &PointId) -> Result<Manifest> {
        self.load_manifest_at(&keys::point(vm, id), vm, id).await
    }

    /// Loads a manifest from `key` (its place in `points/` or `trash/`),
    /// checking it is the point it should be.
    pub async fn load_manifest_at(&self, key: &str, vm: &VmName, id: &PointId) -> Result<Manifest> {
        let bytes = self.get_manifest(key, vm, id).await?;
        let framed = self.open_manifest(key, vm, id, &bytes)?;
        let m = Manifest::decode(key, &framed, &self.config)?;
        is_the_point(key, (&m.vm, &m.id), vm, id)?;
        Ok(m)
    }

    /// Loads what listings show of a point: its manifest without the
    /// segment lists (a few KB, whatever the manifest declares).
    pub async fn load_summary(&self, vm: &VmName, id: &PointId) -> Result<ManifestSummary> {
        let key = keys::point(vm, id);
        let bytes = self.get_manifest(&key, vm, id).await?;
        let framed = self.open_manifest(&key, vm, id, &bytes)?;
        let s = ManifestSummary::decode(&key, &framed, &self.config)?;
        is_the_point(&key, (&s.vm, &s.id), vm, id)?;
        Ok(s)
    }

    /// A manifest is sealed under its point's key in `points/` wherever
    /// it lies (prune moves pinned ones to `trash/` as they are), so one
    /// copied under another point's name does not open.
    fn open_manifest<'a>(
        &self,
        key: &str,
        vm: &VmName,
        id: &PointId,
        stored: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>> {
        self.codec
            .open_meta(SealKind::Manifest, &keys::point(vm, id), stored)
            .map_err(|e| match e {
                // Name where it was read, not the name it is sealed under.
                Error::Corrupt { reason, .. } => Error::corrupt(key, reason),
                e => e,
            })
    }

    async fn get_manifest(&self, key: &str, vm: &VmName, id: &PointId) -> Result<Bytes> {
        match self.backend.get_at_most(key, self.max_manifest()).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(Error::PointNotFound {
                point: format!("{vm}@{id}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The summaries of the listed points (every point, or one VM's),
    /// sorted by VM then time. A point whose manifest is damaged is left
    /// out and returned with the reason; one pruned since the listing is
    /// left out.
    pub async fn summaries(&self, vm: Option<&VmName>) -> Result<Summaries> {
        let ids = self.list_points(vm).await?;
        // A few at a time; decoding runs in this task, so one at a time.
        let loaded: Vec<_> = futures::stream::iter(ids)
            .map(|(vm, id)| async move {
                let s = self.load_summary(&vm, &id).await;
                (vm, id, s)
            })
            .buffered(16)
            .collect()
            .await;
        let mut out = Summaries::default();
        for (vm, id, s) in loaded {
            match s {
                Ok(s) => out.points.push(s),
                Err(Error::PointNotFound { .. }) => {}
                Err(e) if e.is_damage() => out.damaged.push(Unreadable {
                    point: format!("{vm}@{id}"),
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        out.points
            .sort_by(|a, b| (&a.vm, a.time, a.created).cmp(&(&b.vm, b.time, b.created)));
        Ok(out)
    }

    /// Writes a point's manifest, create-only: an existing point is never
    /// replaced. One that readers would refuse is not written.
    pub async fn write_manifest(&self, m: &Manifest) -> Result<(Stored, u64)> {
        m.check_limits(&self.config)?;
        let key = keys::point(&m.vm, &m.id);
        let bytes = self.codec.seal_meta(SealKind::Manifest, &key, m.encode()?);
        let len = bytes.len() as u64;
        let stored = self.put_once(&key, Bytes::from(bytes)).await?;
        Ok((stored, len))
    }

    /// Whether the point is gone from the store: its manifest neither in
    /// `points/` nor in `trash/` (where prune moves a point a backup pins:
    /// gc keeps what it references, so damage met there is damage). Two
    /// HEADs at most; `Ok(true)` only when the store says both are absent.
    pub async fn point_gone(&self, vm: &VmName, id: &PointId) -> Result<bool> {
        for key in [keys::point(vm, id), keys::trashed_point(vm, id)] {
            match self.backend.head(&key).await {
                Ok(_) => return Ok(false),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// The manifest of a point in `points/`, or else in `trash/`.
    pub async fn load_kept_manifest(&self, vm: &VmName, id: &PointId) -> Result<Manifest> {
        match self.load_manifest(vm, id).await {
            Err(Error::PointNotFound { .. }) => {
                self.load_manifest_at(&keys::trashed_point(vm, id), vm, id)
                    .await
            }
            r => r,
        }
    }

    /// The points prune moved to `trash/` (pinned by backups), unsorted.
    pub async fn list_trashed_points(&self) -> Result<Vec<(VmName, PointId)>> {
        self.backend
            .list(&format!("{}{}", keys::TRASH, keys::POINTS))
            .try_filter_map(|m| async move {
                Ok(m.key.strip_prefix(keys::TRASH).and_then(keys::parse_point))
            })
            .try_collect()
            .await
            .map_err(Into::into)
    }

    /// Every point, or one VM's, sorted by VM then time.
    pub async fn list_points(&self, vm: Option<&VmName>) -> Result<Vec<(VmName, PointId)>> {
        let prefix = match vm {
            Some(vm) => keys::points_of(vm),
            None => keys::POINTS.to_string(),
        };
        let mut out: Vec<_> = self
            .backend
            .list(&prefix)
            .try_filter_map(|m| async move { Ok(keys::parse_point(&m.key)) })
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    /// The ids of a VM's points, as listed (sorted by id).
    pub async fn point_ids(&self, vm: &VmName) -> Result<Vec<PointId>> {
        let listed = self.list_points(Some(vm)).await?;
        Ok(listed.into_iter().map(|(_, id)| id).collect())
    }

    /// A VM's points, oldest first. Ids sort by time to the second; points
    /// within the same second are ordered by their manifests' times. Of
    /// those, a point whose manifest is damaged is left out: it cannot be
    /// placed, and the caller meets the damage if it loads the point.
    pub async fn points_in_order(&self, vm: &VmName) -> Result<Vec<PointId>> {
        let ids = self.point_ids(vm).await?;
        self.order_points(vm, ids).await
    }

    /// [`Repository::points_in_order`] of points already listed (`ids`, of
    /// `vm`), for a caller that listed several VMs at once.
    pub async fn order_points(&self, vm: &VmName, mut ids: Vec<PointId>) -> Result<Vec<PointId>> {
        ids.sort();
        let second = |id: &PointId| id.as_str().split('-').next().unwrap_or("").to_string();
        let mut out = Vec::with_capacity(ids.len());
        let mut i = 0;
        while i < ids.len() {
            let j = i + ids[i..]
                .iter()
                .take_while(|x| second(x) == second(&ids[i]))
                .count();
            if j - i == 1 {
                out.push(ids[i].clone());
            } else {
                let mut group = Vec::new();
                for id in &ids[i..j] {
                    match self.load_summary(vm, id).await {
                        Ok(m) => group.push(((m.time, m.created), id.clone())),
                        // Pruned since the listing: no longer a point.
                        Err(Error::PointNotFound { .. }) => {}
                        Err(e) if e.is_damage() => {}
                        Err(e) => return Err(e),
                    }
                }
                group.sort();
                out.extend(group.into_iter().map(|(_, id)| id));
            }
            i = j;
        }
        Ok(out)
    }

    /// The newest point of a VM, if any.
    pub async fn latest(&self, vm: &VmName) -> Result<Option<PointId>> {
        Ok(self.points_in_order(vm).await?.pop())
    }

    /// Loads the point a `VM@ID` / `VM@latest` spec names.
    pub async fn resolve(&self, spec: &PointSpec) -> Result<Manifest> {
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => self
                .latest(&spec.vm)
                .await?
                .ok_or_else(|| Error::PointNotFound {
                    point: format!("{}@latest (the VM has no points)", spec.vm),
                })?,
        };
        self.load_manifest(&spec.vm, &id).await
    }
}

/// Listed points: the readable ones and the damaged ones.
#[derive(Debug, Default)]
pub struct Summaries {
    pub points: Vec<ManifestSummary>,
    pub damaged: Vec<Unreadable>,
}

/// A listed point whose manifest cannot be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    pub point: String,
    pub reason: String,
}

/// A manifest must hold the point its key names.
fn is_the_point(key: &str, found: (&VmName, &PointId), vm: &VmName, id: &PointId) -> Result<()> {
    if found != (vm, id) {
        return Err(Error::corrupt(
            key,
            format!("holds point {}@{} instead", found.0, found.1),
        ));
    }
    Ok(())
}
