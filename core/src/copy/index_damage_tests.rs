//! A damaged or forged source chunk index against `xfull copy` (found by
//! an adversarial review): the copy fails as damage, never commits a
//! point whose chunk it did not read, and allocates nothing for lengths
//! no chunk can have.

use std::sync::Arc;

use futures::TryStreamExt;

use super::tests::{back_up, data, every_point, left_out, pair};
use crate::backend::{Backend, PutMode};
use crate::keys;
use crate::manifest::Manifest;
use crate::placement::index::{self, IndexEntry, IndexHead};
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Every entry of the source's index objects, the objects deleted.
async fn take_index(sb: &MemBackend, source: &Repository) -> Vec<IndexEntry> {
    let metas: Vec<_> = sb.list(keys::INDEX).try_collect().await.unwrap();
    let mut all = Vec::new();
    for m in &metas {
        let bytes = sb.get(&m.key).await.unwrap();
        let (_, entries) = IndexHead::decode_all(source.codec(), &m.key, &bytes).unwrap();
        all.extend(entries);
        sb.delete_many(std::slice::from_ref(&m.key)).await.unwrap();
    }
    all
}

/// `all` as one index object of the source, sums and seals valid.
async fn put_index(sb: &MemBackend, source: &Repository, all: Vec<IndexEntry>) {
    let object = index::encode(source.codec(), all);
    let key = keys::index(&index::index_name(&object));
    sb.put(&key, object, PutMode::Create).await.unwrap();
}

/// A source, a target made like it, and one point of VM "a" in the
/// source (1 MiB of data from `seed`).
async fn set_up(
    seed: u64,
) -> (
    tempfile::TempDir,
    Arc<MemBackend>,
    Repository,
    Repository,
    Manifest,
) {
    let (dir, sb, _tb, source, target) = pair(false).await;
    let a1 = back_up(&source, &dir, "a", &data(1 << 20, seed)).await;
    (dir, sb, source, target, a1)
}

/// A damaged (or forged) source index that gives a second chunk id the
/// place of another chunk's blob. `coalesce` read "a chunk wanted twice"
/// once by (pack, offset), so one of the two ids was neither checked,
/// copied nor reported, and the copy committed a point whose chunk the
/// target lacked (when the alias sorted second). Whichever of the two is
/// aliased, the copy fails as damage naming it and commits nothing.
async fn aliased(alias: usize, real: usize) {
    let (_dir, sb, source, target, a1) = set_up(70).await;

    // Every index entry of the source, rewritten into one object where
    // chunk `alias` claims chunk `real`'s place.
    let mut all = take_index(&sb, &source).await;
    assert!(all.len() >= 2);
    let x = all[real];
    let y_id = all[alias].entry.id;
    all[alias].pack = x.pack;
    all[alias].entry.offset = x.entry.offset;
    all[alias].entry.stored_len = x.entry.stored_len;
    all[alias].entry.plain_len = x.entry.plain_len;
    put_index(&sb, &source, all).await;

    let damage = left_out(&source, &target, every_point(&[&a1])).await;
    // What the target got: its point, if one was committed, lacks it.
    let [why] = &damage[..] else {
        let absent = target.chunks().absent(&[y_id]).await.unwrap();
        panic!(
            "the copy was not refused: {damage:?}; chunk {} (aliased) absent from the target: \
             {}; points in the target: {:?}",
            y_id.short(),
            !absent.is_empty(),
            target.list_points(None).await.unwrap()
        );
    };
    assert!(why.contains(&y_id.to_hex()[..12]), "names the chunk: {why}");
    assert!(target.list_points(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_source_chunk_aliased_to_a_later_place_is_refused() {
    aliased(1, 0).await;
}

#[tokio::test]
async fn a_source_chunk_aliased_to_an_earlier_place_is_refused() {
    aliased(0, 1).await;
}

/// A source index entry claiming a chunk of 1 GiB (chunks are at most 16
/// MiB): readers allocated the plaintext before comparing it with the
/// blob, so one entry made the copy touch 1 GiB per run in flight (1,023
/// MiB of peak RSS in the review). The index decoder now refuses it.
#[tokio::test]
async fn a_source_index_entry_longer_than_any_chunk_is_damage() {
    let (_dir, sb, source, target, a1) = set_up(71).await;
    let mut all = take_index(&sb, &source).await;
    all[0].entry.plain_len = 1 << 30;
    put_index(&sb, &source, all).await;

    let damage = left_out(&source, &target, every_point(&[&a1])).await;
    assert!(
        damage.len() == 1 && damage[0].contains("at most"),
        "{damage:?}"
    );
    assert!(target.list_points(None).await.unwrap().is_empty());
}
