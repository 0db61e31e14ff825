//! The chunk placement seam seen from the engine: what a backup asks the
//! store for, counted by a wrapper around the in-memory store.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use xfull_core::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use xfull_core::backup::backup;
use xfull_core::backup::plan::ChangeSource;
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::keys;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::testing::MemBackend;
use xfull_integration::write_image;

use crate::engine::request;

const SEG: u64 = 1 << 20;

/// Counts GETs by key.
#[derive(Debug, Default)]
struct Counting {
    inner: MemBackend,
    gets: Mutex<BTreeMap<String, u64>>,
    lists: Mutex<BTreeMap<String, u64>>,
}

impl Counting {
    fn gets_under(&self, prefix: &str) -> BTreeMap<String, u64> {
        let gets = self.gets.lock().unwrap();
        gets.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }
}

#[async_trait::async_trait]
impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, o: PutOptions) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, o).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        *self.gets.lock().unwrap().entry(key.into()).or_default() += 1;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        *self.gets.lock().unwrap().entry(key.into()).or_default() += 1;
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        *self.lists.lock().unwrap().entry(prefix.into()).or_default() += 1;
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}

/// Clears the counts, then backs `img` up with `changes` (JSON extents,
/// written to `file`) as its change source.
async fn backup_changed(
    repo: &Repository,
    store: &Counting,
    img: &std::path::Path,
    file: &std::path::Path,
    changes: &str,
) -> xfull_core::manifest::Manifest {
    std::fs::write(file, changes).unwrap();
    store.gets.lock().unwrap().clear();
    let mut req = request("vm", img);
    req.changes.insert(
        "d".parse().unwrap(),
        ChangeSource::Extents(vec![file.to_path_buf()]),
    );
    backup(repo, req, Arc::new(Progress::default()))
        .await
        .unwrap()
}

/// A 6-segment image of mixed regions (in a temporary directory) and a
/// new repository in a counting store.
async fn mixed_image_and_repo() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<Counting>,
    Repository,
) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(&img, &xfull_integration::mixed_regions(6, 3), 3, true).unwrap();
    let store = Arc::new(Counting::default());
    let config = RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let repo = Repository::init(store.clone(), config).await.unwrap();
    (dir, img, store, repo)
}

/// A full scan of `img` gives `m`'s segments and data bytes.
async fn same_as_a_full_scan(
    repo: &Repository,
    img: &std::path::Path,
    m: &xfull_core::manifest::Manifest,
) {
    let rescan = backup(repo, request("vm", img), Arc::new(Progress::default()))
        .await
        .unwrap();
    assert_eq!(rescan.disks[0].segments, m.disks[0].segments);
    assert_eq!(
        rescan.disks[0].stats.bytes_data,
        m.disks[0].stats.bytes_data
    );
}

/// Every parent node an incremental backup uses (reused or re-chunked
/// from) is fetched once: the parent check used to fetch a touched
/// segment's node and a worker fetched it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_backup_fetches_each_parent_node_once() {
    let (dir, img, store, repo) = mixed_image_and_repo().await;
    backup(&repo, request("vm", &img), Arc::new(Progress::default()))
        .await
        .unwrap();
    // Touch two segments.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xa5; 5000], SEG + 100).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 5000], 3 * SEG + 100).unwrap();
    let changes = dir.path().join("c.json");
    let m = backup_changed(
        &repo,
        &store,
        &img,
        &changes,
        &format!(
            r#"[{{"offset": {}, "length": 5000}}, {{"offset": {}, "length": 5000}}]"#,
            SEG + 100,
            3 * SEG + 100
        ),
    )
    .await;
    assert!(
        m.disks[0].source.starts_with("extents"),
        "{}",
        m.disks[0].source
    );
    let gets = store.gets_under("nodes/");
    assert!(gets.len() >= 2, "the parent nodes are checked: {gets:?}");
    assert!(
        gets.values().all(|n| *n == 1),
        "each parent node fetched once: {gets:?}"
    );
}

/// An incremental backup's metadata traffic follows what changed, not the
/// disk: an unchanged re-backup of a disk of many segments fetches no
/// parent node but the sampled one (1%, at least one) and, as this disk
/// ends in zeros, the last segment's (the zero check of the tail,
/// `backup/zero_check.rs`), and still reports the same data bytes as a
/// full scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_rebackup_fetches_a_sample_of_parent_nodes_not_all() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    // 64 segments, each with a little data (a sparse disk with data spread
    // over all of it).
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 * SEG).unwrap();
    for i in 0..64u64 {
        let block: Vec<u8> = (0..6000u32).map(|j| (j * 7 + i as u32) as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&f, &block, i * SEG + 4096).unwrap();
    }
    drop(f);
    let store = Arc::new(Counting::default());
    let config = RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let repo = Repository::init(store.clone(), config).await.unwrap();
    let full = backup(&repo, request("vm", &img), Arc::new(Progress::default()))
        .await
        .unwrap();
    let changes = dir.path().join("c.json");
    let m = backup_changed(&repo, &store, &img, &changes, "[]").await;
    let nodes = store.gets_under("nodes/");
    let last = keys::node(full.disks[0].segments.last().unwrap().as_ref().unwrap());
    assert!(nodes.contains_key(&last), "the tail's node: {nodes:?}");
    assert!(
        nodes.len() <= 2 && nodes.values().all(|n| *n == 1),
        "the sampled parent node and the tail's, once each: {nodes:?}"
    );
    let all: u64 = store.gets_under("").values().sum();
    assert!(all < 16, "far fewer GETs than 64 segments: {all}");
    assert_eq!(m.disks[0].segments, full.disks[0].segments);
    assert_eq!(m.disks[0].stats.bytes_data, full.disks[0].stats.bytes_data);
    // The non-zero chunks around each segment's data.
    assert!(m.disks[0].stats.bytes_data >= 64 * 6000);

    // One segment changed: its parent node is fetched (to re-chunk from),
    // and the data bytes are those of a full scan of the same image.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x33; 3000], 5 * SEG + 20_000).unwrap();
    let m = backup_changed(
        &repo,
        &store,
        &img,
        &changes,
        &format!(r#"[{{"offset": {}, "length": 3000}}]"#, 5 * SEG + 20_000),
    )
    .await;
    let nodes = store.gets_under("nodes/");
    assert!(
        nodes.len() <= 3,
        "the touched node, the sample and the tail's: {nodes:?}"
    );
    same_as_a_full_scan(&repo, &img, &m).await;

    // Shrunk to 40.5 segments: the dropped segments' data leaves the sum
    // (their nodes are fetched), the cut one is re-chunked.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(40 * SEG + SEG / 2).unwrap();
    let changes = dir.path().join("none.json");
    let m = backup_changed(&repo, &store, &img, &changes, "[]").await;
    let nodes = store.gets_under("nodes/");
    assert!(nodes.len() <= 25, "23 dropped, 1 cut, 1 sampled: {nodes:?}");
    same_as_a_full_scan(&repo, &img, &m).await;
}

/// Two disks whose change files both miss a write: the audit turns each
/// into a full scan, which lists what the repository holds (the whole
/// index walked) once for the backup, not once per disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_fallbacks_of_several_disks_list_the_repository_once() {
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<_> = (0..2u64)
        .map(|i| {
            let img = dir.path().join(format!("img{i}"));
            write_image(
                &img,
                &[xfull_integration::Region::Random(6 * SEG)],
                10 + i,
                false,
            )
            .unwrap();
            img
        })
        .collect();
    let store = Arc::new(Counting::default());
    let config = RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let repo = Repository::init(store.clone(), config).await.unwrap();
    let mut req = request("vm", &imgs[0]);
    req.disks.push(("e".parse().unwrap(), imgs[1].clone()));
    backup(&repo, req.clone(), Arc::new(Progress::default()))
        .await
        .unwrap();
    // A write each change file leaves out.
    for img in &imgs {
        let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"unreported", 3 * SEG + 77).unwrap();
    }
    let file = dir.path().join("none.json");
    std::fs::write(&file, "[]").unwrap();
    for disk in ["d", "e"] {
        req.changes.insert(
            disk.parse().unwrap(),
            ChangeSource::Extents(vec![file.clone()]),
        );
    }
    req.audit_percent = 100.0;
    store.lists.lock().unwrap().clear();
    let m = backup(&repo, req, Arc::new(Progress::default()))
        .await
        .unwrap();
    for d in &m.disks {
        assert!(
            d.audit.as_ref().is_some_and(|a| a.mismatch_at.is_some()),
            "{:?}",
            d.audit
        );
    }
    let lists = store.lists.lock().unwrap().clone();
    assert_eq!(lists.get("nodes/"), Some(&1), "{lists:?}");
}

/// A served point's block status asks for the entries of up to 64
/// segments per request, and a writable overlay asks again for every gap
/// between its blocks: each segment's node is fetched once while it is
/// among the last asked, not once per question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_status_fetches_each_node_once_while_kept() {
    let (_dir, img, store, repo) = mixed_image_and_repo().await;
    let m = backup(&repo, request("vm", &img), Arc::new(Progress::default()))
        .await
        .unwrap();
    let d = Arc::new(m.disks[0].clone());
    let with_node: Vec<usize> = (0..d.segments.len())
        .filter(|&i| d.segments[i].is_some())
        .collect();
    assert!(with_node.len() >= 3, "{:?}", d.segments);
    let index = repo.chunks().open_index().await.unwrap();
    let reader = xfull_core::restore::PartReader::new(&repo, index, "vm@x", d.clone());
    store.gets.lock().unwrap().clear();
    let mut first = Vec::new();
    for round in 0..3 {
        for &i in &with_node {
            let entries = reader.entries(i).await.unwrap();
            let r = d.segment_range(i);
            assert_eq!(
                entries.iter().map(|e| e.len()).sum::<u64>(),
                r.end - r.start
            );
            if round == 0 {
                first.push(entries);
            } else {
                assert_eq!(
                    entries,
                    first[with_node.iter().position(|&j| j == i).unwrap()]
                );
            }
        }
    }
    let gets = store.gets_under("nodes/");
    assert_eq!(gets.len(), with_node.len(), "{gets:?}");
    assert!(gets.values().all(|&n| n == 1), "one fetch each: {gets:?}");
}
