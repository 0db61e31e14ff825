//! A decorator that plays S3 Object Lock on any backend, as a bucket with
//! object lock enabled enforces it (checked against SeaweedFS 4.48 and
//! AWS's documentation): a put may carry a retention; a retention can be
//! lengthened, and shortened only in governance mode (with a bypass this
//! decorator never has, so never); an object cannot be deleted while its
//! retention runs. On S3 a plain DELETE of a locked object "succeeds" by
//! hiding it behind a delete marker; here it is refused, and counted, so
//! that a test sees any attempt at all. Retention is judged by the real
//! clock, as the store judges it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::stream::BoxStream;

use crate::backend::{Backend, BackendError, ObjectMeta, Operation, PutOptions, Retained};
use crate::lock::Retention;

#[derive(Debug)]
pub struct LockSim {
    inner: Arc<dyn Backend>,
    locks: Mutex<BTreeMap<String, Retention>>,
    /// Extension requests (PutObjectRetention).
    extensions: AtomicU64,
    /// Retention reads (HEADs asking for it).
    reads: AtomicU64,
    /// Deletes of locked objects, refused.
    refused: AtomicU64,
    /// Puts that carried a retention.
    locked_puts: AtomicU64,
}

impl LockSim {
    pub fn new(inner: Arc<dyn Backend>) -> LockSim {
        LockSim {
            inner,
            locks: Mutex::default(),
            extensions: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            locked_puts: AtomicU64::new(0),
        }
    }

    pub fn extensions(&self) -> u64 {
        self.extensions.load(Ordering::SeqCst)
    }
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
    pub fn refused_deletes(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
    pub fn locked_puts(&self) -> u64 {
        self.locked_puts.load(Ordering::SeqCst)
    }

    /// The retention of a key, if it has one.
    pub fn lock_of(&self, key: &str) -> Option<Retention> {
        self.locks.lock().unwrap().get(key).copied()
    }

    fn locked(&self, key: &str) -> bool {
        self.lock_of(key).is_some_and(|r| r.until > Utc::now())
    }

    fn denied(&self, key: &str, operation: Operation, message: &str) -> BackendError {
        BackendError::PermissionDenied {
            location: self.location(),
            key: key.to_string(),
            operation,
            message: message.to_string(),
        }
    }
}

#[async_trait]
impl Backend for LockSim {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        let inner_opts = PutOptions {
            retention: None,
            ..opts
        };
        self.inner.put_opts(key, data, inner_opts).await?;
        if let Some(r) = opts.retention {
            self.locked_puts.fetch_add(1, Ordering::SeqCst);
            // A new version with its own retention; the older version's
            // lock would keep that version, which nothing here reads.
            self.locks.lock().unwrap().insert(key.to_string(), r);
        }
        Ok(())
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

    /// Locked keys are refused (the first is reported), the others
    /// deleted, as S3's DeleteObjects answers per key.
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let (locked, free): (Vec<String>, Vec<String>) =
            keys.iter().cloned().partition(|k| self.locked(k));
        if !free.is_empty() {
            self.inner.delete_many(&free).await?;
            let mut l = self.locks.lock().unwrap();
            for k in &free {
                l.remove(k);
            }
        }
        match locked.first() {
            Some(k) => {
                self.refused
                    .fetch_add(locked.len() as u64, Ordering::SeqCst);
                Err(self.denied(k, Operation::Delete, "the object is locked"))
            }
            None => Ok(()),
        }
    }

    fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut c = self.inner.request_counts();
        c.insert("put_retention", self.extensions());
        c
    }

    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        Ok(true)
    }

    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let meta = self.inner.head(key).await?;
        Ok(Retained {
            meta,
            retention: self.lock_of(key),
            version: Some(version_of(key)),
        })
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: Retention,
    ) -> Result<(), BackendError> {
        self.extensions.fetch_add(1, Ordering::SeqCst);
        self.inner.head(key).await?;
        // One version per key here: an extension must name the one the
        // HEAD saw, as S3 is asked to (a version put between the two
        // requests is not to be locked).
        if version != Some(version_of(key).as_str()) {
            return Err(self.denied(
                key,
                Operation::Retain,
                "the extension does not name the version its HEAD saw",
            ));
        }
        let mut l = self.locks.lock().unwrap();
        if let Some(old) = l.get(key)
            && (old.until > retention.until || old.mode != retention.mode)
            && old.until > Utc::now()
        {
            return Err(self.denied(
                key,
                Operation::Retain,
                "a running retention cannot be shortened or change mode",
            ));
        }
        l.insert(key.to_string(), retention);
        Ok(())
    }
}

/// The one version of `key` this store reports.
fn version_of(key: &str) -> String {
    format!("{key}#1")
}
