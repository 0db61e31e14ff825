//! A copy racing gc on the target: while the copy of a VM's second point
//! is between its index object and its nodes, the first point (whose
//! nodes and packs the second relies on) is forgotten in the target and
//! a whole sweep runs. The copy's lease (the first point pinned, the
//! packs it reuses recorded) keeps all of it: the second point restores
//! bit-exact. Once the copy is over, a later sweep deletes what only the
//! first point had, so the objects were candidates indeed.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::tests::{back_up, data, every_point, init, init_like, reopen, restored, run};
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::id::PointId;
use crate::names::VmName;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Forgets `point` and runs a sweep, through `repo`, just before the
/// first node is put.
#[derive(Debug)]
struct GcBeforeNodes {
    inner: Arc<MemBackend>,
    repo: Repository,
    point: (VmName, PointId),
    fired: AtomicBool,
}

#[async_trait]
impl Backend for GcBeforeNodes {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        if key.starts_with(crate::keys::NODES) && !self.fired.swap(true, Ordering::SeqCst) {
            let forgotten =
                crate::prune::forget::forget(&self.repo, std::slice::from_ref(&self.point), false)
                    .await
                    .unwrap();
            assert_eq!(forgotten.pinned.len(), 1, "the copy's lease pins it");
            let report = crate::gc::run(&self.repo, false).await.unwrap();
            assert!(
                report.held.is_none() && report.skipped.is_none(),
                "{report:?}"
            );
        }
        self.inner.put_opts(key, data, opts).await
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

#[tokio::test]
async fn gc_on_the_target_mid_copy_keeps_what_the_copied_point_needs() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Arc::new(MemBackend::default());
    let source = init(&sb, true).await;
    let one = data(4 << 20, 8);
    let mut two = one.clone();
    two[(2 << 20) + 100..(2 << 20) + 50_000].copy_from_slice(&data(49_900, 9));
    let a1 = back_up(&source, &dir, "a", &one).await;
    let a2 = back_up(&source, &dir, "a", &two).await;

    let tb = Arc::new(MemBackend::default());
    let target = init_like(&tb, &source).await;
    run(&source, &target, every_point(&[&a1])).await.unwrap();
    // Everything of the first copy is older than any cutoff from now on.
    tb.clock().advance(chrono::Duration::seconds(300));
    let racing = GcBeforeNodes {
        inner: tb.clone(),
        repo: reopen(tb.clone(), true).await,
        point: (a1.vm.clone(), a1.id.clone()),
        fired: AtomicBool::new(false),
    };
    let through = reopen(Arc::new(racing), true).await;
    let out = run(&source, &through, every_point(&[&a2])).await.unwrap();
    let counts = out.points[0].counts;
    assert!(
        counts.nodes_present >= 3 && counts.chunks_present > 0,
        "{out:?}"
    );
    assert_eq!(restored(&target, &dir, &a2).await, two);

    // The copy is over: a later sweep may now delete what only the
    // forgotten point had.
    tb.clock().advance(chrono::Duration::seconds(300));
    let report = crate::gc::run(&target, false).await.unwrap();
    assert!(report.nodes_deleted > 0, "{report:?}");
    assert_eq!(restored(&target, &dir, &a2).await, two);
}
