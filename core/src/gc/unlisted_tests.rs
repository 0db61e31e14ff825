//! A store whose listing of `packs/` leaves out a pack that is there: the
//! old index objects naming it must not be rewritten without its entries
//! (review 106.3). The sweep holds every pack back instead and says
//! which pack; what the index places stays placed.

use std::sync::Arc;

use chrono::Duration;

use crate::gc::pack_sweep_tests::chunk;
use crate::gc::test_packs::{mem_repo, store_pack, write_point};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::repo::Repository;
use crate::testing::{FaultPlan, FaultyBackend};

#[tokio::test]
async fn a_pack_the_listing_leaves_out_keeps_its_index_entries() {
    let (mem, repo) = mem_repo(60).await;
    let a: Vec<_> = (0..10).map(chunk).collect();
    let b: Vec<_> = (10..20).map(chunk).collect();
    store_pack(&repo, &a).await;
    let (hidden, _) = store_pack(&repo, &b).await;
    let p1: PointId = "20260101T000001Z-0001".parse().unwrap();
    let p2: PointId = "20260101T000002Z-0002".parse().unwrap();
    write_point(&repo, "a", &p1, &a).await;
    write_point(&repo, "b", &p2, &b).await;
    // Both index objects old, and small: a sweep merges them.
    mem.clock().advance(Duration::seconds(3600));

    let plan = FaultPlan {
        unlisted: vec![keys::pack(&hidden)],
        ..FaultPlan::default()
    };
    let through = Repository::open(Arc::new(FaultyBackend::new(mem.clone(), plan)))
        .await
        .unwrap();
    let r = crate::gc::run(&through, false).await.unwrap();
    let held = r.held.as_deref().unwrap_or_default();
    assert!(held.contains(&keys::pack(&hidden)), "{r:?}");
    assert!(!r.held_by_damage && r.held_by_store);
    assert_eq!((r.packs_deleted, r.index_objects_deleted), (0, 0), "{r:?}");

    let ids: Vec<ObjectId> = a.iter().chain(&b).map(|(id, _)| *id).collect();
    let index = repo.chunks().open_index().await.unwrap();
    let places = index.lookup_all(&ids).await.unwrap();
    assert!(places.iter().all(|p| !p.is_empty()), "every chunk placed");
}
