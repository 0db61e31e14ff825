//! The object lock's extension runs between a copy's last check of the
//! sweeps and its commit, and may be slow (one request per node and pack
//! it renews). A commit made more than a quarter of the lease TTL after
//! its last check is not made on it: the copy checks again first, as a
//! backup does (`backup::last_check_too_old`), so that what a sweep took
//! meanwhile is stored again before the point names it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::tests::{back_up, data, every_point, run};
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions, Retained};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::keys;
use crate::lock::{LockMode, ObjectLock, Retention};
use crate::repo::Repository;
use crate::testing::{LockSim, MemBackend};

/// Retention requests answered after `delay`; every request the test
/// looks at logged in order.
#[derive(Debug)]
struct SlowRetention {
    inner: Arc<dyn Backend>,
    delay: Duration,
    log: Mutex<Vec<String>>,
}

impl SlowRetention {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
}

#[async_trait]
impl Backend for SlowRetention {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        let r = self.inner.put_opts(key, data, opts).await;
        self.note(format!("put {key}"));
        r
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
        self.note(format!("list {prefix}"));
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
    fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        self.inner.request_counts()
    }
    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        self.inner.lock_enabled().await
    }
    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        tokio::time::sleep(self.delay).await;
        let r = self.inner.retention(key).await;
        self.note(format!("retain {key}"));
        r
    }
    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: Retention,
    ) -> Result<(), BackendError> {
        tokio::time::sleep(self.delay).await;
        let r = self.inner.extend_retention(key, version, retention).await;
        self.note(format!("retain {key}"));
        r
    }
}

#[tokio::test]
async fn a_copy_whose_lock_extension_was_slow_checks_the_sweeps_again_before_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let config = || RepoConfig::new(1 << 20, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let source = Repository::init(Arc::new(MemBackend::default()), config())
        .await
        .unwrap();
    let a1 = back_up(&source, &dir, "a", &data(1 << 20, 80)).await;

    // A quarter of this TTL is 1 s; each retention request takes longer.
    let mut config = config();
    config.protocol.clock_margin_secs = 0;
    config.protocol.lease_ttl_secs = 4;
    config.object_lock = Some(ObjectLock {
        mode: LockMode::Governance,
        retain_secs: 3_600,
        generation_secs: 7 * 3_600,
    });
    let sim: Arc<dyn Backend> = Arc::new(LockSim::new(Arc::new(MemBackend::default())));
    let slow = Arc::new(SlowRetention {
        inner: sim,
        delay: Duration::from_millis(1_100),
        log: Mutex::default(),
    });
    let target = Repository::init_like(
        slow.clone(),
        config,
        &source,
        None,
        crate::crypto::Argon2Params::DEFAULT,
    )
    .await
    .unwrap();
    slow.log.lock().unwrap().clear();
    run(&source, &target, every_point(&[&a1])).await.unwrap();

    let log = slow.log.lock().unwrap().clone();
    let manifest = format!("put {}", keys::point(&a1.vm, &a1.id));
    let commit = log.iter().position(|l| *l == manifest).expect("committed");
    let last_retain = log[..commit]
        .iter()
        .rposition(|l| l.starts_with("retain "))
        .expect("the lock extension ran before the commit");
    let between = &log[last_retain..commit];
    assert!(
        between.iter().any(|l| l.starts_with("put leases/")),
        "no lease refresh between the extension and the commit: {between:?}"
    );
    assert!(
        between.iter().any(|l| l.starts_with("list gc/")),
        "no look at the sweeps between the extension and the commit: {between:?}"
    );
}
