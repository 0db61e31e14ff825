use std::sync::Arc;

use super::*;
use crate::backend::PutMode;
use crate::codec::Codec;
use crate::placement::index::{self, IndexEntry};
use crate::placement::pack::PackEntry;
use crate::placement::test_codec as plain;
use crate::testing::MemBackend;
use bytes::Bytes;

fn id(k: u64) -> ObjectId {
    let mut b = [0u8; 32];
    b.copy_from_slice(blake3::hash(&k.to_le_bytes()).as_bytes());
    ObjectId::from_bytes(b)
}

fn entry(k: u64) -> IndexEntry {
    IndexEntry {
        pack: ObjectId::from_bytes([(k % 7) as u8; 32]),
        entry: PackEntry {
            id: id(k),
            offset: k * 10,
            stored_len: 10,
            plain_len: 20,
        },
    }
}

/// Stores an index object of the chunks `ks`; returns its key.
async fn put_index(backend: &MemBackend, ks: std::ops::Range<u64>) -> String {
    let object = index::encode(&Codec::plain(), ks.map(entry).collect());
    let key = keys::index(&index::index_name(&object));
    backend.put(&key, object, PutMode::Create).await.unwrap();
    key
}

fn gets(b: &MemBackend) -> u64 {
    b.request_counts().get("get").copied().unwrap_or(0)
}

/// 100 ids of the first object, 50 of the second, 50 in neither.
fn batch() -> Vec<ObjectId> {
    (0..100)
        .map(|k| id(k * 40))
        .chain((0..50).map(|k| id(10_000 + k * 50)))
        .chain((0..50).map(|k| id(90_000 + k)))
        .collect()
}

fn check(found: &[Option<IndexEntry>]) {
    for (k, f) in found.iter().enumerate() {
        let want = match k {
            0..100 => Some(entry(k as u64 * 40)),
            100..150 => Some(entry(10_000 + (k as u64 - 100) * 50)),
            _ => None,
        };
        assert_eq!(*f, want, "id {k} of the batch");
    }
}

#[tokio::test]
async fn a_batch_is_answered_from_every_index_object_with_few_block_reads() {
    let backend = Arc::new(MemBackend::default());
    put_index(&backend, 0..5000).await; // 5 blocks
    put_index(&backend, 10_000..13_000).await; // 3 blocks
    let index = ChunkIndex::open(backend.clone(), plain(), None)
        .await
        .unwrap();
    assert_eq!(index.objects(), 2);
    let before = gets(&backend);
    check(&index.lookup(&batch()).await.unwrap());
    // Sorted ids read each block about once: at most 2 x 8 blocks, far
    // below one read per id (200).
    let reads = gets(&backend) - before;
    assert!(reads <= 16, "{reads} block reads");
}

#[tokio::test]
async fn blocks_decoded_once_are_not_read_again_by_later_batches() {
    // A restore looks up one segment's ids at a time; each batch falls in
    // the same blocks. Without a cache directory, the second batch must
    // still read nothing.
    let backend = Arc::new(MemBackend::default());
    put_index(&backend, 0..5000).await;
    put_index(&backend, 10_000..13_000).await;
    let index = ChunkIndex::open(backend.clone(), plain(), None)
        .await
        .unwrap();
    check(&index.lookup(&batch()).await.unwrap());
    let before = gets(&backend);
    check(&index.lookup(&batch()).await.unwrap());
    let other: Vec<ObjectId> = (0..100).map(|k| id(k * 40 + 1)).collect();
    let found = index.lookup(&other).await.unwrap();
    assert!(found.iter().all(Option::is_some));
    assert_eq!(gets(&backend) - before, 0);
}

#[test]
fn decoded_blocks_stay_under_their_bound_oldest_out_first() {
    let block = |n: u64| Arc::new((0..n).map(entry).collect::<Vec<_>>());
    let mut d = Decoded::default();
    d.keep((0, 0), block(4), 10);
    d.keep((0, 1), block(4), 10);
    d.keep((0, 1), block(4), 10); // twice: kept once
    assert_eq!(d.entries, 8);
    d.keep((1, 0), block(5), 10); // drops (0, 0) only
    assert!(d.get((0, 0)).is_none() && d.get((0, 1)).is_some());
    assert_eq!(d.entries, 9);
    d.keep((2, 0), block(11), 10); // larger than the bound: not kept,
    assert!(d.get((2, 0)).is_none()); // and the others stay
    assert!(d.get((0, 1)).is_some() && d.get((1, 0)).is_some());
    assert_eq!(d.entries, 9);
}

#[tokio::test]
async fn the_cache_saves_block_reads_and_a_bad_cached_block_is_bypassed() {
    let backend = Arc::new(MemBackend::default());
    put_index(&backend, 0..5000).await;
    put_index(&backend, 10_000..13_000).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Some(dir.path().to_path_buf());
    let first = ChunkIndex::open(backend.clone(), plain(), cache.clone())
        .await
        .unwrap();
    check(&first.lookup(&batch()).await.unwrap());
    // A second process: heads from the store (2 reads), blocks from the cache.
    let before = gets(&backend);
    let second = ChunkIndex::open(backend.clone(), plain(), cache.clone())
        .await
        .unwrap();
    check(&second.lookup(&batch()).await.unwrap());
    assert_eq!(gets(&backend) - before, 2);
    // Every cached block damaged: still right answers, from the store.
    let mut files = 0;
    for object in std::fs::read_dir(dir.path().join("index")).unwrap() {
        for block in std::fs::read_dir(object.unwrap().path()).unwrap() {
            std::fs::write(block.unwrap().path(), b"not a block").unwrap();
            files += 1;
        }
    }
    let before = gets(&backend);
    let third = ChunkIndex::open(backend.clone(), plain(), cache)
        .await
        .unwrap();
    check(&third.lookup(&batch()).await.unwrap());
    assert!(gets(&backend) - before > 2 && files > 0);
}

#[tokio::test]
async fn a_damaged_index_object_is_damage_naming_it() {
    let backend = Arc::new(MemBackend::default());
    let key = put_index(&backend, 0..3000).await;
    let mut bytes = backend.get(&key).await.unwrap().to_vec();
    // In the last block (the table of packs, after it, is gc's).
    let at = bytes.len() - 400;
    bytes[at] ^= 1;
    backend
        .put(&key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();
    let index = ChunkIndex::open(backend.clone(), plain(), None)
        .await
        .unwrap();
    let all: Vec<ObjectId> = (0..3000).map(id).collect();
    // A lookup passes the damaged block over: its ids are not found,
    // the others are, and why is kept (readers name it, backups warn).
    assert_eq!(index.damage_seen(), None);
    let found = index.lookup(&all).await.unwrap();
    let missing = found.iter().filter(|f| f.is_none()).count();
    assert!(missing > 0 && missing <= 1024, "{missing}");
    let why = index.damage_seen().unwrap();
    assert!(why.contains(&key), "{why}");
    // Those that judge a chunk by all its places fail.
    let err = index.lookup_all(&all).await.unwrap_err();
    assert!(err.is_damage() && err.to_string().contains(&key), "{err}");
    // A head that lies about its size is passed over the same way: the
    // open goes on (it stopped every restore and backup until stop 50).
    backend
        .put(&key, Bytes::from_static(b"XFI2"), PutMode::Overwrite)
        .await
        .unwrap();
    let index = ChunkIndex::open(backend, plain(), None).await.unwrap();
    let found = index.lookup(&all).await.unwrap();
    assert!(found.iter().all(Option::is_none));
    let why = index.damage_seen().unwrap();
    assert!(why.contains(&key), "{why}");
    let err = index.lookup_all(&all).await.unwrap_err();
    assert!(err.is_damage() && err.to_string().contains(&key), "{err}");
}

/// Opening reads the heads of the index objects backups wrote since the
/// last gc (one per backup: a fleet's day can leave a hundred) together,
/// not one round trip after another; what it finds is the same.
#[tokio::test]
async fn opening_reads_the_index_heads_together() {
    let gauge = Arc::new(crate::testing::InFlight::default());
    for k in 0..6 {
        put_index(&gauge.inner, k * 100..k * 100 + 50).await;
    }
    let index = ChunkIndex::open(gauge.clone(), plain(), None)
        .await
        .unwrap();
    let most = gauge.most();
    assert!(most > 1, "head reads in flight at once: {most}");
    assert_eq!(index.objects(), 6);
    let found = index.lookup(&[id(0), id(549), id(550)]).await.unwrap();
    assert_eq!(found, [Some(entry(0)), Some(entry(549)), None]);
}
