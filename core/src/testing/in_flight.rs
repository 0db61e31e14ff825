//! A backend that counts the most reads (GETs and listings) in flight at
//! once, to show that code sends requests together rather than one round
//! trip after another. Each read takes a few milliseconds, so reads sent
//! together overlap.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::MemBackend;
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};

/// [`MemBackend`] whose GETs (whole or ranged) and listings are counted
/// in flight (a listing as one request, answered whole).
#[derive(Debug, Default)]
pub struct InFlight {
    pub inner: MemBackend,
    now: AtomicUsize,
    most: AtomicUsize,
}

impl InFlight {
    /// Counts the reads of `inner` (e.g. a fork of a prepared store).
    pub fn new(inner: MemBackend) -> InFlight {
        InFlight {
            inner,
            ..InFlight::default()
        }
    }

    /// The most reads that were in flight at once so far.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    async fn counted<T>(&self, read: impl Future<Output = T>) -> T {
        /// Counts the read out when it ends, or is dropped unfinished.
        struct Out<'a>(&'a AtomicUsize);
        impl Drop for Out<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        let _out = Out(&self.now);
        self.most.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        read.await
    }
}

#[async_trait]
impl Backend for InFlight {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, opts).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.counted(self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.counted(self.inner.get_range(key, range)).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let prefix = prefix.to_string();
        let all = async move {
            self.counted(self.inner.list(&prefix).collect::<Vec<_>>())
                .await
        };
        futures::stream::once(all)
            .flat_map(futures::stream::iter)
            .boxed()
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}
