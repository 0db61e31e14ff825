//! A copy racing gc on the target, and one cancelled (SIGINT).
//!
//! gc: while the copy of a VM's second point
//! is between its index object and its nodes, the first point (whose
//! nodes and packs the second relies on) is forgotten in the target and
//! a whole sweep runs. The copy's lease (the first point pinned, the
//! packs it reuses recorded) keeps all of it: the second point restores
//! bit-exact. Once the copy is over, a later sweep deletes what only the
//! first point had, so the objects were candidates indeed.

use std::sync::Arc;

use futures::TryStreamExt;

use super::tests::{back_up, data, every_point, init, init_like, reopen, restored, run};
use super::{PointStatus, copy};
use crate::backend::Backend;
use crate::error::Error;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::{Hook, HookAt, Hooked, MemBackend};

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
    // Before the copy's first node: the first point forgotten, a sweep.
    let repo = reopen(tb.clone(), true).await;
    let point = (a1.vm.clone(), a1.id.clone());
    let hook: Hook = Box::new(move || {
        let (repo, point) = (repo.clone(), point.clone());
        Box::pin(async move {
            let forgotten = crate::prune::forget::forget(&repo, &[point], false)
                .await
                .unwrap();
            assert_eq!(forgotten.pinned.len(), 1, "the copy's lease pins it");
            let report = crate::gc::run(&repo, false).await.unwrap();
            assert!(
                report.held.is_none() && report.skipped.is_none(),
                "{report:?}"
            );
        })
    });
    let through = reopen(
        Hooked::new(tb.clone(), HookAt::Put(crate::keys::NODES), hook),
        true,
    )
    .await;
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

/// Cancelled (as SIGINT does) when its first pack reaches the target:
/// `Cancelled`, no point, no lease left; a re-run finishes the copy.
#[tokio::test]
async fn a_cancelled_copy_leaves_no_point_nor_lease_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Arc::new(MemBackend::default());
    let source = init(&sb, true).await;
    let one = data(3 << 20, 10);
    let a1 = back_up(&source, &dir, "a", &one).await;
    let tb = Arc::new(MemBackend::default());
    let target = init_like(&tb, &source).await;
    let progress = Arc::new(Progress::default());
    let cancel = progress.clone();
    let hook: Hook = Box::new(move || {
        cancel.cancel();
        Box::pin(async {})
    });
    let through = reopen(
        Hooked::new(tb.clone(), HookAt::Put(crate::keys::PACKS), hook),
        true,
    )
    .await;
    let e = copy(&source, &through, every_point(&[&a1]), progress)
        .await
        .unwrap_err();
    let Error::Cancelled { cleaned } = &e else {
        panic!("{e}")
    };
    assert!(
        cleaned.contains("lease") && cleaned.contains("0 point(s)"),
        "{cleaned}"
    );
    let listed = |prefix: &'static str| {
        let tb = tb.clone();
        async move { tb.list(prefix).try_collect::<Vec<_>>().await.unwrap().len() }
    };
    assert_eq!(listed(crate::keys::POINTS).await, 0);
    assert_eq!(
        listed(crate::keys::LEASES).await,
        0,
        "the lease was removed"
    );
    assert_eq!(listed(crate::keys::NODES).await, 0);
    let out = run(&source, &target, every_point(&[&a1])).await.unwrap();
    assert_eq!(out.copied(), 1);
    assert_eq!(restored(&target, &dir, &a1).await, one);
}

/// A prune on the source, and the gc after it, while the copy reads a
/// point's nodes: the point is gone from the source, not damaged. It is
/// reported `Gone` (as a point removed before its manifest was read), the
/// other points are copied, and nothing is recorded as damage on either
/// side (before: exit 3, "damaged object nodes/... in the source").
#[tokio::test]
async fn a_source_point_pruned_and_swept_mid_copy_is_gone_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Arc::new(MemBackend::default());
    let source = init(&sb, true).await;
    let one = data(4 << 20, 21);
    let two = data(4 << 20, 22);
    let a1 = back_up(&source, &dir, "a", &one).await;
    let a2 = back_up(&source, &dir, "a", &two).await;
    sb.clock().advance(chrono::Duration::seconds(3600));
    let tb = Arc::new(MemBackend::default());
    let target = init_like(&tb, &source).await;

    // Before the copy's first read of a source node (a1's): a1 forgotten
    // in the source and swept.
    let hook: Hook = {
        let (source, point) = (source.clone(), (a1.vm.clone(), a1.id.clone()));
        Box::new(move || {
            let (source, point) = (source.clone(), point.clone());
            Box::pin(async move {
                crate::prune::forget::forget(&source, &[point], false)
                    .await
                    .unwrap();
                let swept = crate::gc::run(&source, false).await.unwrap();
                assert!(swept.nodes_deleted > 0, "{swept:?}");
            })
        })
    };
    let hooked = Hooked::new(sb.clone(), HookAt::Get(crate::keys::NODES), hook);
    let through = Repository::open_with(hooked.clone(), || Ok(super::tests::pw("source")))
        .await
        .unwrap();
    let out = run(&through, &target, every_point(&[&a1, &a2]))
        .await
        .unwrap();
    assert!(hooked.fired());
    let status: Vec<_> = out.points.iter().map(|p| p.status).collect();
    assert_eq!(status, [PointStatus::Gone, PointStatus::Copied], "{out:?}");
    assert_eq!(restored(&target, &dir, &a2).await, two);
    for b in [&sb, &tb] {
        let records: Vec<_> = b.list(crate::keys::DAMAGE).try_collect().await.unwrap();
        assert!(records.is_empty(), "{records:?}");
    }
}
