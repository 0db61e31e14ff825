//! A backend that applies the PUTs of keys under a prefix a while after
//! they were sent, in a task of its own, as a server applies a request it
//! has received whether or not the client still waits for the answer.
//! It cancels a [`Progress`] when the `nth` such PUT is sent, so a test
//! can stop a command with one of them on its way (a lease, a sweep's
//! marker) and see what lands after the command ended. PUTs sent after
//! the `nth` land at once: what the stopped command writes last would
//! overtake what was on its way, unless it waited for it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::progress::Progress;

#[derive(Debug)]
pub struct LatePuts {
    inner: Arc<dyn Backend>,
    prefix: &'static str,
    lag: Duration,
    nth: u64,
    sent: AtomicU64,
    progress: Arc<Progress>,
    /// PUTs under this prefix take this long (a slow upload), awaited.
    slow: Option<(&'static str, Duration)>,
}

impl LatePuts {
    /// PUTs under `prefix` land `lag` after they were sent; the `nth`
    /// cancels `progress` as it is sent.
    pub fn new(
        inner: Arc<dyn Backend>,
        prefix: &'static str,
        lag: Duration,
        nth: u64,
        progress: Arc<Progress>,
    ) -> Self {
        LatePuts {
            inner,
            prefix,
            lag,
            nth,
            sent: AtomicU64::new(0),
            progress,
            slow: None,
        }
    }

    /// Makes every PUT under `prefix` take `by` (the caller waits).
    pub fn slow_puts(mut self, prefix: &'static str, by: Duration) -> Self {
        self.slow = Some((prefix, by));
        self
    }

    /// The late PUTs sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for LatePuts {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        if let Some((prefix, by)) = self.slow
            && key.starts_with(prefix)
        {
            tokio::time::sleep(by).await;
        }
        if !key.starts_with(self.prefix) {
            return self.inner.put_opts(key, data, opts).await;
        }
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.nth {
            self.progress.cancel();
        }
        let lag = if n > self.nth {
            Duration::ZERO
        } else {
            self.lag
        };
        let (inner, key) = (self.inner.clone(), key.to_string());
        let server = tokio::spawn(async move {
            tokio::time::sleep(lag).await;
            inner.put_opts(&key, data, opts).await
        });
        server.await.map_err(|e| BackendError::Other {
            location: self.inner.location(),
            message: format!("the store's task: {e}"),
        })?
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
    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        self.inner.free_for_data().await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}
