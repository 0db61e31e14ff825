//! A node must cover its segment's length, as restore requires
//! (`Repository::load_segment_node`). A source manifest whose two nodes
//! are swapped on a disk of 1.5 segments decodes (each node is at most a
//! segment) but restores to nothing good: the copy must refuse it as the
//! source's damage naming a node, whether it fetches the nodes or would
//! trust them from the target's reference point, which has them at
//! their right lengths.

use chrono::Duration;
use futures::TryStreamExt;

use super::tests::{back_up, data, every_point, left_out, pair, run};
use crate::backend::Backend;
use crate::id::PointId;
use crate::keys;
use crate::manifest::Manifest;

/// `m` with its first disk's two nodes swapped, written to the source as
/// a new point (a child of `m`, one second later).
async fn swapped(source: &crate::repo::Repository, sb: &dyn Backend, m: &Manifest) -> Manifest {
    let mut bad = m.clone();
    bad.time = m.time + Duration::seconds(1);
    bad.created = bad.time;
    bad.id = PointId::new(bad.time);
    bad.parent = Some(m.id.clone());
    let d = &mut bad.disks[0];
    assert_eq!(d.segments.len(), 2);
    d.segments.swap(0, 1);
    d.last_data.clear();
    source.write_manifest(&bad).await.unwrap();
    assert!(sb.head(&keys::point(&bad.vm, &bad.id)).await.is_ok());
    bad
}

async fn points(b: &dyn Backend) -> Vec<String> {
    let listed: Vec<_> = b.list(keys::POINTS).try_collect().await.unwrap();
    listed.into_iter().map(|o| o.key).collect()
}

/// `damage` (one point's) is the source's, naming a node of `m`.
fn names_a_node_of_the_source(damage: &[String], m: &Manifest) {
    let [why] = damage else {
        panic!("one point left out: {damage:?}");
    };
    assert!(why.contains("in the source memory://"), "{why}");
    let named = m.disks[0].segments.iter().flatten().map(keys::node);
    assert!(named.into_iter().any(|n| why.contains(&n)), "{why}");
    assert!(why.contains("covers"), "{why}");
}

#[tokio::test]
async fn swapped_nodes_in_the_source_are_refused_naming_a_node() {
    let (dir, sb, tb, source, target) = pair(true).await;
    let good = back_up(&source, &dir, "a", &data(3 << 19, 70)).await;
    let bad = swapped(&source, &*sb, &good).await;
    // Only the swapped point: every node is fetched from the source.
    let damage = left_out(&source, &target, every_point(&[&bad])).await;
    names_a_node_of_the_source(&damage, &bad);
    assert!(points(&*tb).await.is_empty());
}

#[tokio::test]
async fn swapped_nodes_are_refused_though_the_reference_point_has_them() {
    let (dir, sb, tb, source, target) = pair(false).await;
    let good = back_up(&source, &dir, "a", &data(3 << 19, 71)).await;
    let bad = swapped(&source, &*sb, &good).await;
    // The target's reference point holds both nodes, at the other
    // segment lengths: they are not trusted there.
    run(&source, &target, every_point(&[&good])).await.unwrap();
    let damage = left_out(&source, &target, every_point(&[&bad])).await;
    names_a_node_of_the_source(&damage, &bad);
    let there = points(&*tb).await;
    assert_eq!(there.len(), 1, "{there:?}");
}

/// A damaged manifest at the point's key in the target is the target's
/// damage, and says so: the operator's `--repo` is the source, where
/// `forget` would delete the good point.
#[tokio::test]
async fn a_damaged_point_in_the_target_names_the_target() {
    let (dir, _sb, tb, source, target) = pair(false).await;
    let a1 = back_up(&source, &dir, "a", &data(1 << 20, 72)).await;
    let key = keys::point(&a1.vm, &a1.id);
    tb.put(
        &key,
        bytes::Bytes::from_static(b"rot"),
        crate::backend::PutMode::Overwrite,
    )
    .await
    .unwrap();
    let e = run(&source, &target, every_point(&[&a1]))
        .await
        .unwrap_err();
    assert!(e.is_damage(), "{e}");
    let msg = e.to_string();
    let point = format!("{}@{}", a1.vm, a1.id);
    assert!(msg.contains("in the target memory://"), "{msg}");
    assert!(msg.contains(&format!("forget {point}")), "{msg}");
}
