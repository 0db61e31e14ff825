//! Repair of packs whose trailer cannot be read, against what runs beside
//! it and what a hostile index holds (the review of a9d9bd3 found each).

use std::sync::Arc;

use crate::backend::{Backend, PutMode};
use crate::gc::test_packs::{
    put_pack, read_chunk, small_chunk, small_repo, spoil_trailer, store_pack, write_point,
};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::progress::Progress;
use crate::repair::{RepairOptions, repair};
use crate::repo::Repository;
use crate::testing::{HookAt, Hooked};

/// A repair with the default options, which must succeed.
async fn repair_all(repo: &Repository) -> crate::repair::RepairReport {
    let progress = Arc::new(Progress::default());
    repair(repo, &RepairOptions::default(), progress)
        .await
        .unwrap()
}

async fn all_read(repo: &Repository, c: &[(ObjectId, Vec<u8>)]) {
    for (id, data) in c {
        let got = read_chunk(repo, id).await;
        assert_eq!(&got.unwrap_or_else(|e| panic!("lost: {e}")), data);
    }
}

fn point() -> PointId {
    "20260101T000000Z-0001".parse().unwrap()
}

/// A gc while the salvage runs, long after its first new pack, before
/// that pack is indexed: the gc took the new pack for an orphan (its
/// chunks are in an indexed pack: the damaged one) and deleted it, then
/// repair removed the damaged pack: 8 of 8 chunks lost (review). Two
/// checks now hold, each alone: gc keeps an orphan whose chunks' indexed
/// copies are not listed by their trailer (`gc/orphans.rs`), and repair
/// keeps a pack one of whose new packs is gone (`repair/packs.rs`).
#[tokio::test]
async fn a_gc_during_the_salvage_loses_nothing() {
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..8).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c[..4]).await;
    let (b, _) = store_pack(&repo, &c[4..]).await;
    write_point(&repo, "v", &point(), &c).await;
    spoil_trailer(&mem, &a).await;
    spoil_trailer(&mem, &b).await;
    let (gc_repo, clock) = (repo.clone(), mem.clone());
    // When the salvage first indexes a new pack, stored just before.
    let hooked = Hooked::new(
        mem.clone(),
        HookAt::Put(keys::INDEX),
        Box::new(move || {
            let (repo, clock) = (gc_repo.clone(), clock.clone());
            Box::pin(async move {
                clock.clock().advance(chrono::Duration::minutes(10));
                crate::gc::run(&repo, false).await.unwrap();
            })
        }),
    );
    let repairing = Repository::open(hooked.clone()).await.unwrap();
    repair_all(&repairing).await;
    assert!(hooked.fired());
    all_read(&repo, &c).await;
}

/// Entries at a chunk's true place with a wrong length (an index object
/// anyone with the metadata key may write): dropped as repeats of the
/// place, the right one could go unread, the chunk counted damaged and
/// its only copy removed with the pack.
#[tokio::test]
async fn a_wrong_entry_at_a_true_place_does_not_hide_the_right_one() {
    use crate::placement::index_write::store_entries;
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..4).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c).await;
    write_point(&repo, "v", &point(), &c).await;
    let victim = crate::gc::test_packs::pack_entries(&repo, &a)
        .await
        .into_iter()
        .find(|e| e.entry.id == c[0].0)
        .unwrap();
    for k in 1..=6u32 {
        let mut wrong = victim;
        wrong.entry.stored_len -= k;
        store_entries(&**repo.backend(), repo.codec(), "", vec![wrong])
            .await
            .unwrap();
    }
    spoil_trailer(&mem, &a).await;
    let r = repair_all(&repo).await;
    assert_eq!(r.chunks_not_salvaged, 0, "{r:?}");
    all_read(&repo, &c).await;
}

/// Packs whose trailer reads again by the time the sweep looks stay, and
/// are not reported as left (the CLI exited 3 on a sound repository).
#[tokio::test]
async fn packs_readable_again_are_not_counted_as_left() {
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..8).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c[..4]).await;
    let (b, _) = store_pack(&repo, &c[4..]).await;
    let intact_a = mem.get(&keys::pack(&a)).await.unwrap();
    let intact_b = mem.get(&keys::pack(&b)).await.unwrap();
    spoil_trailer(&mem, &a).await;
    spoil_trailer(&mem, &b).await;
    let m = mem.clone();
    let hooked = Hooked::new(
        mem.clone(),
        HookAt::Put(keys::SWEEPS),
        Box::new(move || {
            let (m, ia, ib) = (m.clone(), intact_a.clone(), intact_b.clone());
            Box::pin(async move {
                m.put(&keys::pack(&a), ia, PutMode::Overwrite)
                    .await
                    .unwrap();
                m.put(&keys::pack(&b), ib, PutMode::Overwrite)
                    .await
                    .unwrap();
            })
        }),
    );
    let repairing = Repository::open(hooked.clone()).await.unwrap();
    let r = repair_all(&repairing).await;
    assert!(hooked.fired());
    assert_eq!(
        (r.packs_unreadable, r.packs_unreadable_left),
        (2, 0),
        "{r:?}"
    );
    all_read(&repo, &c).await;
}

/// A new pack's name taken by a damaged pack outside the salvage
/// (unencrypted, contrived): those packs stay, with a warning, and the
/// rest of the repair goes on (it failed whole).
#[tokio::test]
async fn a_new_pack_named_like_a_damaged_orphan_is_a_warning() {
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..8).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c[..4]).await;
    let (b, _) = store_pack(&repo, &c[4..]).await;
    let in_order: Vec<_> = if a < b {
        c.clone()
    } else {
        c[4..].iter().chain(&c[..4]).cloned().collect()
    };
    let x = put_pack(&repo, &in_order).await;
    spoil_trailer(&mem, &a).await;
    spoil_trailer(&mem, &b).await;
    spoil_trailer(&mem, &x).await;
    let r = repair_all(&repo).await;
    assert!(!r.warnings.is_empty(), "{r:?}");
    assert_eq!(r.packs_salvaged, 0, "{r:?}");
    all_read(&repo, &c).await;
}

/// An entry placing a chunk just past the pack's end (an index object
/// anyone with the metadata key may write) joins the real chunks' run:
/// the run's read failed as "shorter than the index says", every chunk
/// of it was taken for damaged, and the pack, their only copy, removed.
/// Now such a run is read chunk by chunk.
#[tokio::test]
async fn an_entry_past_the_end_does_not_take_the_real_chunks_with_it() {
    use crate::placement::index_write::store_entries;
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..4).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c).await;
    write_point(&repo, "v", &point(), &c).await;
    let last = crate::gc::test_packs::pack_entries(&repo, &a)
        .await
        .into_iter()
        .max_by_key(|e| e.entry.offset)
        .unwrap();
    let size = mem.head(&keys::pack(&a)).await.unwrap().size;
    let mut hostile = last;
    hostile.entry.id = small_chunk(99).0;
    hostile.entry.offset = last.entry.range().end;
    hostile.entry.stored_len = (size - hostile.entry.offset + 100) as u32;
    store_entries(&**repo.backend(), repo.codec(), "", vec![hostile])
        .await
        .unwrap();
    spoil_trailer(&mem, &a).await;
    let r = repair_all(&repo).await;
    assert_eq!(r.chunks_not_salvaged, 1, "{r:?}");
    all_read(&repo, &c).await;
}
