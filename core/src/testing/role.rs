//! A decorator that gives any backend the rights of a least-privilege
//! role (docs/least-privilege.md), refusing what the role's S3 policy
//! would refuse with the error S3 answers with: [`BackendError::PermissionDenied`].
//! Engine tests use it to show that a backup host needs no delete and no
//! overwrite outside its lease, and that maintenance commands run with
//! such credentials fail clearly and change nothing.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::backend::{Backend, BackendError, ObjectMeta, Operation, PutMode, PutOptions, Retained};
use crate::keys;

/// What the credentials may do beyond reading and listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The backup policy: create-only writes anywhere (`If-None-Match:
    /// *` required), overwrites and deletes only of leases.
    Backup,
    /// The restore policy: no writes or deletes but of leases (a served
    /// or mounted point holds one).
    Restore,
}

#[derive(Debug)]
pub struct RoleBackend {
    inner: Arc<dyn Backend>,
    role: Role,
    refused: AtomicU64,
}

impl RoleBackend {
    pub fn new(inner: Arc<dyn Backend>, role: Role) -> Self {
        RoleBackend {
            inner,
            role,
            refused: AtomicU64::new(0),
        }
    }

    /// How many requests were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Leases are the one place every role may overwrite and delete: a
    /// session renews and ends its own.
    fn own(key: &str) -> bool {
        key.starts_with(keys::LEASES)
    }

    fn may(&self, key: &str, op: Operation) -> bool {
        match (self.role, op) {
            (_, Operation::Read | Operation::List) => true,
            (Role::Backup, Operation::Write) => true,
            _ => Self::own(key),
        }
    }

    fn deny(&self, key: &str, op: Operation) -> BackendError {
        self.refused.fetch_add(1, Ordering::SeqCst);
        BackendError::PermissionDenied {
            location: self.inner.location(),
            key: key.to_string(),
            operation: op,
            message: format!(
                "AccessDenied (HTTP 403): the {:?} role's policy does not grant {}{}",
                self.role,
                op.s3_action(),
                if op == Operation::Overwrite {
                    " without If-None-Match"
                } else {
                    ""
                }
            ),
        }
    }
}

#[async_trait]
impl Backend for RoleBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        let op = match opts.mode {
            PutMode::Create => Operation::Write,
            PutMode::Overwrite => Operation::Overwrite,
        };
        if !self.may(key, op) {
            return Err(self.deny(key, op));
        }
        self.inner.put_opts(key, data, opts).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
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

    /// As S3's DeleteObjects answers a policy that denies some keys: the
    /// others are deleted, the first denied one is reported.
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let (allowed, denied): (Vec<String>, Vec<String>) = keys
            .iter()
            .cloned()
            .partition(|k| self.may(k, Operation::Delete));
        if !allowed.is_empty() {
            self.inner.delete_many(&allowed).await?;
        }
        match denied.first() {
            Some(k) => Err(self.deny(k, Operation::Delete)),
            None => Ok(()),
        }
    }

    /// Removing a writer's leftovers is a delete, which no role here may
    /// do outside leases.
    async fn remove_incomplete(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let _ = before;
        Err(self.deny("(incomplete uploads)", Operation::Delete))
    }

    fn request_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.inner.request_counts()
    }

    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        self.inner.lock_enabled().await
    }

    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        self.inner.retention(key).await
    }

    /// Extending a retention is granted to the backup role (it can only
    /// keep objects longer), like a write.
    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: crate::lock::Retention,
    ) -> Result<(), BackendError> {
        self.inner.extend_retention(key, version, retention).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemBackend;

    #[tokio::test]
    async fn the_backup_role_writes_new_objects_and_touches_only_leases() {
        let mem = Arc::new(MemBackend::default());
        let b = RoleBackend::new(mem.clone(), Role::Backup);
        let one = || Bytes::from_static(b"1");
        b.put("nodes/aa/x", one(), PutMode::Create).await.unwrap();
        let e = b
            .put("nodes/aa/x", one(), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BackendError::PermissionDenied { key, operation: Operation::Overwrite, .. } if key == "nodes/aa/x"),
            "{e}"
        );
        b.put("leases/s", one(), PutMode::Create).await.unwrap();
        b.put("leases/s", one(), PutMode::Overwrite).await.unwrap();
        let e = b
            .delete_many(&["leases/s".into(), "nodes/aa/x".into()])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("s3:DeleteObject"), "{e}");
        assert!(mem.get("leases/s").await.unwrap_err().is_not_found());
        assert!(mem.get("nodes/aa/x").await.is_ok());
        assert_eq!(b.refused(), 2);

        let r = RoleBackend::new(mem, Role::Restore);
        let e = r.put("nodes/aa/y", one(), PutMode::Create).await;
        assert!(e.unwrap_err().is_permission_denied());
        r.put("leases/t", one(), PutMode::Create).await.unwrap();
    }
}
