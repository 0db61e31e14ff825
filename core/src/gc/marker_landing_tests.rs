//! A marker write the sweep stops waiting for still lands.
//!
//! A gc asked to stop aborts its heartbeat and writes its marker
//! `Stopped`. A store that had received the heartbeat's PUT applies it
//! whether or not the client still waits: if that lands after `Stopped`,
//! the marker says the sweep is marking or deleting again, and backups
//! wait on it until it goes stale. Here the store applies each marker PUT
//! a while after it was sent, and the sweep is stopped while one is on
//! its way: once everything sent has been applied, the marker must still
//! say `Stopped`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::markers::{Phase, SweepState};
use super::test_packs::{mem_repo, store_pack};
use super::{PackOptions, run_with};
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::error::Error;
use crate::gc::pack_sweep_tests::{chunk, point};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// How long after it was sent the store applies a marker PUT (the
/// heartbeat writes every 250 ms with a 1 s TTL).
const LAG: Duration = Duration::from_millis(300);

/// Applies every PUT of a running sweep's marker [`LAG`] after it was
/// sent, in a task of its own (the server's), and cancels `progress` when
/// the `nth` such PUT is sent.
#[derive(Debug)]
struct LateMarkers {
    inner: Arc<MemBackend>,
    nth: u64,
    sent: AtomicU64,
    progress: Arc<Progress>,
}

#[async_trait]
impl Backend for LateMarkers {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        if !key.starts_with("gc/sweeps/") {
            return self.inner.put_opts(key, data, opts).await;
        }
        if self.sent.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
            self.progress.cancel();
        }
        let (inner, key) = (self.inner.clone(), key.to_string());
        let server = tokio::spawn(async move {
            tokio::time::sleep(LAG).await;
            inner.put_opts(&key, data, opts).await
        });
        server.await.expect("the store's task")
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
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sweeps_marker_stays_stopped_behind_a_heartbeat_in_flight() {
    let mut stopped = 0;
    for nth in 2..=6 {
        let (mem, repo) = mem_repo(1).await;
        let c: Vec<_> = (0..8).map(chunk).collect();
        for part in c.chunks(2) {
            store_pack(&repo, part).await;
        }
        point(&repo, 1, &c[..3]).await;
        mem.clock().advance(chrono::Duration::hours(1));
        let progress = Arc::new(Progress::default());
        let late = Arc::new(LateMarkers {
            inner: mem.clone(),
            nth,
            sent: AtomicU64::new(0),
            progress: progress.clone(),
        });
        let on_late = Repository::open(late).await.unwrap();
        let packs = PackOptions::for_repository(on_late.config(), None);
        match run_with(&on_late, false, packs, &progress).await {
            Err(Error::Cancelled { .. }) => stopped += 1,
            // Finished before it looked at the cancellation again.
            Ok(_) => continue,
            Err(e) => panic!("marker write {nth}: {e}"),
        }
        tokio::time::sleep(LAG * 3).await;
        let marker = SweepState::load(&repo, 1, false).await.unwrap().unwrap();
        assert_eq!(marker.phase, Phase::Stopped, "marker write {nth}");
    }
    assert!(stopped >= 3, "{stopped} of 5 sweeps were stopped");
}
