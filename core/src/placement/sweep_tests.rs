use std::sync::Arc;

use super::*;
use crate::codec::Codec;
use crate::id::ObjectId;
use crate::placement::index::IndexEntry;
use crate::placement::pack::PackWriter;
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

/// Two places of one chunk both stay in what gc writes; the same place
/// read twice is one entry.
#[tokio::test]
async fn the_writer_keeps_every_copy_once() {
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::default());
    let (p1, p2) = (ObjectId::of(b"1"), ObjectId::of(b"2"));
    let codec = Arc::new(Codec::plain());
    let mut w = IndexWriter::new(mem.clone(), codec.clone());
    for e in [entry(1, p1), entry(1, p1), entry(1, p2)] {
        w.push(e).await.unwrap();
    }
    let keys = w.finish().await.unwrap();
    let bytes = mem.get(&keys[0]).await.unwrap();
    let (head, entries) = IndexHead::decode_all(&codec, &keys[0], &bytes).unwrap();
    assert!(!entries.is_empty() && entries.len() <= 2);
    assert!(head.packs().len() <= 2);
}

/// A repack copies exactly the live blobs, verbatim, and names them by
/// the pack's own trailer.
#[tokio::test]
async fn live_blobs_move_verbatim() {
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::default());
    let chunks: Vec<(ObjectId, Vec<u8>)> = (0u8..6)
        .map(|t| {
            let d = vec![t; 3000 + usize::from(t)];
            (ObjectId::of(&d), d)
        })
        .collect();
    let codec = Codec::plain();
    let mut w = PackWriter::new();
    for (id, d) in &chunks {
        w.push(&codec, *id, d, 3).unwrap();
    }
    let (name, bytes, entries) = w.finish(&codec);
    mem.put(
        &keys::pack(&name),
        bytes.clone(),
        crate::backend::PutMode::Create,
    )
    .await
    .unwrap();
    let live = |id: &ObjectId| chunks[..3].iter().any(|c| c.0 == *id);
    let moved = move_live(&*mem, &codec, &name, 1 << 20, 1 << 30, live)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.chunks, 3);
    assert_eq!(moved.packs.len(), 1);
    let new = mem.get(&keys::pack(&moved.packs[0].name)).await.unwrap();
    for (old, e) in entries[..3].iter().zip(&moved.packs[0].entries) {
        assert_eq!(old.id, e.id);
        assert_eq!(
            bytes.slice(old.range().start as usize..old.range().end as usize),
            new.slice(e.range().start as usize..e.range().end as usize)
        );
    }
    // A pack gone is no error: there is nothing to move.
    let gone = move_live(&*mem, &codec, &ObjectId::of(b"x"), 1 << 20, 1 << 30, live).await;
    assert!(gone.unwrap().is_none());
}
