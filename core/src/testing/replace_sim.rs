//! A decorator that plays a gc replacing one object while another
//! process reads it: at the `at`-th read (GET or ranged GET) of the
//! victim, the replacement objects are stored and then the victim is
//! deleted (the order of gc's index sweep: new objects before the old
//! go), so that read and every later one find it gone. Readers that list
//! before the replacement see the victim and not its successors.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::backend::{Backend, BackendError, ObjectMeta, PutMode, PutOptions};

#[derive(Debug)]
pub struct ReplaceSim {
    inner: Arc<dyn Backend>,
    victim: String,
    at: u64,
    reads: AtomicU64,
    replacement: std::sync::Mutex<Vec<(String, Bytes)>>,
}

impl ReplaceSim {
    /// Replaces `victim` by `replacement` (keys and bytes, not stored
    /// yet) at its `at`-th read (1: the first).
    pub fn new(
        inner: Arc<dyn Backend>,
        victim: &str,
        at: u64,
        replacement: Vec<(String, Bytes)>,
    ) -> ReplaceSim {
        ReplaceSim {
            inner,
            victim: victim.to_string(),
            at,
            reads: AtomicU64::new(0),
            replacement: std::sync::Mutex::new(replacement),
        }
    }

    /// Whether the victim was replaced.
    pub fn replaced(&self) -> bool {
        self.reads.load(Ordering::SeqCst) >= self.at
    }

    async fn read(&self, key: &str) -> Result<(), BackendError> {
        if key != self.victim || self.reads.fetch_add(1, Ordering::SeqCst) + 1 != self.at {
            return Ok(());
        }
        let new = std::mem::take(&mut *self.replacement.lock().expect("not poisoned"));
        for (k, bytes) in new {
            self.inner.put(&k, bytes, PutMode::Create).await?;
        }
        self.inner
            .delete_many(std::slice::from_ref(&self.victim))
            .await
    }
}

#[async_trait]
impl Backend for ReplaceSim {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, opts).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.read(key).await?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.read(key).await?;
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
}
