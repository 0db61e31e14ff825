//! Chunks opened straight into a buffer: where each lands, what is given
//! back in a buffer of its own, and what is left to the caller.

use std::sync::Arc;

use bytes::Bytes;

use super::{Ask, Got, fetch_into};
use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::store_pack;
use crate::id::ObjectId;
use crate::keys;
use crate::repo::Repository;
use crate::testing::{FaultPlan, FaultyBackend, MemBackend};

async fn repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    (mem.clone(), Repository::init(mem, cfg).await.unwrap())
}

/// Chunk `tag` of `len` bytes (text-like, so compressed) and its id.
fn chunk(repo: &Repository, tag: u8, len: usize) -> (ObjectId, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| b"xfull "[i % 6] ^ tag).collect();
    (repo.codec().chunk_id(&data), data)
}

fn ask(id: ObjectId, slot: Option<std::ops::Range<usize>>) -> Ask {
    Ask { id, slot }
}

#[tokio::test]
async fn chunks_land_in_their_slots_and_the_rest_in_their_own_buffers() {
    let (_, repo) = repo().await;
    let (a, b, c) = (
        chunk(&repo, 1, 3000),
        chunk(&repo, 2, 5000),
        chunk(&repo, 3, 700),
    );
    store_pack(&repo, &[a.clone(), b.clone()]).await;
    store_pack(&repo, std::slice::from_ref(&c)).await;
    let index = repo.chunks().open_index().await.unwrap();
    // b twice in slots, a once in a slot, c without one and a once more
    // without one.
    let asks = vec![
        ask(b.0, Some(0..5000)),
        ask(a.0, Some(5000..8000)),
        ask(c.0, None),
        ask(b.0, Some(8000..13000)),
        ask(a.0, None),
    ];
    let placed = fetch_into(
        &**repo.backend(),
        repo.codec(),
        &index,
        asks,
        vec![0xEE; 13_100],
    )
    .await
    .unwrap();
    assert!(placed.bytes > 0);
    let buf = &placed.buf;
    assert_eq!(&buf[..5000], &b.1[..]);
    assert_eq!(&buf[5000..8000], &a.1[..]);
    assert_eq!(&buf[8000..13000], &b.1[..]);
    assert!(
        buf[13000..].iter().all(|&x| x == 0xEE),
        "nothing else written"
    );
    let got: Vec<String> = placed.got.iter().map(|g| format!("{g:?}")).collect();
    assert!(matches!(placed.got[0], Got::Placed), "{got:?}");
    assert!(matches!(placed.got[1], Got::Placed), "{got:?}");
    assert!(
        matches!(&placed.got[2], Got::Own(v) if *v == c.1),
        "{got:?}"
    );
    assert!(matches!(placed.got[3], Got::Placed), "{got:?}");
    assert!(
        matches!(&placed.got[4], Got::Own(v) if *v == a.1),
        "{got:?}"
    );
}

#[tokio::test]
async fn damage_and_misfits_are_left_to_the_caller() {
    let (mem, repo) = repo().await;
    let (a, b, c, d) = (
        chunk(&repo, 1, 3000),
        chunk(&repo, 2, 4000),
        chunk(&repo, 3, 2000),
        chunk(&repo, 4, 1000),
    );
    store_pack(&repo, &[a.clone(), b.clone()]).await;
    let (gone, _) = store_pack(&repo, std::slice::from_ref(&c)).await;
    let index = repo.chunks().open_index().await.unwrap();
    // a's blob damaged in its pack, c's pack gone, d never stored.
    let place = index.lookup(&[a.0]).await.unwrap()[0].unwrap();
    let key = keys::pack(&place.pack);
    let mut pack = mem.get(&key).await.unwrap().to_vec();
    pack[place.entry.range().end as usize - 1] ^= 1;
    mem.put(&key, Bytes::from(pack), PutMode::Overwrite)
        .await
        .unwrap();
    mem.delete_many(&[keys::pack(&gone)]).await.unwrap();
    let asks = vec![
        ask(a.0, Some(0..3000)),
        ask(b.0, Some(3000..7000)),
        ask(c.0, Some(7000..9000)),
        ask(d.0, Some(9000..10000)),
        // A slot of the wrong length: opened into a buffer of its own
        // (the caller compares it with its node and calls it damage).
        ask(b.0, Some(10000..10010)),
    ];
    let placed = fetch_into(
        &**repo.backend(),
        repo.codec(),
        &index,
        asks,
        vec![0; 10010],
    )
    .await
    .unwrap();
    let got: Vec<String> = placed.got.iter().map(|g| format!("{g:?}")).collect();
    assert!(matches!(placed.got[0], Got::Failed), "{got:?}");
    assert!(matches!(placed.got[1], Got::Placed), "{got:?}");
    assert_eq!(&placed.buf[3000..7000], &b.1[..]);
    assert!(matches!(placed.got[2], Got::Failed), "{got:?}");
    assert!(matches!(placed.got[3], Got::Failed), "{got:?}");
    assert!(
        matches!(&placed.got[4], Got::Own(v) if *v == b.1),
        "{got:?}"
    );

    // A slot past the buffer is the caller's bug, refused before reading.
    let e = fetch_into(
        &**repo.backend(),
        repo.codec(),
        &index,
        vec![ask(b.0, Some(0..4000))],
        vec![0; 100],
    )
    .await
    .unwrap_err();
    assert!(
        e.error.to_string().contains("past the buffer"),
        "{}",
        e.error
    );
}

#[tokio::test]
async fn a_store_that_fails_fails_the_fetch_naming_a_chunk() {
    let (mem, repo) = repo().await;
    let a = chunk(&repo, 1, 3000);
    store_pack(&repo, std::slice::from_ref(&a)).await;
    let index = repo.chunks().open_index().await.unwrap();
    let down = FaultyBackend::new(
        mem,
        FaultPlan {
            outage_after: Some(0),
            only_prefix: Some("packs/".into()),
            ..FaultPlan::default()
        },
    );
    let e = fetch_into(
        &down,
        repo.codec(),
        &index,
        vec![ask(a.0, Some(0..3000))],
        vec![0; 3000],
    )
    .await
    .unwrap_err();
    assert_eq!(e.chunk, Some(a.0));
    assert!(!e.error.is_damage(), "{}", e.error);
}

/// More runs than are read at once (one pack each), one of them gone:
/// every other chunk lands in its slot, in whatever order runs arrive.
#[tokio::test]
async fn many_runs_are_opened_as_they_arrive() {
    let (mem, repo) = repo().await;
    let chunks: Vec<_> = (0..12)
        .map(|t| chunk(&repo, t, 1000 + 10 * t as usize))
        .collect();
    let mut packs = Vec::new();
    for c in &chunks {
        packs.push(store_pack(&repo, std::slice::from_ref(c)).await.0);
    }
    mem.delete_many(&[keys::pack(&packs[5])]).await.unwrap();
    let index = repo.chunks().open_index().await.unwrap();
    let mut at = 0;
    let mut asks = Vec::new();
    for c in &chunks {
        asks.push(ask(c.0, Some(at..at + c.1.len())));
        at += c.1.len();
    }
    let placed = fetch_into(&**repo.backend(), repo.codec(), &index, asks, vec![0; at])
        .await
        .unwrap();
    let mut at = 0;
    for (t, c) in chunks.iter().enumerate() {
        let g = &placed.got[t];
        if t == 5 {
            assert!(matches!(g, Got::Failed), "{t}: {g:?}");
        } else {
            assert!(matches!(g, Got::Placed), "{t}: {g:?}");
            assert_eq!(&placed.buf[at..at + c.1.len()], &c.1[..], "{t}");
        }
        at += c.1.len();
    }
}
