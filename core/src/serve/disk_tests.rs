//! Block status over nodes of very many entries (64-byte chunks in 1 MiB
//! segments, 16 Ki per node: the most a configuration may allow since
//! stop 50): one request built every extent of 64 segments, outside the
//! server's memory budget (review at stop 49). And which warnings a
//! served disk gives once.

use std::sync::Arc;

use super::*;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::write_point_of;
use crate::id::{ObjectId, PointId};
use crate::nbd::Export;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::MemBackend;

fn point() -> PointId {
    "20260101T000000Z-0001".parse().unwrap()
}

#[tokio::test]
async fn one_block_status_request_builds_a_bounded_number_of_extents() {
    use crate::node::{Entry, Node};
    let seg: u64 = 1 << 20;
    let mem = Arc::new(MemBackend::default());
    let params = ChunkParams {
        min: 64,
        avg: 256,
        max: 1024,
    };
    let cfg = RepoConfig::new(seg, params, 3).unwrap();
    let repo = Repository::init(mem, cfg).await.unwrap();
    let data = ObjectId::of(b"x");
    // seg/64 + 1 entries (the most a node may have), alternating.
    let n = (seg / 64 + 1) as usize;
    let mut entries: Vec<Entry> = (0..n)
        .map(|k| Entry(64, (k % 2 == 0).then_some(data)))
        .collect();
    entries[n - 1].0 = 32;
    entries[n - 2].0 = 32;
    let node = Node { entries };
    assert_eq!(node.len(), seg);
    let (nid, plain) = node.to_plain(repo.codec()).unwrap();
    repo.put_node(&nid, &plain).await.unwrap();
    write_point_of(&repo, "vm", &point(), vec![Some(nid); 64]).await;
    let m = repo
        .load_manifest(&"vm".parse().unwrap(), &point())
        .await
        .unwrap();
    let index = repo.chunks().open_index().await.unwrap();
    let disk = crate::serve::PointDisk::new(
        &repo,
        index,
        &m,
        "d",
        crate::serve::PartCache::new(256 << 20),
        0,
        Arc::new(Progress::default()),
    )
    .unwrap();
    let size = disk.size();
    let got = disk.extents(0..size).await.unwrap();
    assert_eq!(got.len(), MAX_EXTENTS, "one request's extents are bounded");
    // From the start, contiguous, alternating: the client asks again from
    // where they stop.
    // 64 bytes each, but where a segment's last two chunks of 32 meet
    // the next segment's first (96 bytes of data).
    assert!(
        got.iter()
            .all(|x| x.len == 64 || x.len == 32 || x.len == 96)
    );
    assert!(got.windows(2).all(|w| w[0].flags != w[1].flags));
    let from = got.iter().map(|x| x.len).sum::<u64>();
    let next = disk.extents(from..size).await.unwrap();
    assert_eq!(next.len(), MAX_EXTENTS);
    assert_ne!(next[0].flags, got[MAX_EXTENTS - 1].flags);
}

/// A part unreadable a while (the store's error) and damage found at the
/// same offset later are each said: one set keyed by offset let the
/// first hide the second (review 104.5). A part read again ends its
/// unreadable spell, so a later one is said again.
#[tokio::test]
async fn unreadable_and_damaged_at_one_offset_are_each_reported() {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let repo = Repository::init(mem, cfg).await.unwrap();
    write_point_of(&repo, "vm", &point(), vec![None]).await;
    let m = repo
        .load_manifest(&"vm".parse().unwrap(), &point())
        .await
        .unwrap();
    let index = repo.chunks().open_index().await.unwrap();
    let cache = crate::serve::PartCache::new(64 << 20);
    let progress = Arc::new(Progress::default());
    let disk = PointDisk::new(&repo, index, &m, "d", cache, 0, progress).unwrap();
    assert!(disk.first_report(Report::Unreadable, 0));
    assert!(!disk.first_report(Report::Unreadable, 0), "said once");
    assert!(disk.first_report(Report::Damaged, 0), "not hidden");
    assert!(!disk.first_report(Report::Damaged, 0));
    disk.readable(0);
    assert!(disk.first_report(Report::Unreadable, 0), "a new spell");
    assert!(!disk.first_report(Report::Damaged, 0), "damage stays said");
    // A store failing on and off: warnings stop at the cap in all.
    for _ in 0..REPORTED_CAP {
        disk.readable(0);
        disk.first_report(Report::Unreadable, 0);
    }
    disk.readable(0);
    assert!(!disk.first_report(Report::Unreadable, 0), "capped");
    assert_eq!(disk.said.load(Ordering::Relaxed), REPORTED_CAP);
}
