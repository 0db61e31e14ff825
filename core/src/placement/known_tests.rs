use std::sync::Arc;

use super::*;
use crate::backend::Backend;
use crate::codec::Codec;
use crate::placement::chunk_id;
use crate::placement::packer::{PackUploads, Packer};
use crate::placement::test_codec as plain;
use crate::testing::MemBackend;

/// Incompressible, distinct per `i`.
fn noise(i: u32) -> Vec<u8> {
    crate::testing::seeded_bytes(32 << 10, u64::from(i))
}

/// One disk's backup as the wiring is to do it: find what is stored,
/// pack only the rest, then write the session's index object. Returns
/// the bytes of packs uploaded.
async fn back_up(backend: &Arc<MemBackend>, disk: &[Vec<u8>]) -> u64 {
    let b: Arc<dyn Backend> = backend.clone();
    let known = KnownChunks::new(Arc::new(
        ChunkIndex::open(b.clone(), plain(), None).await.unwrap(),
    ));
    let mut packer = Packer::new(plain(), 256 << 10, 3);
    let mut uploads = PackUploads::new(b.clone(), 2);
    let mut packs = Vec::new();
    // A segment at a time: 8 chunks, looked up as one batch.
    for segment in disk.chunks(8) {
        let ids: Vec<ObjectId> = segment.iter().map(|c| chunk_id(c)).collect();
        let found = known.find(&ids).await.unwrap();
        for ((id, c), hit) in ids.iter().zip(segment).zip(found) {
            if hit.is_some() {
                continue;
            }
            if let Some(p) = packer.push(*id, c).unwrap() {
                uploads.send(p).await.unwrap();
            }
        }
        for p in uploads.take_stored() {
            known.note_stored(&p);
            packs.push(p);
        }
    }
    if let Some(p) = packer.seal() {
        uploads.send(p).await.unwrap();
    }
    packs.extend(uploads.finish().await.unwrap());
    crate::placement::index_write::store_entries(&*b, &Codec::plain(), "", entries_of(&packs))
        .await
        .unwrap();
    packs.iter().map(|p| p.size).sum()
}

#[tokio::test]
async fn a_clone_of_a_stored_template_uploads_only_what_it_adds() {
    let backend = Arc::new(MemBackend::default());
    let template: Vec<Vec<u8>> = (0..64).map(noise).collect();
    let first = back_up(&backend, &template).await;
    assert!(first >= 64 * (32 << 10));
    // The clone: the template with 4 chunks changed and the template's
    // first 8 chunks again at its end (met again within the session).
    let mut clone = template.clone();
    for (k, i) in [3usize, 20, 41, 60].into_iter().zip(1000..) {
        clone[k] = noise(i);
    }
    clone.extend(template[..8].iter().cloned());
    let puts_before = backend.request_counts()["put"];
    let uploaded = back_up(&backend, &clone).await;
    // 4 new chunks of 32 KiB, stored as they are: at most 1.1x that.
    let new_bytes = 4 * (32 << 10) as u64;
    assert!(
        uploaded >= new_bytes && uploaded * 10 <= new_bytes * 11,
        "{uploaded}"
    );
    // One pack and one index object.
    assert_eq!(backend.request_counts()["put"] - puts_before, 2);
}

#[tokio::test]
async fn a_chunk_of_an_own_stored_pack_is_found_without_the_index() {
    let backend = Arc::new(MemBackend::default());
    let b: Arc<dyn Backend> = backend.clone();
    let known = KnownChunks::new(Arc::new(
        ChunkIndex::open(b.clone(), plain(), None).await.unwrap(),
    ));
    let mut packer = Packer::new(plain(), 1, 0);
    let c = noise(1);
    let sealed = packer.push(chunk_id(&c), &c).unwrap().unwrap();
    let mut uploads = PackUploads::new(b, 1);
    uploads.send(sealed).await.unwrap();
    let stored = uploads.finish().await.unwrap();
    // Not found before its pack is stored and noted.
    assert_eq!(known.find(&[chunk_id(&c)]).await.unwrap(), vec![None]);
    known.note_stored(&stored[0]);
    let gets = backend.request_counts().get("get").copied().unwrap_or(0);
    let hit = known.find(&[chunk_id(&c)]).await.unwrap()[0].unwrap();
    assert_eq!(
        (hit.pack, hit.entry),
        (stored[0].name, stored[0].entries[0])
    );
    assert_eq!(
        backend.request_counts().get("get").copied().unwrap_or(0),
        gets
    );
}

/// Packs every chunk of `disk` (no lookup) into packs of about `target`
/// bytes and indexes them; returns the packs' names and the index
/// object's key.
async fn store_all(
    backend: &Arc<MemBackend>,
    disk: &[Vec<u8>],
    target: u64,
) -> (Vec<ObjectId>, String) {
    let b: Arc<dyn Backend> = backend.clone();
    let mut packer = Packer::new(plain(), target, 3);
    let mut uploads = PackUploads::new(b.clone(), 2);
    for c in disk {
        if let Some(p) = packer.push(chunk_id(c), c).unwrap() {
            uploads.send(p).await.unwrap();
        }
    }
    if let Some(p) = packer.seal() {
        uploads.send(p).await.unwrap();
    }
    let packs = uploads.finish().await.unwrap();
    let keys =
        crate::placement::index_write::store_entries(&*b, &Codec::plain(), "", entries_of(&packs))
            .await
            .unwrap();
    assert_eq!(keys.len(), 1);
    (packs.iter().map(|p| p.name).collect(), keys[0].0.clone())
}

async fn delete_packs(backend: &MemBackend, packs: &[ObjectId]) {
    let keys: Vec<String> = packs.iter().map(crate::keys::pack).collect();
    backend.delete_many(&keys).await.unwrap();
}

/// The index names packs a sweep deleted (an index object younger than
/// its cutoff keeps naming them): a chunk there is found at its other
/// place, or not at all (stored anew), never in a pack that is gone. Each
/// pack is HEADed once per session.
#[tokio::test]
async fn a_chunk_whose_pack_is_gone_is_found_elsewhere_or_not_at_all() {
    let backend = Arc::new(MemBackend::default());
    let disk: Vec<Vec<u8>> = (0..16).map(noise).collect();
    let ids: Vec<ObjectId> = disk.iter().map(|c| chunk_id(c)).collect();
    let one = store_all(&backend, &disk, 1 << 20).await;
    let two = store_all(&backend, &disk, 64 << 10).await;
    // Objects are consulted in name order: the one consulted first names
    // the packs that go, so a lookup's first place is gone.
    let (first, second) = if one.1 < two.1 {
        (one.0, two.0)
    } else {
        (two.0, one.0)
    };
    assert!(first.iter().all(|p| !second.contains(p)));
    let b: Arc<dyn Backend> = backend.clone();
    let open = async || {
        KnownChunks::new(Arc::new(
            ChunkIndex::open(b.clone(), plain(), None).await.unwrap(),
        ))
    };
    delete_packs(&backend, &first).await;
    let known = open().await;
    let found = known.find(&ids).await.unwrap();
    assert!(
        found
            .iter()
            .all(|h| h.is_some_and(|e| second.contains(&e.pack))),
        "{found:?}"
    );
    let heads = backend.request_counts()["head"];
    assert_eq!(known.find(&ids).await.unwrap(), found);
    assert_eq!(backend.request_counts()["head"], heads, "HEADed again");
    delete_packs(&backend, &second).await;
    let found = open().await.find(&ids).await.unwrap();
    assert!(found.iter().all(Option::is_none), "{found:?}");
}
