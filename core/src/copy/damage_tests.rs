//! What the target records as damaged is never relied on: a node of the
//! reference point destroyed in the target and recorded, and a chunk
//! recorded, are stored again from the source by the next point's copy,
//! and their records go once it is committed. A point damaged in the
//! source is left out, and the others are copied.

use bytes::Bytes;

use super::tests::{back_up, data, every_point, flip_a_blob, pair, restored, run};
use super::{CopyCounts, PointStatus};
use crate::backend::{Backend, PutMode};
use crate::keys;

/// The oldest point of `a` has a damaged chunk in the source, which no
/// other point uses: it is left out, and the later point of `a` and the
/// point of `b` are copied after it. The first damaged point stopped
/// the copy, so every later point of every VM waited until it was
/// repaired or forgotten (review 99.5).
#[tokio::test]
async fn a_point_damaged_in_the_source_does_not_hold_back_the_others() {
    let (dir, sb, _tb, source, target) = pair(false).await;
    let a1 = back_up(&source, &dir, "a", &data(2 << 20, 50)).await;
    let bad = flip_a_blob(&sb, &source).await;
    let two = data(2 << 20, 51);
    let a2 = back_up(&source, &dir, "a", &two).await;
    let b = data(1 << 20, 52);
    let b1 = back_up(&source, &dir, "b", &b).await;

    let out = run(&source, &target, every_point(&[&a1, &a2, &b1]))
        .await
        .unwrap();
    let status: Vec<PointStatus> = out.points.iter().map(|p| p.status).collect();
    use PointStatus::{Copied, Damaged};
    assert_eq!(status, [Damaged, Copied, Copied], "{out:?}");
    let why = out.points[0].damage.as_deref().unwrap();
    assert!(why.contains(&bad.id.to_hex()), "{why}");
    assert_eq!(out.points[0].counts, CopyCounts::default());
    assert!(out.points[1..].iter().all(|p| p.damage.is_none()));
    assert_eq!(restored(&target, &dir, &a2).await, two);
    assert_eq!(restored(&target, &dir, &b1).await, b);
    let there = target.list_points(None).await.unwrap();
    assert_eq!(there.len(), 2, "{there:?}");
}

#[tokio::test]
async fn recorded_damage_in_the_target_is_stored_again_not_relied_on() {
    let (dir, _sb, tb, source, target) = pair(true).await;
    let one = data(3 << 20, 40);
    let mut two = one.clone();
    two[(1 << 20) + 1..(1 << 20) + 30_000].copy_from_slice(&data(29_999, 41));
    let a1 = back_up(&source, &dir, "a", &one).await;
    let a2 = back_up(&source, &dir, "a", &two).await;
    run(&source, &target, every_point(&[&a1])).await.unwrap();

    // Segment 0 is the same in both points: its node destroyed in the
    // target, as verify would record it. A chunk of segment 2 recorded.
    let node = a1.disks[0].segments[0].unwrap();
    let node_key = keys::node(&node);
    tb.put(&node_key, Bytes::from_static(b"rot"), PutMode::Overwrite)
        .await
        .unwrap();
    crate::damage::record(&target, &node_key, "test", "verify")
        .await
        .unwrap();
    let seg2 = target
        .load_node(&a1.disks[0].segments[2].unwrap())
        .await
        .unwrap();
    let chunk = seg2.chunk_ids().next().unwrap();
    crate::damage::record(&target, &keys::chunk(&chunk), "test", "verify")
        .await
        .unwrap();

    let out = run(&source, &target, every_point(&[&a2])).await.unwrap();
    let c = out.points[0].counts;
    assert!(c.chunks_copied >= 1 && c.nodes_copied >= 2, "{out:?}");
    target.load_node(&node).await.unwrap();
    let places = target
        .chunks()
        .open_index()
        .await
        .unwrap()
        .lookup_all(&[chunk])
        .await
        .unwrap();
    assert_eq!(places[0].len(), 2, "stored again in a new pack");
    assert_eq!(restored(&target, &dir, &a2).await, two);
    assert_eq!(restored(&target, &dir, &a1).await, one);
    assert!(
        crate::damage::KnownDamage::load(&target)
            .await
            .unwrap()
            .is_empty(),
        "the records went with the commit"
    );
}
