use std::sync::Arc;

use super::*;
use crate::codec::Codec;
use crate::keys;
use crate::placement::index_write::store_entries;
use crate::placement::pack::PackEntry;
use crate::placement::sweep::{list_index, read_head};
use crate::testing::MemBackend;

fn entry(i: u32, pack: u8) -> IndexEntry {
    IndexEntry {
        pack: ObjectId::from_bytes([pack; 32]),
        entry: PackEntry {
            id: ObjectId::of(&i.to_le_bytes()),
            offset: u64::from(i) * 10,
            stored_len: 10,
            plain_len: 20,
        },
    }
}

async fn objects(mem: &MemBackend) -> Vec<IndexObject> {
    let codec = Arc::new(Codec::plain());
    let mut out = Vec::new();
    for (name, meta) in list_index(mem).await.unwrap() {
        out.push(read_head(mem, &codec, name, meta).await.unwrap());
    }
    out
}

async fn drain(mem: &MemBackend, objects: &[IndexObject]) -> Result<Vec<IndexEntry>> {
    let mut merge = Merge::new(objects.iter().collect());
    let mut out = Vec::new();
    while let Some(e) = merge.next(mem).await? {
        out.push(e);
    }
    Ok(out)
}

/// Objects of any ids and shard objects of two depths merge into one
/// sorted stream holding every place once.
#[tokio::test]
async fn objects_of_any_ids_and_shards_merge_sorted_and_once() {
    let mem = MemBackend::default();
    let codec = Codec::plain();
    store_entries(&mem, &codec, "", (0..2000).map(|i| entry(i, 1)).collect())
        .await
        .unwrap();
    // Overlapping: the same places again, and second places of some.
    store_entries(
        &mem,
        &codec,
        "",
        (1500..2500).map(|i| entry(i, 1)).collect(),
    )
    .await
    .unwrap();
    store_entries(&mem, &codec, "", (0..100).map(|i| entry(i, 2)).collect())
        .await
        .unwrap();
    for depth in [1, 2] {
        let mut by_prefix: std::collections::BTreeMap<String, Vec<IndexEntry>> = Default::default();
        for i in (3000..4000).filter(|i| i % depth == 0) {
            let e = entry(i, 3);
            by_prefix
                .entry(shard::prefix_of(&e.entry.id, depth as usize))
                .or_default()
                .push(e);
        }
        for (p, es) in by_prefix {
            store_entries(&mem, &codec, &p, es).await.unwrap();
        }
    }
    let objects = objects(&mem).await;
    let got = drain(&mem, &objects).await.unwrap();
    assert!(
        got.windows(2)
            .all(|w| (w[0].entry.id, w[0].pack) < (w[1].entry.id, w[1].pack))
    );
    let mut want: Vec<(ObjectId, ObjectId)> = (0..2500)
        .map(|i| entry(i, 1))
        .chain((0..100).map(|i| entry(i, 2)))
        .chain((3000..4000).map(|i| entry(i, 3)))
        .map(|e| (e.entry.id, e.pack))
        .collect();
    want.sort();
    let got: Vec<_> = got.iter().map(|e| (e.entry.id, e.pack)).collect();
    assert_eq!(got, want);
}

/// A shard object holding an id of another shard (a hostile writer) is
/// damage naming it, not a stream out of order.
#[tokio::test]
async fn an_entry_outside_its_shard_is_damage_naming_the_object() {
    let mem = MemBackend::default();
    let codec = Codec::plain();
    let e = entry(5, 1);
    let wrong = if shard::prefix_of(&e.entry.id, 1) == "0" {
        "1"
    } else {
        "0"
    };
    let written = store_entries(&mem, &codec, wrong, vec![e]).await.unwrap();
    store_entries(&mem, &codec, "", (0..50).map(|i| entry(i, 2)).collect())
        .await
        .unwrap();
    let objects = objects(&mem).await;
    let err = drain(&mem, &objects).await.unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert!(err.to_string().contains(&written[0].0), "{err}");
    assert!(keys::parse_index_in(&written[0].0).is_some());
}

/// A merge of many shard objects holds the blocks of the few it is
/// reading, not of every object it finished: an object read to its end
/// keeps no buffer (each kept its last run before, 1.4 MiB each: 5.6 GB
/// when a census merged 4,096 shards, found by `core/examples/gc_scale.rs`).
#[tokio::test]
async fn finished_objects_hold_no_entries() {
    let mem = MemBackend::default();
    let codec = Codec::plain();
    let mut by_prefix: std::collections::BTreeMap<String, Vec<IndexEntry>> = Default::default();
    for i in 0..20_000 {
        let e = entry(i, 1);
        by_prefix
            .entry(shard::prefix_of(&e.entry.id, 2))
            .or_default()
            .push(e);
    }
    for (p, es) in by_prefix {
        store_entries(&mem, &codec, &p, es).await.unwrap();
    }
    let objects = objects(&mem).await;
    assert_eq!(objects.len(), 256);
    let mut merge = Merge::new(objects.iter().collect());
    let mut most = 0;
    let mut n = 0;
    while merge.next(&mem).await.unwrap().is_some() {
        most = most.max(merge.held());
        n += 1;
    }
    assert_eq!(n, 20_000);
    // One block per shard (78 entries, read into a buffer of a block's
    // 1,024): a few shards' buffers at most, not 256.
    assert!(most <= 4 * BLOCK_ENTRIES, "{most} entries held");
    assert_eq!(merge.held(), 0);
}
