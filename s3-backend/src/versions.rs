//! Object versions on a versioned bucket (which object lock requires):
//! listing them with their delete markers, the retention of one version,
//! and deleting versions for good. `xfull undelete` uses them to take away
//! what hides locked versions (`xfull_core::lock::undelete`).

use std::sync::atomic::Ordering;

use futures::stream::BoxStream;
use xfull_core::backend::{Backend, BackendError, Operation, Version};
use xfull_core::lock::Retention;

use crate::S3Backend;
use crate::attempts::Attempts;

/// Where the next page of a version listing starts.
type Marker = (Option<String>, Option<String>);

impl S3Backend {
    pub(crate) fn versions(&self, prefix: &str) -> BoxStream<'_, Result<Version, BackendError>> {
        let full = self.key(prefix);
        let prefix = prefix.to_string();
        crate::paged((None, None), move |marker: Marker| {
            let (full, prefix) = (full.clone(), prefix.clone());
            async move { self.versions_page(&full, &prefix, marker).await }
        })
    }

    /// One page; the next page's marker, `None` at the end.
    async fn versions_page(
        &self,
        full: &str,
        prefix: &str,
        (key_marker, version_marker): Marker,
    ) -> Result<(Vec<Version>, Option<Marker>), BackendError> {
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let out = send!(
            self,
            self.client
                .list_object_versions()
                .bucket(&self.opts.bucket)
                .prefix(full)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone()),
            prefix
        )?;
        let mut items: Vec<Version> = out
            .versions()
            .iter()
            .filter_map(|v| {
                let key = self.unkey(v.key()?).to_string();
                let version_id = v.version_id()?.to_string();
                Some(self.modified(&key, v.last_modified()).map(|t| Version {
                    key,
                    version_id,
                    delete_marker: false,
                    latest: v.is_latest() == Some(true),
                    last_modified: t,
                    size: v.size().unwrap_or(0).max(0) as u64,
                }))
            })
            .chain(out.delete_markers().iter().filter_map(|m| {
                let key = self.unkey(m.key()?).to_string();
                let version_id = m.version_id()?.to_string();
                Some(self.modified(&key, m.last_modified()).map(|t| Version {
                    key,
                    version_id,
                    delete_marker: true,
                    latest: m.is_latest() == Some(true),
                    last_modified: t,
                    size: 0,
                }))
            }))
            .collect::<Result<_, _>>()?;
        // S3 gives versions and delete markers in two lists: put each
        // key's together again, the current one first, then newest first
        // (the order the listing has within each list).
        items.sort_by(|a, b| {
            (
                a.key.as_str(),
                !a.latest,
                std::cmp::Reverse(a.last_modified),
            )
                .cmp(&(
                    b.key.as_str(),
                    !b.latest,
                    std::cmp::Reverse(b.last_modified),
                ))
        });
        if out.is_truncated() != Some(true) {
            return Ok((items, None));
        }
        let next = (
            out.next_key_marker().map(str::to_string),
            out.next_version_id_marker().map(str::to_string),
        );
        if next.0.is_none() || next == (key_marker, version_marker) {
            return Err(BackendError::Other {
                location: self.location(),
                message: format!(
                    "listing the versions of {prefix}: the server says the listing goes on but \
                     gives no new marker"
                ),
            });
        }
        Ok((items, Some(next)))
    }

    pub(crate) async fn retention_of_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, BackendError> {
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        let out = send!(
            self,
            self.client
                .head_object()
                .bucket(&self.opts.bucket)
                .key(self.key(key))
                .version_id(version_id),
            key
        )
        .map_err(|e| as_version(e, Operation::ReadVersion))?;
        Ok(crate::lock::retention_of(&out))
    }

    pub(crate) async fn remove_versions(
        &self,
        versions: &[(String, String)],
    ) -> Result<(), BackendError> {
        for batch in versions.chunks(1000) {
            let objects: Vec<_> = batch
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect();
            self.delete_objects(&objects)
                .await
                .map_err(|e| as_version(e, Operation::DeleteVersion))?;
        }
        Ok(())
    }
}

/// A refusal of a request on a version: S3 grants it by its own action
/// (`s3:GetObjectVersion`, `s3:DeleteObjectVersion`), not the plain one
/// the request type would name.
fn as_version(e: BackendError, version_op: Operation) -> BackendError {
    match e {
        BackendError::PermissionDenied {
            location,
            key,
            message,
            ..
        } => BackendError::PermissionDenied {
            location,
            key,
            operation: version_op,
            message,
        },
        e => e,
    }
}
