//! A backend whose requests under chosen prefixes go wrong in one chosen,
//! repeatable way: a put that lands but is reported as failed (its reply
//! lost, or an SDK retry of it refused as "already exists"), reads or
//! HEADs that fail. For tests of what a caller concludes from a failure
//! that says nothing about what the store holds.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::MemBackend;
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};

/// How a put under [`Scripted::puts`]'s prefix ends, after it stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutThen {
    /// A transient error: the reply was lost.
    Lost,
    /// "Already exists": the SDK retried a create-only put whose first
    /// attempt landed, and the store refused the retry (412).
    Exists,
}

#[derive(Debug)]
pub struct Scripted {
    inner: Arc<MemBackend>,
    /// Puts of keys under the prefix store, then end as it says.
    pub puts: Option<(&'static str, PutThen)>,
    /// Reads (whole, bounded, ranged) of keys under this prefix fail.
    pub failing_reads: Option<&'static str>,
    /// HEADs of keys under this prefix fail.
    pub failing_heads: Option<&'static str>,
}

impl Scripted {
    pub fn new(inner: Arc<MemBackend>) -> Self {
        Scripted {
            inner,
            puts: None,
            failing_reads: None,
            failing_heads: None,
        }
    }

    fn transient(&self, what: &str, key: &str) -> BackendError {
        BackendError::Transient {
            location: self.location(),
            message: format!("scripted fault: {what} {key}"),
        }
    }

    fn under(prefix: Option<&'static str>, key: &str) -> bool {
        prefix.is_some_and(|p| key.starts_with(p))
    }
}

#[async_trait]
impl Backend for Scripted {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        match self.puts {
            Some((p, then)) if key.starts_with(p) => {
                self.inner.put_opts(key, data, opts).await?;
                Err(match then {
                    PutThen::Lost => self.transient("reply lost after put", key),
                    PutThen::Exists => BackendError::AlreadyExists {
                        location: self.location(),
                        key: key.to_string(),
                    },
                })
            }
            _ => self.inner.put_opts(key, data, opts).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        if Self::under(self.failing_reads, key) {
            return Err(self.transient("get", key));
        }
        self.inner.get(key).await
    }

    async fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        if Self::under(self.failing_reads, key) {
            return Err(self.transient("get", key));
        }
        self.inner.get_at_most(key, max).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        if Self::under(self.failing_reads, key) {
            return Err(self.transient("get range", key));
        }
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        if Self::under(self.failing_heads, key) {
            return Err(self.transient("head", key));
        }
        self.inner.head(key).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        self.inner.list(prefix)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}
