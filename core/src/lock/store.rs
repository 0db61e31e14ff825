//! The backend of a locked repository: every object a point depends on is
//! put with the retention of the writer's current generation.
//!
//! Locked: chunk data (packs, [`ObjectClass::Data`]), nodes, manifests in
//! `points/`, the config and the key slots (without which an encrypted
//! repository opens no more). Not locked: index objects (derived from the
//! packs' trailers, `xfull index rebuild` makes them again, and gc must
//! be free to merge and shard them), leases, gc markers, damage records
//! and `trash/`, which are rewritten or deleted in normal operation.
//!
//! One decorator, installed by [`crate::repo::Repository`] when the
//! config asks for object lock, so that every writer (backup, repair,
//! gc's repack, copy) locks the same objects without knowing it.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::stream::BoxStream;

use super::{ObjectLock, Retention};
use crate::archive::{ArchiveState, ThawAnswer, ThawTier};
use crate::backend::{
    Backend, BackendError, ObjectClass, ObjectMeta, PutOptions, Retained, Version,
};
use crate::keys;

#[derive(Debug)]
pub struct Locking {
    inner: Arc<dyn Backend>,
    lock: ObjectLock,
    margin: Duration,
}

impl Locking {
    pub fn new(inner: Arc<dyn Backend>, lock: ObjectLock, margin: Duration) -> Self {
        Locking {
            inner,
            lock,
            margin,
        }
    }
}

/// Whether an object of this key and class is one points depend on.
pub fn is_locked(key: &str, class: ObjectClass) -> bool {
    class == ObjectClass::Data
        || key == keys::CONFIG
        || key.starts_with(keys::NODES)
        || key.starts_with(keys::POINTS)
        || key.starts_with(crate::crypto::slot::SLOTS)
}

#[async_trait]
impl Backend for Locking {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(
        &self,
        key: &str,
        data: Bytes,
        mut opts: PutOptions,
    ) -> Result<(), BackendError> {
        if is_locked(key, opts.class) {
            // The generation of the moment of writing: never earlier than
            // the one the backup started in, which its point records.
            opts.retention = Some(self.lock.retention_of(self.lock.current(self.margin)));
        }
        self.inner.put_opts(key, data, opts).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
    }

    async fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        self.inner.get_at_most(key, max).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        self.inner.list(prefix)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }

    async fn remove_incomplete(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        self.inner.remove_incomplete(before).await
    }

    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        self.inner.free_for_data().await
    }

    fn request_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.inner.request_counts()
    }

    async fn archive_state(&self, key: &str) -> Result<(ObjectMeta, ArchiveState), BackendError> {
        self.inner.archive_state(key).await
    }

    async fn thaw(
        &self,
        key: &str,
        days: Option<u32>,
        tier: ThawTier,
    ) -> Result<ThawAnswer, BackendError> {
        self.inner.thaw(key, days, tier).await
    }

    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        self.inner.lock_enabled().await
    }

    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        self.inner.retention(key).await
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: Retention,
    ) -> Result<(), BackendError> {
        self.inner.extend_retention(key, version, retention).await
    }

    fn list_versions(&self, prefix: &str) -> BoxStream<'_, Result<Version, BackendError>> {
        self.inner.list_versions(prefix)
    }

    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, BackendError> {
        self.inner.version_retention(key, version_id).await
    }

    async fn delete_versions(&self, versions: &[(String, String)]) -> Result<(), BackendError> {
        self.inner.delete_versions(versions).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_points_depend_on_are_locked_and_the_rest_not() {
        let data = ObjectClass::Data;
        let meta = ObjectClass::Metadata;
        assert!(is_locked("packs/ab/abcd", data));
        assert!(is_locked("nodes/ab/abcd", meta));
        assert!(is_locked("points/vm1/20260101T000000Z-abcd", meta));
        assert!(is_locked("config", meta));
        assert!(is_locked("keys/0123456789abcdef", meta));
        for key in [
            "index/abcd",
            "leases/s1",
            "gc/sweeps/0001",
            "damage/nodes/ab/abcd",
            "trash/points/vm1/x",
            "configx",
        ] {
            assert!(!is_locked(key, meta), "{key}");
        }
    }

    /// gc plans its rewrites by the room the store it writes to has left;
    /// a wrapper that answered the default ("no limit") would let it plan
    /// rewrites that cannot fit.
    #[tokio::test]
    async fn the_room_for_data_is_the_wrapped_store_s() {
        let mem = Arc::new(crate::testing::MemBackend::new(Default::default()));
        mem.limit_data_room(Some(12_345));
        let lock = ObjectLock {
            mode: crate::lock::LockMode::Governance,
            retain_secs: 86_400,
            generation_secs: 3_600,
        };
        let locking = Locking::new(mem, lock, Duration::seconds(60));
        assert_eq!(locking.free_for_data().await.unwrap(), Some(12_345));
    }
}
