use std::sync::Arc;

use super::*;
use crate::codec::Codec;
use crate::id::ObjectId;
use crate::placement::pack::PackWriter;
use crate::testing::MemBackend;

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
    let mut r = Repacker::new(Arc::new(Codec::plain()), 1 << 30);
    let moved = r
        .take(&*mem, &name, 1 << 20, live, |_| false)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(moved.chunks, 3);
    assert!(moved.packs.is_empty(), "not full yet");
    let last = r.finish(&*mem).await.unwrap().unwrap();
    let new = mem.get(&keys::pack(&last.name)).await.unwrap();
    for (old, e) in entries[..3].iter().zip(&last.entries) {
        assert_eq!(old.id, e.id);
        assert_eq!(
            bytes.slice(old.range().start as usize..old.range().end as usize),
            new.slice(e.range().start as usize..e.range().end as usize)
        );
    }
    // A pack gone is no error: there is nothing to move.
    let mut r = Repacker::new(Arc::new(Codec::plain()), 1 << 30);
    let gone = r
        .take(&*mem, &ObjectId::of(b"x"), 1 << 20, live, |_| false)
        .await;
    assert!(gone.unwrap().unwrap().is_none());
    assert!(r.finish(&*mem).await.unwrap().is_none());
}

/// The live parts of several rewritten packs fill shared packs of about
/// the target size, not one small pack each; a chunk two of them hold
/// goes into a new pack once (a pack listing a chunk twice is damage).
#[tokio::test]
async fn live_parts_of_several_packs_share_new_packs() {
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::default());
    let codec = Codec::plain();
    // Incompressible blobs of 3,000 bytes.
    let blob = |p: u8, t: u8| -> Vec<u8> {
        let mut d = vec![0u8; 3000];
        blake3::Hasher::new()
            .update(&[p, t])
            .finalize_xof()
            .fill(&mut d);
        d
    };
    let shared = blob(99, 99);
    let mut names = Vec::new();
    let mut live_ids = vec![ObjectId::of(&shared)];
    for p in 0u8..4 {
        let mut w = PackWriter::new();
        // The first two packs hold the same live chunk (first, so that
        // the second meets it while the first's copy is in the open pack).
        if p < 2 {
            w.push(&codec, ObjectId::of(&shared), &shared, 3).unwrap();
        }
        for t in 0u8..4 {
            let d = blob(p, t);
            let id = ObjectId::of(&d);
            w.push(&codec, id, &d, 3).unwrap();
            if t % 2 == 0 {
                live_ids.push(id);
            }
        }
        let (name, bytes, _) = w.finish(&codec);
        mem.put(&keys::pack(&name), bytes, crate::backend::PutMode::Create)
            .await
            .unwrap();
        names.push(name);
    }
    let live = |id: &ObjectId| live_ids.contains(id);
    // Room for five blobs: packs fill in the middle of a take.
    let mut r = Repacker::new(Arc::new(Codec::plain()), 5 * 3000);
    let mut packs = Vec::new();
    for n in &names {
        let m = r
            .take(&*mem, n, 1 << 20, live, |_| false)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        packs.extend(m.packs);
    }
    assert!(!packs.is_empty(), "filled during a take");
    packs.extend(r.finish(&*mem).await.unwrap());
    assert!(packs.len() < names.len(), "{} new packs", packs.len());
    let mut ids: Vec<ObjectId> = Vec::new();
    for p in &packs {
        // Each new pack reads back (no chunk listed twice).
        let bytes = mem.get(&keys::pack(&p.name)).await.unwrap();
        let key = keys::pack(&p.name);
        decode_trailer(&codec, &key, &bytes, bytes.len() as u64, 1 << 20).unwrap();
        ids.extend(p.entries.iter().map(|e| e.id));
    }
    ids.sort_unstable();
    live_ids.sort_unstable();
    assert_eq!(ids.len(), 9, "8 live chunks and the shared one: {ids:?}");
    ids.dedup();
    assert_eq!(ids, live_ids);
}
