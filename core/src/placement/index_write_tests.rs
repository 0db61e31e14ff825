use std::sync::Arc;

use super::*;
use crate::backend::Backend;
use crate::id::ObjectId;
use crate::placement::index::IndexHead;
use crate::placement::lookup::ChunkIndex;
use crate::placement::pack::PackEntry;
use crate::placement::sweep::{BLOCKS_PER_READ, EntryReader, list_index, read_head};
use crate::testing::MemBackend;

fn entry(i: u32, pack: ObjectId) -> IndexEntry {
    IndexEntry {
        pack,
        entry: PackEntry {
            id: ObjectId::of(&i.to_le_bytes()),
            offset: u64::from(i) * 10,
            stored_len: 10,
            plain_len: 20,
        },
    }
}

/// Streaming reads every entry once, a few blocks per request, and the
/// writer splits what it writes into objects of the bound it was given.
#[tokio::test]
async fn index_objects_are_read_and_written_in_bounded_parts() {
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::default());
    let pack = ObjectId::of(b"p");
    let n = 5 * 1024 * BLOCKS_PER_READ as u32 / 4;
    let codec = Arc::new(Codec::plain());
    let mut w = IndexWriter::with_max(mem.clone(), codec.clone(), 30_000);
    for i in 0..n {
        w.push(entry(i, pack)).await.unwrap();
    }
    let written = w.finish().await.unwrap();
    assert_eq!(written.len(), (n as usize).div_ceil(30_000));
    let mut seen = 0usize;
    let mut largest_read = 0usize;
    for (name, meta) in list_index(&*mem).await.unwrap() {
        let object = read_head(&*mem, &codec, name, meta).await.unwrap();
        let mut r = EntryReader::new(&object);
        while let Some(run) = r.next(&*mem).await.unwrap() {
            largest_read = largest_read.max(run.len());
            seen += run.len();
        }
    }
    assert_eq!(seen, n as usize);
    assert!(largest_read <= BLOCKS_PER_READ * index::BLOCK_ENTRIES);
}

/// Two places of one chunk both stay findable in what is written (an
/// object holds one place per chunk: the second goes to another object);
/// the same place read twice is one entry. Before, one place was dropped:
/// a chunk stored again after damage could lose its good copy's entry.
#[tokio::test]
async fn the_writer_keeps_every_copy_once() {
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::default());
    let (p1, p2) = (ObjectId::of(b"1"), ObjectId::of(b"2"));
    let codec = Arc::new(Codec::plain());
    let mut w = IndexWriter::new(mem.clone(), codec.clone());
    for e in [entry(1, p1), entry(1, p1), entry(1, p2), entry(2, p1)] {
        w.push(e).await.unwrap();
    }
    let keys = w.finish().await.unwrap();
    assert_eq!(keys.len(), 2);
    let mut all = Vec::new();
    for key in &keys {
        let bytes = mem.get(key).await.unwrap();
        all.extend(IndexHead::decode_all(&codec, key, &bytes).unwrap().1);
    }
    assert_eq!(all.len(), 3);
    let index = ChunkIndex::open(mem.clone(), codec.clone(), None)
        .await
        .unwrap();
    let id = entry(1, p1).entry.id;
    let mut places: Vec<ObjectId> = index.lookup_all(&[id]).await.unwrap()[0]
        .iter()
        .map(|e| e.pack)
        .collect();
    places.sort();
    let mut want = vec![p1, p2];
    want.sort();
    assert_eq!(places, want);
}

/// A sharded writer given sorted entries writes one object per prefix,
/// each holding only its prefix's ids, and a lookup finds every entry
/// reading only the objects of the ids' prefixes.
#[tokio::test]
async fn sharded_objects_hold_their_prefix_and_are_read_only_when_needed() {
    let mem = Arc::new(MemBackend::default());
    let backend: Arc<dyn Backend> = mem.clone();
    let codec = Arc::new(Codec::plain());
    let pack = ObjectId::of(b"p");
    let mut entries: Vec<IndexEntry> = (0..3000).map(|i| entry(i, pack)).collect();
    entries.sort_by_key(|e| e.entry.id);
    let mut w = IndexWriter::sharded(backend.clone(), codec.clone(), 1);
    for e in &entries {
        w.push(*e).await.unwrap();
    }
    let written = w.finish().await.unwrap();
    assert_eq!(written.len(), 16);
    for key in &written {
        let (prefix, _) = keys::parse_index_in(key).unwrap();
        let bytes = mem.get(key).await.unwrap();
        let (_, held) = IndexHead::decode_all(&codec, key, &bytes).unwrap();
        assert!(held.iter().all(|e| shard::holds(&prefix, &e.entry.id)));
    }
    let gets = |m: &MemBackend| m.request_counts().get("get").copied().unwrap_or(0);
    let before = gets(&mem);
    let index = ChunkIndex::open(backend.clone(), codec.clone(), None)
        .await
        .unwrap();
    // Open read no shard head.
    assert_eq!(gets(&mem), before);
    let one = entries[10];
    let found = index.lookup(&[one.entry.id]).await.unwrap();
    assert_eq!(found[0], Some(one));
    // One head and one block of one shard.
    assert_eq!(gets(&mem) - before, 2);
    let ids: Vec<ObjectId> = entries.iter().map(|e| e.entry.id).collect();
    let all = index.lookup(&ids).await.unwrap();
    assert!(all.iter().zip(&entries).all(|(f, e)| *f == Some(*e)));
    assert_eq!(index.entries().await.unwrap(), 3000);
}

/// Encrypted shard objects are sealed under their key: one renamed to
/// another shard does not open.
#[tokio::test]
async fn a_sealed_shard_object_moved_to_another_prefix_is_damage() {
    let mem = Arc::new(MemBackend::default());
    let codec = Arc::new(Codec::encrypted(
        crate::crypto::MasterKeys::generate(),
        crate::crypto::DataCipher::Aes256Gcm,
    ));
    let pack = ObjectId::of(b"p");
    let e = entry(7, pack);
    let prefix = shard::prefix_of(&e.entry.id, 2);
    let written = store_entries(&*mem, &codec, &prefix, vec![e])
        .await
        .unwrap();
    let (key, _) = &written[0];
    let bytes = mem.get(key).await.unwrap();
    assert!(IndexHead::decode_all(&codec, key, &bytes).is_ok());
    let (_, name) = keys::parse_index_in(key).unwrap();
    let other = keys::index_in(if prefix == "00" { "01" } else { "00" }, &name);
    let err = IndexHead::decode_all(&codec, &other, &bytes).unwrap_err();
    assert!(err.is_damage(), "{err}");
}
