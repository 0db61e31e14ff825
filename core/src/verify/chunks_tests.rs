//! verify's chunk check in bounded memory: the same report with the
//! referenced chunks in memory and in local files, for a clean
//! repository and for one that lost chunks; an index object a gc
//! replaces while verify reads it, and one that is damaged.

use std::sync::Arc;

use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::{all_entries, pack_entries, shard_objects, store_pack, write_point};
use crate::id::{ObjectId, PointId};
use crate::lease::ObjectRef;
use crate::placement::index::IndexHead;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::{MemBackend, ReplaceSim};
use crate::verify::{VerifyOptions, verify_with};

fn chunk(i: usize) -> (ObjectId, Vec<u8>) {
    let data: Vec<u8> = (0..2000u32)
        .map(|b| (b as usize * 7 + i * 131) as u8)
        .chain((i as u32).to_le_bytes())
        .collect();
    (ObjectId::of(&data), data)
}

async fn repo() -> Repository {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    Repository::init(mem, cfg).await.unwrap()
}

/// Budgets: in memory, and 64 bytes (8 prefixes: many runs and parts).
const BUDGETS: [usize; 2] = [64 << 20, 64];

#[tokio::test]
async fn a_clean_repository_is_clean_in_memory_and_spilled() {
    let repo = repo().await;
    let chunks: Vec<_> = (0..60).map(chunk).collect();
    store_pack(&repo, &chunks).await;
    // Two points sharing 20 chunks (a node holds at most 65 entries here).
    let p1: PointId = "20260101T000001Z-0001".parse().unwrap();
    let p2: PointId = "20260101T000002Z-0002".parse().unwrap();
    write_point(&repo, "a", &p1, &chunks[..40]).await;
    write_point(&repo, "a", &p2, &chunks[20..]).await;
    for budget in BUDGETS {
        let progress = Arc::new(Progress::default());
        let r = verify_with(&repo, &[], &VerifyOptions::default(), progress, budget)
            .await
            .unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.chunks_referenced, 60);
        assert_eq!(r.nodes, 2);
        assert_eq!(r.objects_missing, 0);
    }
}

#[tokio::test]
async fn lost_chunks_are_found_and_placed_in_memory_and_spilled() {
    let repo = repo().await;
    let chunks: Vec<_> = (0..60).map(chunk).collect();
    // Chunks 40 and 41 never stored, 59 neither.
    let stored: Vec<_> = chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| ![40, 41, 59].contains(i))
        .map(|(_, c)| c.clone())
        .collect();
    store_pack(&repo, &stored).await;
    let p1: PointId = "20260101T000001Z-0001".parse().unwrap();
    let p2: PointId = "20260101T000002Z-0002".parse().unwrap();
    write_point(&repo, "a", &p1, &chunks[..30]).await;
    write_point(&repo, "a", &p2, &chunks[30..]).await;
    let lost: Vec<ObjectRef> = [40, 41, 59]
        .iter()
        .map(|&i| ObjectRef::Chunk(chunks[i].0))
        .collect();
    let at = |i: usize| -> u64 { chunks[30..i].iter().map(|(_, d)| d.len() as u64).sum() };
    for budget in BUDGETS {
        let progress = Arc::new(Progress::default());
        let r = verify_with(&repo, &[], &VerifyOptions::default(), progress, budget)
            .await
            .unwrap();
        assert!(!r.is_clean());
        assert_eq!(r.chunks_referenced, 60);
        let mut missing = r.missing.clone();
        missing.sort();
        let mut want = lost.clone();
        want.sort();
        assert_eq!(missing, want, "budget {budget}");
        // Only the second point is damaged: chunks 40-41 and 59.
        assert_eq!(r.damaged.len(), 1, "{:?}", r.damaged);
        let d = &r.damaged[0];
        assert_eq!(d.point, format!("a@{p2}"));
        assert_eq!(
            d.disks[0].ranges,
            vec![(at(40), at(42)), (at(59), at(60))],
            "budget {budget}"
        );
        assert!(d.disks[0].problems[0].contains("missing"), "{:?}", d.disks);
        assert!(r.bad_objects.is_empty());
    }
}

#[tokio::test]
async fn chunks_of_an_index_object_a_gc_replaces_while_read_are_not_missing() {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let chunks: Vec<_> = (0..60).map(chunk).collect();
    let (_, victim) = store_pack(&repo, &chunks).await;
    let p1: PointId = "20260101T000001Z-0001".parse().unwrap();
    write_point(&repo, "a", &p1, &chunks[..40]).await;
    // A gc folds the only index object into shards while verify reads
    // it: its first block read finds it gone. Its chunks are looked for
    // again in the objects written since, not reported missing.
    let replacement = shard_objects(&repo, &all_entries(&repo).await)
        .into_iter()
        .map(|(_, key, bytes)| (key, bytes))
        .collect();
    let sim = Arc::new(ReplaceSim::new(mem.clone(), &victim, 2, replacement));
    let repo = Repository::open(sim.clone()).await.unwrap();
    let progress = Arc::new(Progress::default());
    let r = verify_with(&repo, &[], &VerifyOptions::default(), progress, BUDGETS[1])
        .await
        .unwrap();
    assert!(sim.replaced());
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.chunks_referenced, 40);
    // The index check listed the shards after the gc: all checked.
    assert_eq!(r.index_entries_checked, 60);
}

#[tokio::test]
async fn a_damaged_index_object_is_reported_and_its_chunks_missing_when_points_are_named() {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let chunks: Vec<_> = (0..60).map(chunk).collect();
    store_pack(&repo, &chunks[..30]).await;
    let (_, damaged) = store_pack(&repo, &chunks[30..]).await;
    let p1: PointId = "20260101T000001Z-0001".parse().unwrap();
    write_point(&repo, "a", &p1, &chunks).await;
    let mut bytes = mem.get(&damaged).await.unwrap().to_vec();
    let (head, _) = IndexHead::decode_all(repo.codec(), &damaged, &bytes).unwrap();
    bytes[head.block_range(0).start as usize + 40] ^= 1;
    mem.delete_many(std::slice::from_ref(&damaged))
        .await
        .unwrap();
    mem.put(&damaged, bytes.into(), PutMode::Create)
        .await
        .unwrap();
    let named = [("a".parse().unwrap(), p1.clone())];
    for budget in BUDGETS {
        let progress = Arc::new(Progress::default());
        let r = verify_with(&repo, &named, &VerifyOptions::default(), progress, budget)
            .await
            .unwrap();
        assert_eq!(r.index_problems_found, 1, "{:?}", r.index_problems);
        assert_eq!(r.index_problems[0].index, damaged);
        // The chunks only that object placed are missing (an index
        // rebuild finds them again); the others are found.
        assert_eq!(r.objects_missing, 30, "budget {budget}");
        let mut missing = r.missing.clone();
        missing.sort();
        let mut want: Vec<ObjectRef> = chunks[30..].iter().map(|c| ObjectRef::Chunk(c.0)).collect();
        want.sort();
        assert_eq!(missing, want);
    }
}

#[tokio::test]
async fn read_data_finds_a_bad_chunk_and_reads_only_referenced_ones_in_memory_and_spilled() {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let chunks: Vec<_> = (0..60).map(chunk).collect();
    let (pack, _) = store_pack(&repo, &chunks).await;
    let p1: PointId = "20260101T000001Z-0001".parse().unwrap();
    write_point(&repo, "a", &p1, &chunks[..40]).await;
    // Chunk 10's stored bytes spoiled.
    let e = pack_entries(&repo, &pack)
        .await
        .into_iter()
        .find(|e| e.entry.id == chunks[10].0)
        .unwrap();
    let key = crate::keys::pack(&pack);
    let mut bytes = mem.get(&key).await.unwrap().to_vec();
    bytes[(e.entry.offset + u64::from(e.entry.stored_len) / 2) as usize] ^= 1;
    mem.delete_many(std::slice::from_ref(&key)).await.unwrap();
    mem.put(&key, bytes.into(), PutMode::Create).await.unwrap();
    let at = |i: usize| -> u64 { chunks[..i].iter().map(|(_, d)| d.len() as u64).sum() };
    let opts = VerifyOptions {
        read_data: true,
        ..VerifyOptions::default()
    };
    for budget in BUDGETS {
        let progress = Arc::new(Progress::default());
        let r = verify_with(&repo, &[], &opts, progress, budget)
            .await
            .unwrap();
        // The 40 referenced chunks, not the pack's 20 others.
        assert_eq!(r.chunks_read, 40, "budget {budget}");
        assert_eq!(r.objects_damaged, 1, "{:?}", r.bad_objects);
        assert_eq!(r.damaged.len(), 1);
        assert_eq!(r.damaged[0].disks[0].ranges, vec![(at(10), at(11))]);
    }
    // Half of them by id.
    let opts = VerifyOptions {
        read_data: true,
        subset: Some(crate::verify::Subset::Part { n: 1, m: 2 }),
        ..VerifyOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let r = verify_with(&repo, &[], &opts, progress, BUDGETS[1])
        .await
        .unwrap();
    assert!(r.chunks_read > 0 && r.chunks_read < 40, "{}", r.chunks_read);
}
