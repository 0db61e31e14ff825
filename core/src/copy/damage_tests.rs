//! What the target records as damaged is never relied on: a node of the
//! reference point destroyed in the target and recorded, and a chunk
//! recorded, are stored again from the source by the next point's copy,
//! and their records go once it is committed.

use bytes::Bytes;

use super::tests::{back_up, data, every_point, pair, restored, run};
use crate::backend::{Backend, PutMode};
use crate::keys;

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
