//! Salvage of packs whose trailer cannot be read: what the index places
//! there and opens is stored again and findable from the new packs'
//! trailers; what does not open is named; a pack is whole only when every
//! index object was read.

use std::sync::Arc;

use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::{
    all_entries, pack_entries, read_chunk, small_chunk, small_repo, spoil, spoil_trailer,
    store_pack,
};
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Removes the pack, as repair's sweep then does.
async fn remove(mem: &MemBackend, pack: &ObjectId) {
    mem.delete_many(&[keys::pack(pack)]).await.unwrap();
}

/// Unencrypted, a pack is named by the hash of its bytes, and its chunks
/// sealed again in order make it again byte for byte: the damaged pack
/// is written over with them (put create-only, "already there" was taken
/// for stored and the damaged pack was to be removed: every chunk lost).
#[tokio::test]
async fn an_unencrypted_pack_made_again_byte_for_byte_is_healed_in_place() {
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..8).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c).await;
    let intact = mem.get(&keys::pack(&a)).await.unwrap();
    spoil_trailer(&mem, &a).await;
    let out = repo
        .chunks()
        .salvage(&[a], 3, &Progress::default())
        .await
        .unwrap();
    assert_eq!((out.stored, out.healed.clone()), (8, vec![a]), "{out:?}");
    assert!(out.whole.is_empty(), "{out:?}");
    assert_eq!(mem.get(&keys::pack(&a)).await.unwrap(), intact);
    for (id, data) in &c {
        assert_eq!(&read_chunk(&repo, id).await.unwrap(), data);
    }
}

/// Encrypted (fresh nonces), the chunks go into a new pack whose trailer
/// lists them, with an index object; the old pack may go.
#[tokio::test]
async fn the_chunks_of_a_pack_whose_trailer_does_not_open_are_stored_again() {
    use crate::crypto::{Argon2Params, Secret};
    let fast = Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let pw = Secret::password(b"pw".to_vec(), "password".to_string());
    let repo = Repository::init_encrypted(mem.clone(), cfg, &pw, fast)
        .await
        .unwrap();
    let c: Vec<_> = (0..12)
        .map(|i| {
            let (_, data) = small_chunk(i);
            (repo.codec().chunk_id(&data), data)
        })
        .collect();
    let (a, _) = store_pack(&repo, &c[..8]).await;
    store_pack(&repo, &c[8..]).await;
    spoil_trailer(&mem, &a).await;
    let out = repo
        .chunks()
        .salvage(&[a], 3, &Progress::default())
        .await
        .unwrap();
    assert_eq!((out.stored, out.damaged.len()), (8, 0), "{out:?}");
    assert_eq!((out.whole.clone(), out.healed.len()), (vec![a], 0));
    remove(&mem, &a).await;
    for (id, data) in &c {
        assert_eq!(&read_chunk(&repo, id).await.unwrap(), data);
    }
    // Listed by the trailers of the packs there now: an index rebuilt
    // from them places every chunk.
    let mut held: Vec<ObjectId> = Vec::new();
    let mut seen = Vec::new();
    for e in all_entries(&repo).await {
        if e.pack != a && !seen.contains(&e.pack) {
            seen.push(e.pack);
            held.extend(
                pack_entries(&repo, &e.pack)
                    .await
                    .iter()
                    .map(|t| t.entry.id),
            );
        }
    }
    for (id, _) in &c {
        assert!(held.contains(id), "{}", id.short());
    }
}

#[tokio::test]
async fn a_chunk_that_does_not_open_there_is_named_and_the_others_move() {
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..6).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c).await;
    spoil(&mem, &repo, &a, &c[2].0).await;
    spoil_trailer(&mem, &a).await;
    let out = repo
        .chunks()
        .salvage(&[a], 3, &Progress::default())
        .await
        .unwrap();
    assert_eq!(out.stored, 5, "{out:?}");
    let damaged: Vec<ObjectId> = out.damaged.iter().map(|(id, _)| *id).collect();
    assert_eq!(damaged, vec![c[2].0]);
    assert_eq!(out.whole, vec![a]);
}

/// An index object that cannot be read may name more chunks in the pack:
/// what the others name is stored again, but the pack is not whole.
#[tokio::test]
async fn with_an_unreadable_index_object_no_pack_is_whole() {
    let (mem, repo) = small_repo().await;
    let c: Vec<_> = (0..6).map(small_chunk).collect();
    let (a, _) = store_pack(&repo, &c[..3]).await;
    let (_b, index_b) = store_pack(&repo, &c[3..]).await;
    spoil_trailer(&mem, &a).await;
    let bytes = mem.get(&index_b).await.unwrap().to_vec();
    mem.delete_many(std::slice::from_ref(&index_b))
        .await
        .unwrap();
    let mut bytes = bytes;
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    mem.put(&index_b, bytes.into(), PutMode::Create)
        .await
        .unwrap();
    let out = repo
        .chunks()
        .salvage(&[a], 3, &Progress::default())
        .await
        .unwrap();
    assert_eq!(out.stored, 3, "{out:?}");
    assert!(out.whole.is_empty(), "{out:?}");
}
