use std::sync::Arc;

use super::*;
use crate::backend::PutMode;
use crate::id::ObjectId;
use crate::placement::chunk_id;
use crate::placement::lookup::ChunkIndex;
use crate::placement::packer::{PackUploads, Packer, StoredPack};
use crate::placement::test_codec as plain;
use crate::testing::MemBackend;

fn chunk(i: u32) -> Vec<u8> {
    let mut c = i.to_le_bytes().to_vec();
    c.extend((0..5000u32).map(|j| (j / 9) as u8));
    c
}

/// 60 chunks in packs of about 3 chunks' compressed size.
async fn store_packs(backend: Arc<MemBackend>) -> (Vec<Vec<u8>>, Vec<StoredPack>) {
    let chunks: Vec<Vec<u8>> = (0..60).map(chunk).collect();
    let mut packer = Packer::new(plain(), 300, 3);
    let mut uploads = PackUploads::new(backend, 2);
    for c in &chunks {
        if let Some(p) = packer.push(chunk_id(c), c).unwrap() {
            uploads.send(p).await.unwrap();
        }
    }
    if let Some(p) = packer.seal() {
        uploads.send(p).await.unwrap();
    }
    (chunks, uploads.finish().await.unwrap())
}

#[tokio::test]
async fn the_index_is_rebuilt_from_pack_trailers_after_it_was_deleted() {
    let backend = Arc::new(MemBackend::default());
    let (chunks, packs) = store_packs(backend.clone()).await;
    assert!(packs.len() > 5);
    let progress = Progress::default();
    let first = rebuild(backend.clone(), &plain(), 1 << 20, &progress)
        .await
        .unwrap();
    assert_eq!((first.packs, first.chunks), (packs.len() as u64, 60));
    assert_eq!(first.written.len(), 1);
    let (key, stored) = first.written[0].clone();
    assert_eq!(stored, Stored::New);
    // The same packs give the same object: nothing new is written.
    let again = rebuild(backend.clone(), &plain(), 1 << 20, &progress)
        .await
        .unwrap();
    assert_eq!(again.written, vec![(key.clone(), Stored::Existed)]);
    backend.delete_many(&[key]).await.unwrap();
    assert_eq!(
        ChunkIndex::open(backend.clone(), plain(), None)
            .await
            .unwrap()
            .objects(),
        0
    );
    rebuild(backend.clone(), &plain(), 1 << 20, &progress)
        .await
        .unwrap();
    let index = ChunkIndex::open(backend.clone(), plain(), None)
        .await
        .unwrap();
    let ids: Vec<ObjectId> = chunks.iter().map(|c| chunk_id(c)).collect();
    let found = index.lookup(&ids).await.unwrap();
    for (id, f) in ids.iter().zip(found) {
        let f = f.unwrap();
        let pack = packs.iter().find(|p| p.name == f.pack).unwrap();
        assert!(pack.entries.contains(&f.entry) && f.entry.id == *id);
    }
}

#[tokio::test]
async fn a_damaged_pack_is_reported_and_the_others_indexed() {
    let backend = Arc::new(MemBackend::default());
    let (_, packs) = store_packs(backend.clone()).await;
    let key = keys::pack(&packs[0].name);
    let whole = backend.get(&key).await.unwrap();
    backend
        .put(&key, whole.slice(..whole.len() - 10), PutMode::Overwrite)
        .await
        .unwrap();
    let out = rebuild(backend, &plain(), 1 << 20, &Progress::default())
        .await
        .unwrap();
    assert_eq!(out.packs, packs.len() as u64 - 1);
    assert_eq!(out.chunks, 60 - packs[0].entries.len() as u64);
    assert_eq!(out.damaged.len(), 1);
    assert_eq!(out.damaged[0].0, key);
}

#[tokio::test]
async fn a_cancelled_rebuild_writes_nothing() {
    let backend = Arc::new(MemBackend::default());
    store_packs(backend.clone()).await;
    let progress = Progress::default();
    progress.cancel();
    let err = rebuild(backend.clone(), &plain(), 1 << 20, &progress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(
        ChunkIndex::open(backend, plain(), None)
            .await
            .unwrap()
            .objects(),
        0
    );
}

/// A damaged index object under the very name the rebuild gives its own
/// (one backup's object, or gc's merge of all of them, holds exactly the
/// entries a rebuild finds): "already stored" must not be taken for the
/// object made, or `index rebuild` leaves the damage it is run to mend.
#[tokio::test]
async fn a_damaged_index_object_under_the_rebuilt_name_is_written_again() {
    let backend = Arc::new(MemBackend::default());
    let (chunks, _) = store_packs(backend.clone()).await;
    let progress = Progress::default();
    let first = rebuild(backend.clone(), &plain(), 1 << 20, &progress)
        .await
        .unwrap();
    let (key, _) = first.written[0].clone();
    let mut bytes = backend.get(&key).await.unwrap().to_vec();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    backend
        .put(&key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();

    rebuild(backend.clone(), &plain(), 1 << 20, &progress)
        .await
        .unwrap();
    let stored = backend.get(&key).await.unwrap();
    crate::placement::index::IndexHead::decode_all(&plain(), &key, &stored).unwrap();
    let index = ChunkIndex::open(backend.clone(), plain(), None)
        .await
        .unwrap();
    let ids: Vec<ObjectId> = chunks.iter().map(|c| chunk_id(c)).collect();
    let found = index.lookup(&ids).await.unwrap();
    assert!(found.iter().all(Option::is_some), "chunks not found");
}
