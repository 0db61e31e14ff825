use std::sync::Arc;

use super::*;
use crate::backend::PutMode;
use crate::codec::Codec;
use crate::placement::chunk_id;
use crate::placement::pack::PackWriter;
use crate::placement::test_codec as plain;
use crate::testing::MemBackend;

/// Distinct for every `i` (its first 4 bytes), compressible after.
fn chunk(i: u32, len: usize) -> Vec<u8> {
    let mut c = i.to_le_bytes().to_vec();
    c.extend((4..len).map(|j| (j / 7) as u8));
    c
}

/// Stores one pack of `n` chunks of `len` bytes; returns its name, the
/// chunks and their entries.
async fn stored_pack(
    backend: &MemBackend,
    n: u32,
    len: usize,
) -> (ObjectId, Vec<Vec<u8>>, Vec<PackEntry>) {
    let chunks: Vec<Vec<u8>> = (0..n).map(|i| chunk(i, len)).collect();
    let mut w = PackWriter::new();
    for c in &chunks {
        w.push(&Codec::plain(), chunk_id(c), c, 3).unwrap();
    }
    let (name, bytes, entries) = w.finish(&Codec::plain());
    backend
        .put(&keys::pack(&name), bytes, PutMode::Create)
        .await
        .unwrap();
    (name, chunks, entries)
}

fn wanted(pack: ObjectId, entries: &[PackEntry]) -> Vec<IndexEntry> {
    entries
        .iter()
        .map(|&entry| IndexEntry { pack, entry })
        .collect()
}

fn gets(b: &MemBackend) -> u64 {
    b.request_counts().get("get").copied().unwrap_or(0)
}

#[tokio::test]
async fn a_whole_pack_is_read_in_one_request_and_every_chunk_checked() {
    let backend = MemBackend::default();
    let (name, chunks, entries) = stored_pack(&backend, 40, 3000).await;
    let runs = coalesce(wanted(name, &entries), MAX_GAP, MAX_RUN);
    assert_eq!(runs.len(), 1);
    let before = gets(&backend);
    let read = read_run(&backend, &plain(), &runs[0]).await.unwrap();
    assert_eq!(gets(&backend) - before, 1);
    for ((e, plain), c) in read.into_iter().zip(&chunks) {
        assert_eq!(e.id, chunk_id(c));
        assert_eq!(&plain.unwrap(), c);
    }
}

#[test]
fn runs_split_at_gaps_and_at_the_size_bound_and_read_a_chunk_once() {
    let pack = ObjectId::from_bytes([7; 32]);
    let entry = |k: u64| PackEntry {
        id: ObjectId::from_bytes([k as u8; 32]),
        offset: k * 100,
        stored_len: 100,
        plain_len: 100,
    };
    let all: Vec<PackEntry> = (0..20).map(entry).collect();
    // Chunks 0..5 and 15..20 of one pack, a gap of 1,000 bytes between.
    let mut some = wanted(pack, &all[..5]);
    some.extend(wanted(pack, &all[15..]));
    some.extend(wanted(pack, &all[2..3]));
    assert_eq!(
        coalesce(some.clone(), 1000, 1 << 20).len(),
        1,
        "gap read through"
    );
    let runs = coalesce(some, 999, 1 << 20);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].range, 0..500);
    assert_eq!(
        runs[0].entries.len(),
        5,
        "chunk 2, wanted twice, is read once"
    );
    assert_eq!(runs[1].range, 1500..2000);
    // At most 300 bytes a run: 20 chunks of 100 make 7 runs.
    let runs = coalesce(wanted(pack, &all), 0, 300);
    assert_eq!(runs.len(), 7);
    assert!(runs.iter().all(|r| r.range.end - r.range.start <= 300));
    // Two ids an index places at one place are both read (a damaged or
    // forged index): each is opened under its own id.
    let mut alias = all[3];
    alias.id = ObjectId::from_bytes([99; 32]);
    let mut both = wanted(pack, &all[3..4]);
    both.extend(wanted(pack, &[alias]));
    let ids: Vec<ObjectId> = coalesce(both, 1000, 1 << 20)
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| e.id))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&alias.id) && ids.contains(&all[3].id));
    // Two packs never share a run.
    let mut two = wanted(pack, &all[..2]);
    two.extend(wanted(ObjectId::from_bytes([8; 32]), &all[2..4]));
    assert_eq!(coalesce(two, 1 << 20, 1 << 20).len(), 2);
}

#[tokio::test]
async fn a_damaged_blob_fails_its_chunk_only_naming_pack_and_chunk() {
    let backend = MemBackend::default();
    let (name, _, entries) = stored_pack(&backend, 10, 3000).await;
    let key = keys::pack(&name);
    let mut bytes = backend.get(&key).await.unwrap().to_vec();
    let bad = entries[4];
    bytes[(bad.offset + u64::from(bad.stored_len) / 2) as usize] ^= 0x40;
    backend
        .put(&key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();
    let runs = coalesce(wanted(name, &entries), MAX_GAP, MAX_RUN);
    let read = read_run(&backend, &plain(), &runs[0]).await.unwrap();
    for (e, r) in read {
        if e == bad {
            let err = r.unwrap_err();
            assert!(err.is_damage(), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&key) && msg.contains(&bad.id.short()), "{msg}");
        } else {
            r.unwrap();
        }
    }
}

#[tokio::test]
async fn a_missing_or_short_pack_is_damage_naming_it() {
    let backend = MemBackend::default();
    let (name, _, entries) = stored_pack(&backend, 10, 3000).await;
    let key = keys::pack(&name);
    let whole = backend.get(&key).await.unwrap();
    backend
        .put(&key, whole.slice(..1000), PutMode::Overwrite)
        .await
        .unwrap();
    let runs = coalesce(wanted(name, &entries), MAX_GAP, MAX_RUN);
    let err = read_run(&backend, &plain(), &runs[0]).await.unwrap_err();
    assert!(err.is_damage() && err.to_string().contains(&key), "{err}");
    backend
        .delete_many(std::slice::from_ref(&key))
        .await
        .unwrap();
    let err = read_run(&backend, &plain(), &runs[0]).await.unwrap_err();
    assert!(
        err.is_damage() && err.to_string().contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn a_trailer_is_one_ranged_read_and_two_when_longer_than_the_guess() {
    let backend = Arc::new(MemBackend::default());
    let (name, _, entries) = stored_pack(&backend, 40, 3000).await;
    let size = backend.head(&keys::pack(&name)).await.unwrap().size;
    let before = gets(&backend);
    assert_eq!(
        read_trailer(&*backend, &Codec::plain(), &name, size, 1 << 20)
            .await
            .unwrap(),
        entries
    );
    assert_eq!(gets(&backend) - before, 1);
    // 3,000 entries: a trailer of 144 KiB.
    let (name, _, entries) = stored_pack(&backend, 3000, 8).await;
    let size = backend.head(&keys::pack(&name)).await.unwrap().size;
    let before = gets(&backend);
    assert_eq!(
        read_trailer(&*backend, &Codec::plain(), &name, size, 1 << 20)
            .await
            .unwrap(),
        entries
    );
    assert_eq!(gets(&backend) - before, 2);
}

proptest::proptest! {
    /// Whatever is wanted, in any order with repeats: each wanted chunk is
    /// in exactly one run, runs stay within one pack and the size bound
    /// (or hold one larger blob), and every run's entries lie inside it.
    #[test]
    fn runs_cover_each_wanted_chunk_once_within_the_bounds(
        picks in proptest::collection::vec((0u8..3, 0usize..60), 0..120),
        max_gap in 0u64..2000,
        max_run in 1u64..5000,
    ) {
        let len = |k: usize| 50 + (k as u32 * 37) % 400;
        let mut entries: Vec<PackEntry> = Vec::new();
        let mut offset = 0;
        for k in 0..60 {
            entries.push(PackEntry {
                id: ObjectId::from_bytes([k as u8; 32]),
                offset,
                stored_len: len(k),
                plain_len: 1000,
            });
            offset += u64::from(len(k));
        }
        let want: Vec<IndexEntry> = picks
            .iter()
            .map(|&(p, k)| IndexEntry { pack: ObjectId::from_bytes([p; 32]), entry: entries[k] })
            .collect();
        let runs = coalesce(want.clone(), max_gap, max_run);
        let mut got: Vec<(ObjectId, u64)> = Vec::new();
        for r in &runs {
            let size = r.range.end - r.range.start;
            proptest::prop_assert!(size <= max_run || r.entries.len() == 1);
            for e in &r.entries {
                proptest::prop_assert!(r.range.start <= e.offset && e.range().end <= r.range.end);
                got.push((r.pack, e.offset));
            }
        }
        let mut expect: Vec<(ObjectId, u64)> = want.iter().map(|w| (w.pack, w.entry.offset)).collect();
        expect.sort_unstable();
        expect.dedup();
        got.sort_unstable();
        proptest::prop_assert_eq!(got, expect);
    }
}
