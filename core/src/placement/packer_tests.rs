use std::sync::Arc;

use super::*;
use crate::codec::Codec;
use crate::placement::chunk_id;
use crate::placement::pack_read::read_trailer;
use crate::placement::test_codec as plain;
use crate::testing::MemBackend;

/// Chunks zstd cannot shrink, so stored sizes are predictable.
fn noise(i: u32, len: usize) -> Vec<u8> {
    crate::testing::seeded_bytes(len, u64::from(i))
}

async fn pack_all(backend: Arc<MemBackend>, chunks: &[Vec<u8>], target: u64) -> Vec<StoredPack> {
    let mut packer = Packer::new(plain(), target, 3);
    let mut uploads = PackUploads::new(backend, 2);
    let mut stored = Vec::new();
    for c in chunks {
        if let Some(sealed) = packer.push(chunk_id(c), c).unwrap() {
            uploads.send(sealed).await.unwrap();
        }
        stored.extend(uploads.take_stored());
    }
    if let Some(sealed) = packer.seal() {
        uploads.send(sealed).await.unwrap();
    }
    stored.extend(uploads.finish().await.unwrap());
    stored
}

#[tokio::test]
async fn packs_seal_at_the_target_and_keep_the_chunks_in_order() {
    let backend = Arc::new(MemBackend::default());
    let chunks: Vec<Vec<u8>> = (0..40).map(|i| noise(i, 64 << 10)).collect();
    let target = 512 << 10;
    let mut packs = pack_all(backend.clone(), &chunks, target).await;
    // Uploads may finish in any order; the first entry's place in the
    // disk gives the order back.
    let place = |id: &ObjectId| chunks.iter().position(|c| chunk_id(c) == *id);
    packs.sort_by_key(|p| place(&p.entries[0].id));
    let ids: Vec<ObjectId> = packs
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.id))
        .collect();
    let want: Vec<ObjectId> = chunks.iter().map(|c| chunk_id(c)).collect();
    assert_eq!(ids, want, "every chunk once, in disk order");
    // 40 x 64 KiB (stored, plus a byte each) in packs sealed at 512 KiB:
    // 8 chunks fill one, so 5 packs, one PUT each.
    assert_eq!(packs.len(), 5);
    assert_eq!(backend.request_counts().get("put"), Some(&5));
    for p in &packs {
        assert_eq!(p.stored, Stored::New);
        let trailer = read_trailer(&*backend, &Codec::plain(), &p.name, p.size, 1 << 20)
            .await
            .unwrap();
        assert_eq!(trailer, p.entries, "the trailer says what was packed");
    }
}

#[tokio::test]
async fn a_chunk_given_twice_to_one_pack_is_stored_once() {
    let backend = Arc::new(MemBackend::default());
    let a = noise(1, 1000);
    let b = noise(2, 1000);
    let packs = pack_all(backend, &[a.clone(), b, a], 1 << 20).await;
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0].entries.len(), 2);
}

#[tokio::test]
async fn a_failed_put_is_returned_and_its_chunks_never_reported_stored() {
    use crate::testing::{FaultPlan, FaultyBackend};
    let plan = FaultPlan {
        error_rate: 1.0,
        ..FaultPlan::default()
    };
    let backend = Arc::new(FaultyBackend::new(Arc::new(MemBackend::default()), plan));
    let mut packer = Packer::new(plain(), 1, 0);
    let mut uploads = PackUploads::new(backend, 1);
    let sealed = packer.push(chunk_id(b"x"), b"x").unwrap().unwrap();
    uploads.send(sealed).await.unwrap();
    let sealed = packer.push(chunk_id(b"y"), b"y").unwrap().unwrap();
    // The first put failed: the next send or the finish says so.
    let err = match uploads.send(sealed).await {
        Err(e) => e,
        Ok(()) => uploads.finish().await.unwrap_err(),
    };
    assert!(err.to_string().contains("packs/"), "{err}");
}
