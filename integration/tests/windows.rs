//! Segments larger than the backup's read window (16 MiB): read and
//! chunked window by window, they must give exactly the nodes of the
//! whole segment, in full scans, incremental backups (re-chunked, or read
//! whole when their changes are large) and audits; and restored in 16 MiB
//! parts, the same bytes and image hash.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use xfull_core::backup::backup;
use xfull_core::backup::plan::ChangeSource;
use xfull_core::backup::segment::seal_segment;
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::id::ObjectId;
use xfull_core::manifest::Manifest;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::restore::{PartReader, RestoreOptions, Target, restore};
use xfull_core::testing::xorshift_bytes;
use xfull_integration::{Region, write_image};
use xfull_local::LocalBackend;

use crate::engine::{request, rt};

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const SEG: u64 = 32 * MIB;

async fn repo() -> Repository {
    repo_on(Arc::new(LocalBackend::in_memory())).await
}

/// A repository with 32 MiB segments and 64 KiB chunks on `backend`.
pub(crate) async fn repo_on(backend: Arc<LocalBackend>) -> Repository {
    let cfg = RepoConfig::new(SEG, ChunkParams::from_avg(64 << 10), 3).unwrap();
    Repository::init(backend, cfg).await.unwrap()
}

/// Two 32 MiB segments and a partial one, with data, holes and written
/// zeros across the 16 MiB window edges.
pub(crate) fn layout() -> Vec<Region> {
    vec![
        Region::Random(10 * MIB),
        Region::Hole(5 * MIB),
        Region::Text(3 * MIB),
        Region::Zeros(4 * MIB),
        Region::Random(10 * MIB),
        Region::Hole(16 * MIB - 100),
        Region::Random(200 << 10),
        Region::Hole(16 * MIB + 100 - (200 << 10)),
        Region::Text(7 * MIB),
        Region::Hole(3 * MIB),
    ]
}

/// The node ids of chunking each whole segment of `image` in one piece.
pub(crate) fn whole_segments(repo: &Repository, image: &Path) -> Vec<Option<ObjectId>> {
    let bytes = std::fs::read(image).unwrap();
    bytes
        .chunks(SEG as usize)
        .map(|s| {
            let sealed =
                seal_segment(&repo.config().chunking, repo.codec(), 3, s, |_| false).unwrap();
            s.iter().any(|b| *b != 0).then_some(sealed.node_id)
        })
        .collect()
}

pub(crate) async fn restores_to(repo: &Repository, m: &Manifest, dir: &Path, want: &Path) {
    let out = dir.join(format!("out-{}", m.id));
    let target = Target::parse(out.to_str().unwrap()).unwrap();
    let progress = Arc::new(Progress::default());
    let o = restore(repo, m, "d", &target, RestoreOptions::default(), progress)
        .await
        .unwrap();
    let bytes = std::fs::read(want).unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes, "{} differs", m.id);
    // Restored in 16 MiB parts: their hashes still make the image's.
    let hash = blake3::hash(&bytes).to_hex().to_string();
    assert_eq!(o.blake3, Some(hash), "{}", m.id);
}

pub(crate) fn write(path: &Path, writes: &[(u64, u64, u8)]) -> Vec<Range<u64>> {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    writes
        .iter()
        .map(|&(off, len, seed)| {
            let data = xorshift_bytes(len as usize, u64::from(seed));
            std::os::unix::fs::FileExt::write_all_at(&f, &data, off).unwrap();
            off..off + len
        })
        .collect()
}

pub(crate) fn changes_file(path: &Path, ranges: &[Range<u64>]) -> ChangeSource {
    let v: Vec<String> = ranges
        .iter()
        .map(|r| {
            format!(
                r#"{{"offset": {}, "length": {}}}"#,
                r.start,
                r.end - r.start
            )
        })
        .collect();
    std::fs::write(path, format!("[{}]", v.join(","))).unwrap();
    ChangeSource::Extents(vec![path.to_path_buf()])
}

#[test]
fn a_segment_read_in_windows_gives_the_node_of_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (sparse, dense) = (dir.path().join("sparse"), dir.path().join("dense"));
    write_image(&sparse, &layout(), 5, false).unwrap();
    write_image(&dense, &layout(), 5, true).unwrap();
    rt().block_on(async {
        let repo = repo().await;
        let progress = Arc::new(Progress::default());
        let a = backup(&repo, request("a", &sparse), progress.clone())
            .await
            .unwrap();
        let b = backup(&repo, request("b", &dense), Arc::new(Progress::default()))
            .await
            .unwrap();
        let want = whole_segments(&repo, &dense);
        assert_eq!(want.len(), 3);
        assert!(want.iter().all(Option::is_some));
        assert_eq!(a.disks[0].segments, want);
        assert_eq!(b.disks[0].segments, want);
        // The second backup found every chunk stored by the first.
        assert_eq!(b.disks[0].stats.new_chunks, 0);
        // Progress counts every byte once, windows and all.
        let (done, total, _) = progress.snapshot();
        assert_eq!((done, total), (a.disks[0].size, a.disks[0].size));
        restores_to(&repo, &a, dir.path(), &dense).await;
        // A reader of parts (a served point) reads 16 MiB at a time,
        // each part's entries covering it exactly.
        let d = Arc::new(a.disks[0].clone());
        let index = repo.chunks().open_index().await.unwrap();
        let reader = PartReader::new(&repo, index, "a@x", d.clone());
        assert_eq!(reader.part_size(), 16 * MIB);
        let bytes = std::fs::read(&dense).unwrap();
        assert_eq!(reader.parts(), bytes.len().div_ceil(16 * MIB as usize));
        for (k, want) in bytes.chunks(16 * MIB as usize).enumerate().rev() {
            let got = reader.read_part(k).await.unwrap();
            assert!(got.damaged.is_empty());
            assert!(got.data.as_deref() == Some(want), "part {k}");
            assert_eq!(
                got.entries.iter().map(|e| e.len()).sum::<u64>(),
                want.len() as u64
            );
        }
        assert!(reader.read_part(reader.parts()).await.is_err());
    });
}

/// Small changes are re-chunked in place, so is a large one (more new
/// chunk bytes than a window, stored a window's worth at a time, not read
/// whole), and a full audit compares window by window: all give the full
/// scan's nodes.
#[test]
fn incremental_backups_of_large_segments_equal_full_scans() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(&img, &layout(), 6, false).unwrap();
    rt().block_on(async {
        let repo = repo().await;
        backup(&repo, request("inc", &img), Arc::new(Progress::default()))
            .await
            .unwrap();
        let writes = [
            (4 * MIB, 4096, 1),
            (17 * MIB - 10, 30_000, 2),
            (SEG + 2 * MIB, 20 * MIB, 3),
            (2 * SEG - 5000, 10_000, 4),
        ];
        let changed = write(&img, &writes);
        for (n, audit) in [(0, 0.0), (1, 100.0)] {
            let mut req = request("inc", &img);
            let c = changes_file(&dir.path().join(format!("c{n}.json")), &changed);
            req.changes.insert("d".parse().unwrap(), c);
            req.audit_percent = audit;
            let progress = Arc::new(Progress::default());
            let inc = backup(&repo, req, progress.clone()).await.unwrap();
            let d = &inc.disks[0];
            assert!(d.source.starts_with("extents"), "{}", d.source);
            assert_eq!(progress.snapshot().0, d.size, "progress, audit {audit}");
            if audit > 0.0 {
                assert_eq!(d.audit.as_ref().unwrap().mismatch_at, None);
                // Every byte checked, each read about once: the changed
                // areas are not read again to check the touched segments.
                let stored =
                    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&img).unwrap()) * 512;
                assert!(
                    d.stats.bytes_read < stored + 2 * MIB,
                    "read {} of {stored} allocated",
                    d.stats.bytes_read
                );
                // And no less than every byte of data.
                assert!(
                    d.stats.bytes_read >= d.stats.bytes_data,
                    "read {} of {} data",
                    d.stats.bytes_read,
                    d.stats.bytes_data
                );
            } else {
                // Only near the changes (20 MiB and a little), not the
                // large change's whole segment after part of it.
                let near: u64 = changed.iter().map(|r| r.end - r.start).sum();
                assert!(
                    d.stats.bytes_read < near + 4 * MIB,
                    "read {} for {near} changed",
                    d.stats.bytes_read
                );
            }
            assert_eq!(d.segments, whole_segments(&repo, &img), "audit {audit}");
            restores_to(&repo, &inc, dir.path(), &img).await;
        }
    });
}

/// A write the change source did not report, in the second window of a
/// segment it did report changes in, or of one it called unchanged (both
/// audited by the pipeline's workers): found, and the point is a full
/// scan's.
#[test]
fn an_audit_finds_an_unreported_write_in_a_later_window() {
    for hidden in [24 * MIB, SEG + 20 * MIB] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        write_image(&img, &layout(), 7, false).unwrap();
        rt().block_on(async {
            let repo = repo().await;
            backup(&repo, request("v", &img), Arc::new(Progress::default()))
                .await
                .unwrap();
            let told = write(&img, &[(MIB, 8192, 9)]);
            write(&img, &[(hidden, 8192, 10)]);
            let mut req = request("v", &img);
            let c = changes_file(&dir.path().join("c.json"), &told);
            req.changes.insert("d".parse().unwrap(), c);
            req.audit_percent = 100.0;
            let m = backup(&repo, req, Arc::new(Progress::default()))
                .await
                .unwrap();
            let d = &m.disks[0];
            let found = d.audit.as_ref().unwrap().mismatch_at;
            assert_eq!(found, Some(hidden / SEG * SEG), "{hidden}");
            assert!(d.source.starts_with("full-scan"), "{}", d.source);
            assert_eq!(d.segments, whole_segments(&repo, &img));
            restores_to(&repo, &m, dir.path(), &img).await;
        });
    }
}
