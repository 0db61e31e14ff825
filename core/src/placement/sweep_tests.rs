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
