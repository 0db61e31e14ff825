//! A server's lease when its refreshes stop reaching the store (review
//! 104.1): a serve lease never commits, so no `check` ever re-verifies
//! anything, and failed heartbeats were dropped in silence. A store away
//! past the TTL let a sweep take the lease for dead and delete the
//! served point; the next refresh then brought back a lease pinning a
//! point in neither `points/` nor `trash/`, holding every later deletion.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::ServeLease;
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::progress::{Progress, Warning};
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Lease writes fail while `down` (the store unreachable for them);
/// every lease PUT tried is counted.
#[derive(Debug)]
struct LeasesDown {
    inner: Arc<MemBackend>,
    down: AtomicBool,
    lease_puts: AtomicU64,
}

#[async_trait]
impl Backend for LeasesDown {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, o: PutOptions) -> Result<(), BackendError> {
        if key.starts_with("leases/") {
            self.lease_puts.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(BackendError::Transient {
                    location: self.location(),
                    message: "the store is unreachable".into(),
                });
            }
        }
        self.inner.put_opts(key, data, o).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, r: Range<u64>) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, r).await
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

const TTL: u64 = 600;

async fn serving() -> (Arc<LeasesDown>, ServeLease, Arc<Progress>) {
    let b = Arc::new(LeasesDown {
        inner: Arc::new(MemBackend::default()),
        down: false.into(),
        lease_puts: 0.into(),
    });
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol.lease_ttl_secs = TTL;
    let repo = Repository::init(b.clone(), cfg).await.unwrap();
    let progress = Arc::new(Progress::default());
    let point = (
        "vm".parse().unwrap(),
        "20260101T000000Z-0001".parse().unwrap(),
    );
    let lease = ServeLease::begin(&repo, &[point], progress.clone())
        .await
        .unwrap();
    (b, lease, progress)
}

fn at_risk(p: &Progress) -> usize {
    p.warnings()
        .iter()
        .filter(|w| matches!(w, Warning::ServeLeaseAtRisk { .. }))
        .count()
}

/// Paused tokio time: the heartbeat's sleeps pass at once, in order.
#[tokio::test(start_paused = true)]
async fn a_lease_unrefreshed_past_its_ttl_is_reported_lapsed_and_never_written_again() {
    let (b, lease, progress) = serving().await;
    let start = tokio::time::Instant::now();
    b.down.store(true, Ordering::SeqCst);
    // One failed beat (TTL/4) is no news; two (TTL/2) are a warning.
    tokio::time::sleep(Duration::from_secs(TTL / 4 + 1)).await;
    assert_eq!(at_risk(&progress), 0);
    tokio::time::sleep(Duration::from_secs(TTL / 4)).await;
    assert_eq!(at_risk(&progress), 1, "{:?}", progress.warnings());
    assert!(lease.lapse().is_none(), "not lapsed yet");
    // The first beat past TTL less the clock margin finds it lapsed.
    let e = tokio::time::timeout(Duration::from_secs(TTL), lease.lapsed())
        .await
        .expect("the lease is reported lapsed");
    // Before the TTL, when a sweep may take it for dead (the state is
    // watched between beats: looked at only after a beat, the lapse was
    // seen at the TTL: review 109.1).
    let at = start.elapsed().as_secs();
    assert!(
        at < TTL,
        "seen lapsed {at} s after the last write, TTL {TTL}"
    );
    assert!(
        matches!(e, crate::Error::LeaseLapsed { ttl_secs: TTL, .. }),
        "{e}"
    );
    assert_eq!(at_risk(&progress), 1, "warned once per spell");
    // The store is back: the lapsed lease is not written again (it would
    // pin a point gc may have deleted).
    b.down.store(false, Ordering::SeqCst);
    let tried = b.lease_puts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3 * TTL)).await;
    assert_eq!(b.lease_puts.load(Ordering::SeqCst), tried);
    assert!(lease.lapse().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_lease_whose_refreshes_fail_a_while_then_succeed_stays_alive() {
    let (b, lease, progress) = serving().await;
    b.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    assert_eq!(at_risk(&progress), 1);
    b.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3 * TTL)).await;
    assert!(lease.lapse().is_none());
    // A second spell is warned of again.
    b.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(TTL / 2 + TTL / 4)).await;
    assert_eq!(at_risk(&progress), 2);
    assert!(lease.lapse().is_none());
}
