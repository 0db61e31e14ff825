//! The sweep over packs, whole sweeps over the in-memory backend: dead
//! and orphaned packs, the index rewrite, repacks, what stays, and a
//! crash between any two of its steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;

use super::pack_plan::class_rules;
use super::test_packs::{put_pack, read_chunk, store_pack, write_point};
use super::{GcReport, PackOptions, Sweep};
use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::repo::Repository;
use crate::testing::MemBackend;

const SEG: u64 = 1 << 20;

pub(super) type Chunk = (ObjectId, Vec<u8>);

pub(super) fn chunk(tag: u8) -> Chunk {
    let data: Vec<u8> = (0..4000u32)
        .map(|i| (i * 31 + u32::from(tag) * 7) as u8 ^ tag)
        .collect();
    (ObjectId::of(&data), data)
}

pub(super) async fn repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(SEG, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

/// A point of VM `a` with one segment holding `chunks`.
pub(super) async fn point(repo: &Repository, n: u8, chunks: &[Chunk]) -> PointId {
    let id: PointId = format!("20260101T00000{n}Z-000{n}").parse().unwrap();
    write_point(repo, "a", &id, chunks).await;
    id
}

pub(super) async fn gc(repo: &Repository, opts: PackOptions) -> GcReport {
    let progress = Arc::new(crate::progress::Progress::default());
    super::run_with(repo, false, opts, &progress).await.unwrap()
}

pub(super) async fn exists(mem: &MemBackend, key: &str) -> bool {
    mem.head(key).await.is_ok()
}

pub(super) async fn readable(repo: &Repository, chunks: &[Chunk]) {
    for (id, d) in chunks {
        assert_eq!(&read_chunk(repo, id).await.unwrap(), d);
    }
}

#[tokio::test]
async fn dead_packs_go_and_the_index_is_rewritten_without_them() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..6).map(chunk).collect();
    let (live, live_index) = store_pack(&repo, &c[0..3]).await;
    let (dead, dead_index) = store_pack(&repo, &c[3..6]).await;
    point(&repo, 1, &c[0..3]).await;
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!((r.packs_listed, r.packs_deleted), (2, 1), "{r:?}");
    assert!(exists(&mem, &keys::pack(&live)).await);
    assert!(!exists(&mem, &keys::pack(&dead)).await);
    // Both old index objects were read and replaced (one named the dead
    // pack; the other was small and merged), by one naming the live pack.
    assert_eq!(
        (r.index_objects_read, r.index_objects_deleted),
        (2, 1),
        "{r:?}"
    );
    assert!(!exists(&mem, &dead_index).await);
    assert!(
        exists(&mem, &live_index).await,
        "rewritten byte for byte: kept"
    );
    readable(&repo, &c[0..3]).await;
    // Nothing more to do.
    let again = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        again.packs_deleted + again.index_objects_deleted,
        0,
        "{again:?}"
    );
}

#[tokio::test]
async fn orphans_go_when_old_unless_they_hold_the_only_copy_of_a_live_chunk() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..6).map(chunk).collect();
    store_pack(&repo, &c[0..2]).await;
    point(&repo, 1, &c[0..3]).await;
    // A killed backup's pack, dead; and one holding live c2, which no
    // index object places (its index object went missing).
    let dead = put_pack(&repo, &c[4..6]).await;
    let only_copy = put_pack(&repo, &c[2..3]).await;
    // Covered: c0 is also in the indexed pack.
    let covered = put_pack(&repo, &c[0..1]).await;
    let young_at = Duration::hours(1);
    mem.clock().advance(young_at);
    let young = put_pack(&repo, &c[5..6]).await;
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(r.packs_orphaned, 2, "{r:?}");
    assert_eq!(r.packs_unindexed_live, 1, "{r:?}");
    assert!(!exists(&mem, &keys::pack(&dead)).await);
    assert!(!exists(&mem, &keys::pack(&covered)).await);
    assert!(exists(&mem, &keys::pack(&only_copy)).await);
    assert!(
        exists(&mem, &keys::pack(&young)).await,
        "a running backup's, maybe"
    );
    readable(&repo, &c[0..2]).await;
}

#[tokio::test]
async fn wasteful_hot_packs_are_rewritten_and_others_keep_their_waste() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..8).map(chunk).collect();
    // Half dead.
    let (wasteful, _) = store_pack(&repo, &c[0..4]).await;
    // A quarter dead: at the threshold, kept.
    let (fine, _) = store_pack(&repo, &c[4..8]).await;
    point(&repo, 1, &[&c[0..2], &c[4..7]].concat()).await;
    mem.clock().advance(Duration::days(40));
    // Standard-IA: 30 days minimum, hot.
    let ia = PackOptions {
        rules: class_rules("STANDARD_IA", &BTreeMap::new()),
        max_waste_pct: 25,
        ..Default::default()
    };
    let r = gc(&repo, ia).await;
    assert_eq!(
        (r.packs_rewritten, r.packs_written, r.packs_deleted),
        (1, 1, 1),
        "{r:?}"
    );
    assert!(!exists(&mem, &keys::pack(&wasteful)).await);
    assert!(exists(&mem, &keys::pack(&fine)).await);
    assert!(r.live_bytes_moved > 0 && r.waste_bytes_left > 0, "{r:?}");
    readable(&repo, &[&c[0..2], &c[4..7]].concat()).await;

    // Archive classes are never rewritten: the waste is reported.
    let (mem, repo) = self::repo().await;
    let (archived, _) = store_pack(&repo, &c[0..4]).await;
    point(&repo, 1, &c[0..1]).await;
    mem.clock().advance(Duration::days(400));
    let deep = PackOptions {
        rules: class_rules("DEEP_ARCHIVE", &BTreeMap::new()),
        max_waste_pct: 25,
        ..Default::default()
    };
    let r = gc(&repo, deep).await;
    assert_eq!(r.packs_rewritten, 0, "{r:?}");
    assert!(exists(&mem, &keys::pack(&archived)).await);
    assert!(r.waste_bytes_left > 0);
}

/// A sweep killed after any of its steps (repack and new index written;
/// some batches deleted) leaves every point readable, and the next sweep
/// finishes the work. Among the packs: a live chunk's two copies, the
/// kept one in a pack rewritten (three quarters dead) and the other in a
/// pack deleted (`gc/copies.rs`).
#[tokio::test]
async fn a_crash_between_any_two_steps_loses_nothing() {
    for crash_after in 0..9 {
        let (mem, repo) = repo().await;
        let c: Vec<Chunk> = (0..13).map(chunk).collect();
        store_pack(&repo, &c[8..12]).await;
        mem.clock().advance(Duration::minutes(1));
        store_pack(&repo, &[c[12].clone(), c[8].clone()]).await;
        store_pack(&repo, &c[0..4]).await;
        store_pack(&repo, &c[4..6]).await;
        store_pack(&repo, &c[6..8]).await;
        let live: Vec<Chunk> = [&c[0..1], &c[6..9]].concat();
        point(&repo, 1, &live).await;
        mem.clock().advance(Duration::hours(1));
        let mut s = Sweep::begin(&repo, false).await.unwrap().with_batch_size(1);
        s.read_leases().await.unwrap();
        s.read_points().await.unwrap();
        s.mark().await.unwrap();
        s.prepare_packs().await.unwrap();
        let all = s.pack_candidates();
        // Batches of one: packs first, then index objects.
        for (i, c) in all.into_iter().enumerate() {
            if i >= crash_after {
                break;
            }
            let mut batch = vec![c];
            s.begin_batch(&mut batch).await.unwrap();
            s.commit_batch(&mut batch).await.unwrap();
        }
        drop(s);
        readable(&repo, &live).await;
        // The next sweep (after the dead one's marker went stale).
        mem.clock().advance(Duration::hours(1));
        gc(&repo, PackOptions::default()).await;
        readable(&repo, &live).await;
        let left = gc(&repo, PackOptions::default()).await;
        assert_eq!(
            left.packs_deleted + left.index_objects_deleted,
            0,
            "{left:?}"
        );
        // One copy of c8 left, in the rewrite of its kept copy's pack.
        let left = super::test_packs::places(&repo, &c[8].0).await;
        assert_eq!(left, 1, "crash after {crash_after}");
    }
}

/// The index objects of any ids backups write are distributed into shard
/// objects once the index is large enough (shards shrunk to 16 entries
/// here), every chunk stays findable, a second gc changes nothing, the
/// objects of a prefix are merged before they pile up, and a shallower
/// shard is rewritten deeper when the index grows.
#[tokio::test]
async fn the_index_is_merged_into_shards_that_stay_few_and_findable() {
    let (mem, repo) = repo().await;
    let shards = |n| PackOptions {
        shard_entries: n,
        ..Default::default()
    };
    let listed = |mem: Arc<MemBackend>| async move {
        let keys: Vec<String> = crate::placement::sweep::list_index(&*mem)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.key)
            .collect();
        keys.into_iter()
            .map(|k| keys::parse_index_in(&k).unwrap().0)
            .collect::<Vec<String>>()
    };
    let mut all: Vec<Chunk> = Vec::new();
    for round in 0..9u8 {
        let c: Vec<Chunk> = (0..8).map(|i| chunk(round * 8 + i)).collect();
        store_pack(&repo, &c).await;
        // One point per round: all of them stay.
        point(&repo, round, &c).await;
        all.extend(c);
        mem.clock().advance(Duration::hours(1));
        let r = gc(&repo, shards(16)).await;
        assert_eq!(r.packs_deleted, 0, "{r:?}");
        let prefixes = listed(mem.clone()).await;
        // From 24 entries on, everything is in shards of one digit (up to
        // 256 entries), and no prefix holds SHARD_OBJECTS objects after a
        // gc.
        let depth = if round < 2 { 0 } else { 1 };
        assert!(
            prefixes.iter().all(|p| p.len() == depth),
            "{round}: {prefixes:?}"
        );
        for p in &prefixes {
            let n = prefixes.iter().filter(|q| *q == p).count();
            assert!(n < super::census::SHARD_OBJECTS, "{p}: {n}");
        }
        readable(&repo, &all).await;
    }
    mem.clock().advance(Duration::hours(1));
    let again = gc(&repo, shards(16)).await;
    assert_eq!(
        again.index_objects_deleted + again.index_objects_written,
        0,
        "{again:?}"
    );
    // Grown 16-fold as far as the sweep can tell: rewritten two deep.
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, shards(2)).await;
    assert!(r.index_objects_written > 0, "{r:?}");
    let prefixes = listed(mem.clone()).await;
    assert!(prefixes.iter().all(|p| p.len() == 2), "{prefixes:?}");
    readable(&repo, &all).await;
}

/// The live parts of packs rewritten in one sweep share a new pack (each
/// used to become a pack of its own, so packs only ever shrank).
#[tokio::test]
async fn rewritten_packs_share_new_packs() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..12).map(chunk).collect();
    let mut old = Vec::new();
    for p in c.chunks(4) {
        old.push(store_pack(&repo, p).await.0);
    }
    // Half of each pack dead.
    let live: Vec<Chunk> = c.chunks(4).flat_map(|p| p[..2].to_vec()).collect();
    point(&repo, 1, &live).await;
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (r.packs_rewritten, r.packs_written, r.packs_deleted),
        (3, 1, 3),
        "{r:?}"
    );
    for p in &old {
        assert!(!exists(&mem, &keys::pack(p)).await);
    }
    readable(&repo, &live).await;
}

/// On a store nearly out of room for chunk data (a full local disk keeps
/// a reserve for metadata only), gc still deletes what is wholly dead and
/// plans no rewrite that does not fit: a rewrite writes new packs before
/// the old ones go, so one that failed stopped the sweep before it
/// deleted anything. With room again, the next gc rewrites.
#[tokio::test]
async fn a_store_without_room_for_rewrites_still_frees_dead_packs() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..8).map(chunk).collect();
    // Half dead: due for a rewrite; and wholly dead.
    let (wasteful, _) = store_pack(&repo, &c[0..4]).await;
    let (dead, _) = store_pack(&repo, &c[4..8]).await;
    point(&repo, 1, &c[0..2]).await;
    mem.clock().advance(Duration::hours(1));
    mem.limit_data_room(Some(100));
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(r.held, None, "{r:?}");
    assert!(!exists(&mem, &keys::pack(&dead)).await, "{r:?}");
    assert!(exists(&mem, &keys::pack(&wasteful)).await);
    assert_eq!(
        (r.packs_rewritten, r.packs_not_rewritten_no_space),
        (0, 1),
        "{r:?}"
    );
    assert_eq!(r.room_for_data, Some(100));
    assert!(r.waste_bytes_left > 0, "{r:?}");
    readable(&repo, &c[0..2]).await;

    mem.limit_data_room(None);
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!((r.packs_rewritten, r.packs_deleted), (1, 1), "{r:?}");
    assert!(!exists(&mem, &keys::pack(&wasteful)).await);
    readable(&repo, &c[0..2]).await;
}
