//! A check's lease time against a heartbeat (found by review): the HEAD
//! that reads the lease's time back runs beside the listing of `gc/`, and
//! a heartbeat landing between the check's write and a slow HEAD made the
//! time read later than the listing, so a sweep fresh when listed looked
//! dead and its batch in flight was not waited for.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Notify;

use crate::backend::{Backend, BackendError, ObjectMeta, PutMode, PutOptions};
use crate::chunker::ChunkParams;
use crate::codec::Codec;
use crate::config::RepoConfig;
use crate::gc::markers::{Phase, SweepState};
use crate::repo::Repository;
use crate::session::{Check, Session};
use crate::testing::MemBackend;

/// The store's time a sweep's marker lives without a refresh (the lease
/// TTL, 8 s, makes the session's heartbeat beat every 2 s of real time).
const SWEEP_TTL: i64 = 4;

/// Once armed, serves a check's listing of `gc/` first, then holds the lease's HEAD
/// while the sweep refreshes its marker past the sweep TTL (store time)
/// and the session's heartbeat is due (real time).
#[derive(Debug)]
struct SlowHead {
    inner: Arc<MemBackend>,
    armed: AtomicBool,
    listed: Notify,
}

fn deleting(seq: u64) -> Bytes {
    let key = crate::keys::sweep(seq);
    let state = SweepState {
        seq,
        host: "g".into(),
        phase: Phase::Deleting,
        ..SweepState::default()
    };
    state.encode(&Codec::plain(), &key).unwrap()
}

#[async_trait]
impl Backend for SlowHead {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, o: PutOptions) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, o).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, r: Range<u64>) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, r).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        if key.starts_with("leases/") && self.armed.load(Ordering::SeqCst) {
            self.listed.notified().await;
            let clock = self.inner.clock();
            for _ in 0..SWEEP_TTL {
                clock.advance(chrono::Duration::seconds(1));
                let marker = deleting(1);
                self.inner
                    .put(&crate::keys::sweep(1), marker, PutMode::Overwrite)
                    .await?;
            }
            clock.advance(chrono::Duration::seconds(1));
            // The heartbeat is due now: it may write the lease before
            // this HEAD is answered.
            tokio::time::sleep(Duration::from_millis(2600)).await;
        }
        self.inner.head(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let prefix = prefix.to_string();
        let all = async move {
            let v: Vec<_> = self.inner.list(&prefix).collect().await;
            if prefix == crate::keys::GC && self.armed.load(Ordering::SeqCst) {
                self.listed.notify_one();
            }
            v
        };
        futures::stream::once(all)
            .flat_map(futures::stream::iter)
            .boxed()
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}

#[tokio::test]
async fn a_fresh_sweeps_batch_is_waited_for_whatever_the_heartbeat_does() {
    let mem = Arc::new(MemBackend::default());
    let b = Arc::new(SlowHead {
        inner: mem.clone(),
        armed: false.into(),
        listed: Notify::new(),
    });
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol.lease_ttl_secs = 8;
    cfg.protocol.sweep_ttl_secs = SWEEP_TTL as u64;
    let repo = Repository::init(b.clone(), cfg).await.unwrap();
    // Sweep 1 runs, deleting a batch chosen before the lease was written.
    mem.put(&crate::keys::sweep(1), deleting(1), PutMode::Create)
        .await
        .unwrap();
    let mut session = Session::begin(&repo, &"vm".parse().unwrap(), "h")
        .await
        .unwrap();
    let _beating = session.heartbeat();
    b.armed.store(true, Ordering::SeqCst);
    let check = session.check().await.unwrap();
    assert!(
        matches!(check, Check::Wait { seq: 1, .. }),
        "sweep 1 was fresh when listed and never silent for long: {check:?}"
    );
}
