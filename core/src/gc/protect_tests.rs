//! A damaged node a lease names as a dependency, which a committed point
//! references too: the sweep's first look at the leases meets it before
//! the points are marked. It stayed marked, with none of its chunks, so
//! the point's marking passed it over and the sweep went on to delete
//! around a damaged point, where a point's damaged node stops it (review
//! 106.1).

use bytes::Bytes;

use crate::backend::{Backend, PutMode};
use crate::error::Error;
use crate::gc::Sweep;
use crate::gc::test_packs::{mem_repo, store_pack, write_point};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::ObjectRef;
use crate::session::Session;

#[tokio::test]
async fn a_damaged_node_a_lease_names_first_still_stops_the_sweep_for_its_point() {
    let (mem, repo) = mem_repo(600).await;
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let chunks = vec![(ObjectId::of(&data), data)];
    store_pack(&repo, &chunks).await;
    let id: PointId = "20260101T000001Z-0001".parse().unwrap();
    write_point(&repo, "a", &id, &chunks).await;
    let m = repo
        .load_manifest(&"a".parse().unwrap(), &id)
        .await
        .unwrap();
    let node = m.disks[0].segments[0].unwrap();
    mem.put(
        &keys::node(&node),
        Bytes::from_static(b"rot"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();

    // A running backup found the node stored and depends on it.
    let mut session = Session::begin(&repo, &"b".parse().unwrap(), "h")
        .await
        .unwrap();
    session.depend([ObjectRef::Node(node)]);
    session.check().await.unwrap();

    let mut sweep = Sweep::begin(&repo, false).await.unwrap();
    sweep.read_leases().await.unwrap();
    sweep.read_points().await.unwrap();
    let e = sweep.mark().await.unwrap_err();
    assert!(
        matches!(&e, Error::SweepStopped { damage: true, reason, .. } if reason.contains(&node.short())),
        "{e}"
    );
}
