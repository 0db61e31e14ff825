//! `--read-data` pack by pack: a bad copy is damage only when no other
//! copy opens; a pack whose trailer does not open still has its chunks
//! found (through the index) and judged; only wanted chunks are read.

use std::sync::Arc;

use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::{spoil, store_pack};
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::MemBackend;

fn chunk(i: usize) -> (ObjectId, Vec<u8>) {
    let data: Vec<u8> = (0..2500u32)
        .map(|b| (b as usize * 11 + i * 37) as u8)
        .chain((i as u32).to_le_bytes())
        .collect();
    (ObjectId::of(&data), data)
}

async fn repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

async fn replace(mem: &MemBackend, key: &str, bytes: Vec<u8>) {
    mem.delete_many(&[key.to_string()]).await.unwrap();
    mem.put(key, bytes.into(), PutMode::Create).await.unwrap();
}

#[tokio::test]
async fn a_bad_copy_with_a_good_one_elsewhere_is_no_damage_and_a_lone_bad_one_is() {
    let (mem, repo) = repo().await;
    let chunks: Vec<_> = (0..20).map(chunk).collect();
    // Chunks 5-9 are in both packs.
    let (a, _) = store_pack(&repo, &chunks[..10]).await;
    let (b, _) = store_pack(&repo, &chunks[5..]).await;
    spoil(&mem, &repo, &a, &chunks[6].0).await;
    spoil(&mem, &repo, &b, &chunks[15].0).await;
    let progress = Progress::default();
    let out = repo
        .chunks()
        .check_packs(&|_| true, &progress)
        .await
        .unwrap();
    let bad: Vec<ObjectId> = out.bad.keys().copied().collect();
    assert_eq!(bad, vec![chunks[15].0]);
    assert!(
        out.bad[&chunks[15].0].contains(&keys::pack(&b)),
        "{:?}",
        out.bad
    );
    // Every copy read once, pack by pack.
    assert_eq!(out.chunks, 25);
    // Only what is wanted is read.
    let spared = chunks[15].0;
    let out = repo
        .chunks()
        .check_packs(&|id| *id != spared, &progress)
        .await
        .unwrap();
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(out.chunks, 24);
}

#[tokio::test]
async fn a_pack_whose_trailer_does_not_open_has_its_lone_chunks_reported() {
    let (mem, repo) = repo().await;
    let chunks: Vec<_> = (0..20).map(chunk).collect();
    // Chunks 8 and 9 also have a copy in the second pack.
    let (a, _) = store_pack(&repo, &chunks[..10]).await;
    store_pack(&repo, &chunks[8..]).await;
    let key = keys::pack(&a);
    let intact = mem.get(&key).await.unwrap();
    // Cut short before its first chunk ends: no chunk of it reads either
    // (one that still did would be sound, as a restore reads it).
    replace(&mem, &key, intact[..16].to_vec()).await;
    let progress = Progress::default();
    let out = repo
        .chunks()
        .check_packs(&|_| true, &progress)
        .await
        .unwrap();
    let mut bad: Vec<ObjectId> = out.bad.keys().copied().collect();
    bad.sort();
    let mut want: Vec<ObjectId> = chunks[..8].iter().map(|c| c.0).collect();
    want.sort();
    assert_eq!(bad, want);
    assert!(
        out.bad.values().all(|why| why.contains("does not open")),
        "{:?}",
        out.bad
    );
    assert_eq!(out.chunks, 12);
}

/// An index entry of a length no chunk has, beside a sound copy: any
/// copy that opens will do. `check` called the chunk damaged before
/// trying the others, so repair took a sound chunk for damaged on every
/// run, and an index writer could make it so (review 100).
#[tokio::test]
async fn an_oversized_entry_beside_a_sound_copy_is_no_damage() {
    use crate::damage::Health;
    use crate::placement::index::{self, IndexEntry};
    use crate::placement::pack::PackEntry;
    let (mem, repo) = repo().await;
    let chunks: Vec<_> = (0..3).map(chunk).collect();
    let (pack, _) = store_pack(&repo, &chunks).await;
    let max = repo.config().chunking.max;
    let forged = IndexEntry {
        pack,
        entry: PackEntry {
            id: chunks[1].0,
            offset: 0,
            stored_len: 100,
            plain_len: max + 1,
        },
    };
    let object = index::encode(repo.codec(), vec![forged]);
    let key = keys::index(&index::index_name(&object));
    mem.put(&key, object, PutMode::Create).await.unwrap();
    let health = repo.chunks().check(&chunks[1].0, max as usize).await;
    assert_eq!(health.unwrap(), Health::Sound);
}

/// Chunks that did not read from their pack are looked up again in one
/// index, opened once: each look opened the index anew (a listing of
/// `index/` each), thousands for a truncated pack of thousands of
/// chunks (review 100).
#[tokio::test]
async fn chunks_checked_again_share_one_index() {
    let (mem, repo) = repo().await;
    let chunks: Vec<_> = (0..40).map(chunk).collect();
    let (a, _) = store_pack(&repo, &chunks).await;
    // Its trailer reads; no chunk opens.
    for (id, _) in &chunks {
        spoil(&mem, &repo, &a, id).await;
    }
    let lists = || mem.request_counts().get("list").copied().unwrap_or(0);
    let before = lists();
    let out = repo
        .chunks()
        .check_packs(&|_| true, &Progress::default())
        .await
        .unwrap();
    assert_eq!(out.bad.len(), 40);
    let listed = lists() - before;
    assert!(
        listed <= 3,
        "{listed} listings for {} chunks",
        out.bad.len()
    );
}
