//! A decorator that injects faults into any backend: failed requests,
//! latency, puts that store the object but report an error (the reply was
//! lost, or an SDK's retry of it refused as "already exists"), GETs that
//! fail while puts go through, deletes that remove only part of a batch,
//! and an outage after a number of requests. Deterministic for a given
//! seed.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions, Retained};

/// What to inject; rates are per request, from 0.0 to 1.0.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    pub seed: u64,
    /// The request fails with a transient error before reaching the store.
    pub error_rate: f64,
    /// A put stores the object, then fails as if the reply was lost.
    pub lost_reply_rate: f64,
    /// A lost reply is answered as an SDK's retry of the put is when the
    /// first attempt landed: refused as "already exists" (S3's 412).
    pub lost_reply_exists: bool,
    /// A GET (whole or ranged; not a HEAD) fails, as with `error_rate`.
    pub get_error_rate: f64,
    /// A delete batch removes only its first half, then fails.
    pub partial_delete_rate: f64,
    /// Extra latency per request, up to this much.
    pub max_latency: Duration,
    /// Every request after this many fails (the store went away).
    pub outage_after: Option<u64>,
    /// Only requests whose key starts with this are disturbed.
    pub only_prefix: Option<String>,
    /// Listings leave out these keys, which are still there (a bucket
    /// index lagging, a page lost).
    pub unlisted: Vec<String>,
}

#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    requests: AtomicU64,
    injected: AtomicU64,
}

enum Fate {
    Pass,
    Fail,
    /// Do it, then report a failure.
    Partial,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        FaultyBackend {
            inner,
            plan,
            requests: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// A pseudo-random number in [0, 1) for request `n` (splitmix64).
    fn roll(&self, n: u64, salt: u64) -> f64 {
        let mut z = self
            .plan
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(salt);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// What becomes of request `key`: it fails at `error_rate` or at
    /// `fail_rate` (the request kind's own), else is done and reported
    /// failed at `partial_rate`.
    async fn fate(&self, key: &str, fail_rate: f64, partial_rate: f64) -> Fate {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if !self.plan.max_latency.is_zero() {
            let ms = self.plan.max_latency.as_millis() as f64 * self.roll(n, 1);
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
        if let Some(p) = &self.plan.only_prefix
            && !key.starts_with(p.as_str())
        {
            return Fate::Pass;
        }
        let fate = if self.plan.outage_after.is_some_and(|a| n >= a)
            || self.roll(n, 2) < self.plan.error_rate
            || self.roll(n, 4) < fail_rate
        {
            Fate::Fail
        } else if self.roll(n, 3) < partial_rate {
            Fate::Partial
        } else {
            Fate::Pass
        };
        if !matches!(fate, Fate::Pass) {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fate
    }

    fn error(&self, what: &str, key: &str) -> BackendError {
        BackendError::Transient {
            location: self.location(),
            message: format!("injected fault: {what} {key}"),
        }
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        match self.fate(key, 0.0, self.plan.lost_reply_rate).await {
            Fate::Fail => Err(self.error("put", key)),
            Fate::Partial => {
                self.inner.put_opts(key, data, opts).await?;
                Err(if self.plan.lost_reply_exists {
                    BackendError::AlreadyExists {
                        location: self.location(),
                        key: key.to_string(),
                    }
                } else {
                    self.error("reply lost after put", key)
                })
            }
            Fate::Pass => self.inner.put_opts(key, data, opts).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        match self.fate(key, self.plan.get_error_rate, 0.0).await {
            Fate::Pass => self.inner.get(key).await,
            _ => Err(self.error("get", key)),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        match self.fate(key, self.plan.get_error_rate, 0.0).await {
            Fate::Pass => self.inner.get_range(key, range).await,
            _ => Err(self.error("get range", key)),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        match self.fate(key, 0.0, 0.0).await {
            Fate::Pass => self.inner.head(key).await,
            _ => Err(self.error("head", key)),
        }
    }

    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        self.inner.free_for_data().await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let prefix = prefix.to_string();
        Box::pin(
            futures::stream::once(async move {
                match self.fate(&prefix, 0.0, 0.0).await {
                    Fate::Pass => {
                        let hidden = &self.plan.unlisted;
                        let shown = move |m: &Result<ObjectMeta, BackendError>| {
                            let show = !matches!(m, Ok(m) if hidden.contains(&m.key));
                            futures::future::ready(show)
                        };
                        Box::pin(self.inner.list(&prefix).filter(shown)) as BoxStream<'_, _>
                    }
                    _ => {
                        let e = self.error("list", &prefix);
                        Box::pin(futures::stream::iter([Err(e)])) as BoxStream<'_, _>
                    }
                }
            })
            .flatten(),
        )
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let first = keys.first().map(String::as_str).unwrap_or_default();
        match self.fate(first, 0.0, self.plan.partial_delete_rate).await {
            Fate::Fail => Err(self.error("delete", first)),
            Fate::Partial => {
                self.inner.delete_many(&keys[..keys.len() / 2]).await?;
                Err(self.error("delete (half done)", first))
            }
            Fate::Pass => self.inner.delete_many(keys).await,
        }
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
    use crate::backend::PutMode;
    use crate::testing::MemBackend;

    #[tokio::test]
    async fn injects_what_the_plan_says() {
        let mem = Arc::new(MemBackend::default());
        let b = FaultyBackend::new(
            mem.clone(),
            FaultPlan {
                seed: 7,
                lost_reply_rate: 1.0,
                ..FaultPlan::default()
            },
        );
        // The object is stored although the put reports failure.
        assert!(
            b.put("k", Bytes::from_static(b"v"), PutMode::Create)
                .await
                .is_err()
        );
        assert_eq!(mem.get("k").await.unwrap(), Bytes::from_static(b"v"));

        let down = FaultyBackend::new(
            mem.clone(),
            FaultPlan {
                outage_after: Some(1),
                ..FaultPlan::default()
            },
        );
        assert!(down.get("k").await.is_ok());
        assert!(down.get("k").await.is_err());
        assert!(down.list("").next().await.unwrap().is_err());
        assert_eq!(down.injected(), 2);

        let flaky = FaultyBackend::new(
            mem,
            FaultPlan {
                seed: 1,
                error_rate: 0.5,
                ..FaultPlan::default()
            },
        );
        let mut failed = 0;
        for _ in 0..200 {
            if flaky.get("k").await.is_err() {
                failed += 1;
            }
        }
        assert!((50..150).contains(&failed), "{failed} of 200 failed");
    }
}
