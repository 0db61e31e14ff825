//! [`ensure_present`] over the in-memory backend: a segment that lost
//! some of its chunks (their pack deleted after the backup found them)
//! is read again, and only the chunks still missing are stored.

use std::sync::Arc;

use futures::TryStreamExt;

use super::*;
use crate::backend::Backend;
use crate::backup::{BackupRequest, backup};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::keys;
use crate::manifest::Manifest;
use crate::placement::pack_read::read_trailer;
use crate::progress::Progress;
use crate::testing::{MemBackend, seeded_bytes as data};

async fn back_up(repo: &Repository, path: &std::path::Path, vm: &str) -> Manifest {
    let req = BackupRequest::new(
        vm.parse().unwrap(),
        vec![("d".parse().unwrap(), path.to_path_buf())],
        "test",
    );
    backup(repo, req, Arc::new(Progress::default()))
        .await
        .unwrap()
}

/// Writes `bytes` as the image file `name` in `dir`.
fn image(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn packs(b: &MemBackend) -> Vec<String> {
    let listed: Vec<_> = b.list(keys::PACKS).try_collect().await.unwrap();
    listed.into_iter().map(|m| m.key).collect()
}

/// Every chunk id of every pack, once per copy.
async fn copies(repo: &Repository, b: &MemBackend) -> Vec<ObjectId> {
    let mut out = Vec::new();
    for m in b.list(keys::PACKS).try_collect::<Vec<_>>().await.unwrap() {
        let name = keys::parse_pack(&m.key).unwrap();
        let max = repo.config().chunking.max;
        let entries = read_trailer(b, repo.codec(), &name, m.size, max)
            .await
            .unwrap();
        out.extend(entries.into_iter().map(|e| e.id));
    }
    out
}

/// A repository of 1 MiB segments and 16 KiB chunks in memory.
async fn repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

/// [`ensure_present`] over the one disk of `m`, read from `path`.
async fn check_again(
    repo: &Repository,
    path: &std::path::Path,
    m: &Manifest,
    began: Option<DateTime<Utc>>,
) -> RepairReport {
    let source = Arc::new(DiskSource::open(path).unwrap());
    ensure_present(repo, &[(source, &m.disks[0])], began)
        .await
        .unwrap()
}

/// Asserts that no chunk is stored twice.
async fn no_second_copies(repo: &Repository, mem: &MemBackend) {
    let mut stored = copies(repo, mem).await;
    let n = stored.len();
    stored.sort_unstable();
    stored.dedup();
    assert_eq!(stored.len(), n, "a chunk stored twice");
}

#[tokio::test]
async fn a_segment_read_again_stores_only_its_missing_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = repo().await;
    let (lost, kept) = (data(2 << 20, 1), data(2 << 20, 2));
    back_up(&repo, &image(&dir, "lost", &lost), "v").await;
    let lost_packs = packs(&mem).await;
    back_up(&repo, &image(&dir, "kept", &kept), "u").await;
    // 1.5 MiB of the lost image, then the kept one: the second 1 MiB
    // segment holds chunks of both.
    let mut both = lost[..3 << 19].to_vec();
    both.extend_from_slice(&kept);
    let path = image(&dir, "both", &both);
    let m = back_up(&repo, &path, "w").await;
    // A sweep deleted the lost image's packs after the backup found its
    // chunks there.
    mem.delete_many(&lost_packs).await.unwrap();
    let r = check_again(&repo, &path, &m, None).await;
    assert_eq!(r.segments_restored, 2, "{r:?}");
    let mut all = Vec::new();
    for n in m.disks[0].segments.iter().flatten() {
        all.extend(repo.load_node(n).await.unwrap().chunk_ids());
    }
    assert!(repo.chunks().absent(&all).await.unwrap().is_empty());
    no_second_copies(&repo, &mem).await;
}

/// Two segments read again that share a lost chunk (both begin with the
/// same bytes) store it once: the index opened for the check does not
/// show what the check itself stored (found in review).
#[tokio::test]
async fn segments_read_again_that_share_a_chunk_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = repo().await;
    let l = data(3 << 19, 3);
    let mut img = l[..1 << 20].to_vec();
    img.extend_from_slice(&l[..1 << 19]);
    img.extend_from_slice(&l[1 << 20..]);
    let path = image(&dir, "img", &img);
    let m = back_up(&repo, &path, "v").await;
    mem.delete_many(&packs(&mem).await).await.unwrap();
    let r = check_again(&repo, &path, &m, None).await;
    assert_eq!(r.segments_restored, 2, "{r:?}");
    no_second_copies(&repo, &mem).await;
}

/// A segment whose node is gone too is read again blind: the chunks of
/// it found stored in a pack older than the session make that pack a
/// dep (nothing else keeps a sweep from deleting it before the commit).
#[tokio::test]
async fn a_segment_read_again_relies_on_the_older_packs_of_the_chunks_it_finds() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = repo().await;
    let kept = data(1 << 19, 5);
    back_up(&repo, &image(&dir, "kept", &kept), "u").await;
    let kept_packs = packs(&mem).await;
    assert_eq!(kept_packs.len(), 1);
    let kept_pack = keys::parse_pack(&kept_packs[0]).unwrap();
    mem.clock().advance(chrono::Duration::minutes(5));
    let began = mem.clock().now();
    // One segment: new bytes, then the kept image.
    let mut img = data(1 << 19, 6);
    img.extend_from_slice(&kept);
    let path = image(&dir, "img", &img);
    let m = back_up(&repo, &path, "w").await;
    let node = m.disks[0].segments[0].unwrap();
    let mine: Vec<String> = packs(&mem)
        .await
        .into_iter()
        .filter(|k| *k != kept_packs[0])
        .collect();
    mem.delete_many(&mine).await.unwrap();
    mem.delete_many(&[keys::node(&node)]).await.unwrap();
    let r = check_again(&repo, &path, &m, Some(began)).await;
    assert_eq!(r.segments_restored, 1, "{r:?}");
    assert!(r.existed.contains(&ObjectRef::Pack(kept_pack)), "{r:?}");
    repo.load_node(&node).await.unwrap();
    no_second_copies(&repo, &mem).await;
}
