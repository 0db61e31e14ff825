//! A damaged block of an index object is passed over by lookups: the
//! chunks it alone places are damage of their own (a restore with
//! `--ignore-damage` goes on), those another object places are found
//! there, and a backup stores them again and says so. One damaged block
//! used to stop every restore and backup that looked an id up in it
//! (review at stop 49), and a damaged head of an unsharded object every
//! restore and backup (stop 50). Each test damages a block, then a head.

use std::sync::Arc;

use futures::TryStreamExt;

use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::{pack_entries, put_pack, write_point};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::manifest::Manifest;
use crate::placement::index_write::store_entries;
use crate::progress::{Progress, Warning};
use crate::repo::Repository;
use crate::restore::{RestoreOptions, Target, restore};
use crate::testing::MemBackend;

fn point() -> PointId {
    "20260101T000000Z-0001".parse().unwrap()
}

/// 16 chunks of 64 KiB: one 1 MiB segment.
fn chunks(repo: &Repository) -> Vec<(ObjectId, Vec<u8>)> {
    (0..16u32)
        .map(|i| {
            let d: Vec<u8> = (0..65536u32)
                .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8 ^ i as u8)
                .collect();
            (repo.codec().chunk_id(&d), d)
        })
        .collect()
}

/// A repository holding one point of `chunks`, indexed by one index
/// object, or by two (two packs of the same chunks in other orders).
async fn repo_with(copies: usize) -> (Arc<MemBackend>, Repository, Manifest) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let mut c = chunks(&repo);
    for _ in 0..copies {
        let pack = put_pack(&repo, &c).await;
        let entries = pack_entries(&repo, &pack).await;
        store_entries(&**repo.backend(), repo.codec(), "", entries)
            .await
            .unwrap();
        c.reverse();
    }
    let c = chunks(&repo);
    write_point(&repo, "vm", &point(), &c).await;
    let vm = "vm".parse().unwrap();
    let m = repo.load_manifest(&vm, &point()).await.unwrap();
    (mem, repo, m)
}

/// A byte in the first block of entries of an index object.
const IN_BLOCK: usize = 120;
/// A byte of an index object's magic, in its head.
const IN_HEAD: usize = 2;

/// Flips byte `at` of the index object a lookup consults first (objects
/// are consulted in name order).
async fn damage_first_index_object(mem: &MemBackend, at: usize) -> String {
    let mut listed: Vec<String> = (mem.list(keys::INDEX).map_ok(|m| m.key))
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    let key = listed[0].clone();
    let mut bytes = mem.get(&key).await.unwrap().to_vec();
    bytes[at] ^= 1;
    mem.put(&key, bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();
    key
}

async fn restore_with(
    repo: &Repository,
    m: &Manifest,
    ignore_damage: bool,
) -> crate::error::Result<crate::restore::RestoreOutcome> {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::File {
        path: dir.path().join("out.img"),
        overwrite: false,
    };
    let opts = RestoreOptions {
        ignore_damage,
        ..RestoreOptions::default()
    };
    restore(repo, m, "d", &target, opts, Arc::new(Progress::default())).await
}

#[tokio::test]
async fn a_chunk_only_a_damaged_block_places_is_damage_of_its_own() {
    for at in [IN_BLOCK, IN_HEAD] {
        let (mem, repo, m) = repo_with(1).await;
        let key = damage_first_index_object(&mem, at).await;
        let e = restore_with(&repo, &m, false).await.unwrap_err();
        assert!(e.is_damage(), "byte {at}: {e}");
        assert!(e.to_string().contains(&key), "names the index object: {e}");
        let out = restore_with(&repo, &m, true).await.unwrap();
        assert!(!out.damaged.is_empty(), "byte {at}");
    }
}

#[tokio::test]
async fn a_chunk_another_index_object_places_is_found_there() {
    for at in [IN_BLOCK, IN_HEAD] {
        let (mem, repo, m) = repo_with(2).await;
        damage_first_index_object(&mem, at).await;
        let out = restore_with(&repo, &m, false).await.unwrap();
        assert!(out.damaged.is_empty(), "byte {at}");
    }
}

#[tokio::test]
async fn a_backup_past_a_damaged_block_stores_again_and_says_so() {
    for at in [IN_BLOCK, IN_HEAD] {
        let (mem, repo, _) = repo_with(1).await;
        damage_first_index_object(&mem, at).await;
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.img");
        let data: Vec<u8> = chunks(&repo).into_iter().flat_map(|(_, d)| d).collect();
        std::fs::write(&img, &data).unwrap();
        let req = crate::backup::BackupRequest::new(
            "vm2".parse().unwrap(),
            vec![("d".parse().unwrap(), img.clone())],
            "test",
        );
        let progress = Arc::new(Progress::default());
        let p = crate::backup::backup(&repo, req, progress.clone())
            .await
            .unwrap();
        let damaged = progress
            .warnings()
            .into_iter()
            .any(|w| matches!(w, Warning::IndexDamaged { .. }));
        assert!(damaged, "byte {at}: {:?}", progress.warnings());
        let out = restore_with(&repo, &p, false).await.unwrap();
        assert!(out.damaged.is_empty(), "byte {at}");
    }
}
