//! Engine-level tests over the in-memory and local stores: sparse layouts,
//! dedup, damage and failing backends.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use xfull_core::Error;
use xfull_core::backend::Backend;
use xfull_core::backup::plan::ChangeSource;
use xfull_core::backup::{BackupRequest, backup};
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::manifest::Manifest;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::restore::{RestoreOptions, Target, restore};
use xfull_core::testing::{FaultPlan, FaultyBackend, InFlight, MemBackend};
use xfull_integration::{Region, write_image};
use xfull_local::LocalBackend;

const SEG: u64 = 1 << 20;

pub(crate) fn small_config() -> RepoConfig {
    RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap()
}

async fn memory_repo() -> Repository {
    Repository::init(Arc::new(LocalBackend::in_memory()), small_config())
        .await
        .unwrap()
}

/// A backup of one disk `d` (shared with the other engine-level tests).
pub(crate) fn request(vm: &str, disk: &Path) -> BackupRequest {
    BackupRequest::new(
        vm.parse().unwrap(),
        vec![("d".parse().unwrap(), disk.to_path_buf())],
        "test",
    )
}

pub(crate) async fn run_backup(
    repo: &Repository,
    vm: &str,
    disk: &Path,
) -> xfull_core::Result<Manifest> {
    backup(repo, request(vm, disk), Arc::new(Progress::default())).await
}

pub(crate) async fn restore_to(
    repo: &Repository,
    m: &Manifest,
    out: &Path,
) -> xfull_core::Result<String> {
    let target = Target::parse(out.to_str().unwrap())?;
    let o = restore(
        repo,
        m,
        "d",
        &target,
        RestoreOptions::default(),
        Arc::new(Progress::default()),
    )
    .await?;
    Ok(o.blake3.expect("the image hash is on by default"))
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn region() -> impl Strategy<Value = Region> {
    // Lengths around chunk and segment sizes, so edges get exercised.
    let len = prop_oneof![
        1u64..5000,
        10_000u64..300_000,
        Just(SEG),
        Just(SEG - 1),
        Just(SEG + 1)
    ];
    (0..4u8, len).prop_map(|(k, n)| match k {
        0 => Region::Random(n),
        1 => Region::Text(n),
        2 => Region::Zeros(n),
        _ => Region::Hole(n),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A sparse image and the same bytes written out in full give the same
    /// point; both restore to the same bytes and hash.
    #[test]
    fn sparse_layouts_match_written_zeros(regions in prop::collection::vec(region(), 0..8), seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let (sparse, dense) = (dir.path().join("sparse"), dir.path().join("dense"));
        write_image(&sparse, &regions, seed, false).unwrap();
        write_image(&dense, &regions, seed, true).unwrap();
        rt().block_on(async {
            let repo = memory_repo().await;
            let a = run_backup(&repo, "a", &sparse).await.unwrap();
            let b = run_backup(&repo, "b", &dense).await.unwrap();
            assert_eq!(a.disks[0].segments, b.disks[0].segments);
            assert_eq!(a.disks[0].size, regions.iter().map(Region::len).sum::<u64>());
            let out = dir.path().join("out");
            let hash = restore_to(&repo, &a, &out).await.unwrap();
            let want = std::fs::read(&dense).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), want);
            assert_eq!(hash, blake3::hash(&want).to_hex().to_string());
        });
    }
}

/// Segment buffers are reused, and a hole is no longer cleared where the
/// buffer's previous segment read nothing: each segment here has its data
/// where the segments before it had holes, and dense and sparse segments
/// alternate, so a byte left over from an earlier segment would show.
#[test]
fn reused_segment_buffers_leave_nothing_in_holes() {
    let dir = tempfile::tempdir().unwrap();
    let mut regions = Vec::new();
    for i in 0..14u64 {
        match i % 3 {
            0 => regions.push(Region::Random(SEG)),
            1 => {
                let at = (i * 37_000) % (SEG / 2);
                regions.extend([
                    Region::Hole(at),
                    Region::Text(20_000),
                    Region::Hole(SEG - at - 20_000),
                ]);
            }
            _ => regions.extend([Region::Hole(SEG - 70_000), Region::Random(70_000)]),
        }
    }
    // A partial last segment, mostly hole, in a buffer that held data.
    regions.extend([Region::Hole(SEG / 3), Region::Text(5_000)]);
    let (sparse, dense) = (dir.path().join("sparse"), dir.path().join("dense"));
    write_image(&sparse, &regions, 9, false).unwrap();
    write_image(&dense, &regions, 9, true).unwrap();
    rt().block_on(async {
        let repo = memory_repo().await;
        let a = run_backup(&repo, "a", &sparse).await.unwrap();
        let b = run_backup(&repo, "b", &dense).await.unwrap();
        assert_eq!(a.disks[0].segments.len(), 15);
        assert_eq!(a.disks[0].segments, b.disks[0].segments);
        let out = dir.path().join("out");
        restore_to(&repo, &a, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&dense).unwrap());
    });
}

/// Writes `writes` into a copy of `old` resized to `new_len`; returns the
/// changed ranges.
fn mutate(old: &Path, new: &Path, writes: &[(u64, u64, u8)], new_len: u64) -> Vec<Range<u64>> {
    std::fs::copy(old, new).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(new).unwrap();
    f.set_len(new_len).unwrap();
    let mut changed = Vec::new();
    for &(off, len, b) in writes {
        let (s, e) = (off.min(new_len), (off + len).min(new_len));
        let data: Vec<u8> = (s..e).map(|i| (i as u8).wrapping_mul(b) ^ b).collect();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, s).unwrap();
        changed.push(s..e);
    }
    changed
}

fn write_changes(path: &Path, ranges: &[Range<u64>]) {
    let v: Vec<_> = ranges
        .iter()
        .map(|r| serde_json::json!({"offset": r.start, "length": r.end - r.start}))
        .collect();
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The canonical-chunking invariant end to end: an incremental point
    /// from exact change extents has the same nodes as a full scan of the
    /// new image, and restores to it.
    #[test]
    fn incremental_points_equal_full_scans(
        regions in prop::collection::vec(region(), 1..6),
        writes in prop::collection::vec((0u64..6 << 20, 1u64..200_000, 1u8..255), 0..8),
        resize in prop_oneof![Just(0i64), Just(0i64), -(1i64 << 20)..(1i64 << 20)],
        seed: u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, changes) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("c.json"));
        write_image(&old, &regions, seed, false).unwrap();
        let old_len = std::fs::metadata(&old).unwrap().len();
        let new_len = (old_len as i64 + resize).max(0) as u64;
        let changed = mutate(&old, &new, &writes, new_len);
        write_changes(&changes, &changed);
        rt().block_on(async {
            let repo = memory_repo().await;
            run_backup(&repo, "inc", &old).await.unwrap();
            let mut req = request("inc", &new);
            req.changes.insert("d".parse().unwrap(), ChangeSource::Extents(vec![changes.clone()]));
            req.audit_percent = 100.0;
            let inc = backup(&repo, req, Arc::new(Progress::default())).await.unwrap();
            let full = run_backup(&repo, "full", &new).await.unwrap();
            let d = &inc.disks[0];
            assert_eq!(d.audit.as_ref().unwrap().mismatch_at, None, "exact extents never fail the audit");
            assert_eq!(d.segments, full.disks[0].segments);
            assert!(d.source.starts_with("extents"), "{}", d.source);
            let out = dir.path().join("out");
            restore_to(&repo, &inc, &out).await.unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&new).unwrap());
        });
    }
}

#[test]
fn empty_and_one_byte_disks() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let repo = memory_repo().await;
        for (name, data) in [
            ("empty", &b""[..]),
            ("one", &b"x"[..]),
            ("zero", &[0u8][..]),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            let m = run_backup(&repo, name, &p).await.unwrap();
            assert_eq!(m.disks[0].size, data.len() as u64);
            let out = dir.path().join(format!("{name}.out"));
            let hash = restore_to(&repo, &m, &out).await.unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), data);
            assert_eq!(hash, blake3::hash(data).to_hex().to_string());
        }
    });
}

/// A disk image of mixed regions (seeded), in its own directory.
pub(crate) fn mixed_image(seed: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(
        &img,
        &xfull_integration::mixed_regions(4, seed),
        seed,
        false,
    )
    .unwrap();
    (dir, img)
}

/// A new repository on a store that logs every request.
pub(crate) async fn in_flight_repo() -> (Arc<InFlight>, Repository) {
    let b = Arc::new(InFlight::default());
    let repo = Repository::init(b.clone(), small_config()).await.unwrap();
    (b, repo)
}

/// A backup reads and pins its parent while it opens the chunk index and
/// loads the damage records: each needs only the lease written, so their
/// round trips overlap instead of following each other.
#[test]
fn a_backup_reads_its_parent_beside_the_index() {
    let (_dir, img) = mixed_image(3);
    rt().block_on(async {
        let (b, repo) = in_flight_repo().await;
        let first = run_backup(&repo, "vm", &img).await.unwrap();
        let skip = b.requests().len();
        let second = run_backup(&repo, "vm", &img).await.unwrap();
        assert_eq!(second.parent, Some(first.id.clone()));
        let log = b.requests();
        let second = &log[skip..];
        // Listed together: the parent's point and the index objects (the
        // first request of each; before, the index was listed only once
        // the parent was read and pinned).
        assert!(
            InFlight::overlap_in(second, ("LIST", "points/vm/"), ("LIST", "index/")),
            "the parent was looked for after the index was opened: {second:#?}"
        );
    });
}

#[test]
fn unchanged_and_identical_disks_store_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let regions = xfull_integration::mixed_regions(6, 7);
    write_image(&img, &regions, 7, false).unwrap();
    rt().block_on(async {
        let repo = memory_repo().await;
        let first = run_backup(&repo, "vm", &img).await.unwrap();
        assert!(first.stats.new_chunks > 0);
        let second = run_backup(&repo, "vm", &img).await.unwrap();
        assert_eq!(second.parent, Some(first.id.clone()));
        let d = &second.disks[0].stats;
        assert_eq!((d.new_chunks, d.new_nodes, d.bytes_uploaded), (0, 0, 0));
        assert_eq!(second.disks[0].segments, first.disks[0].segments);
        // Another VM with the same disk: chunks are offered, none is new.
        let other = run_backup(&repo, "other", &img).await.unwrap();
        assert_eq!((other.stats.new_chunks, other.stats.new_nodes), (0, 0));
    });
}

#[test]
fn a_damaged_chunk_is_reported_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(
        &img,
        &[Region::Hole(SEG), Region::Random(300_000)],
        3,
        false,
    )
    .unwrap();
    rt().block_on(async {
        let backend = Arc::new(LocalBackend::in_memory());
        let repo = Repository::init(backend.clone(), small_config())
            .await
            .unwrap();
        let m = run_backup(&repo, "vm", &img).await.unwrap();
        let node = repo
            .load_node(&m.disks[0].segments[1].unwrap())
            .await
            .unwrap();
        let victim = node.entries[1];
        // Its blob's last byte, in the pack the index names.
        let index = repo.chunks().open_index().await.unwrap();
        let place = index.lookup(&[victim.chunk().unwrap()]).await.unwrap()[0].unwrap();
        let key = xfull_core::keys::pack(&place.pack);
        let mut bytes = backend.get(&key).await.unwrap().to_vec();
        let last = place.entry.range().end as usize - 1;
        bytes[last] ^= 0x55;
        backend
            .put(&key, bytes.into(), xfull_core::backend::PutMode::Overwrite)
            .await
            .unwrap();
        let err = restore_to(&repo, &m, &dir.path().join("out"))
            .await
            .unwrap_err();
        assert!(err.is_damage(), "{err}");
        match &err {
            Error::Damaged {
                offset,
                chunk,
                point,
                disk,
                ..
            } => {
                assert_eq!(*offset, SEG + node.entries[0].len());
                assert_eq!(chunk, &victim.chunk().unwrap().to_hex());
                assert_eq!(point, &m.point_name());
                assert_eq!(disk, "d");
            }
            other => panic!("expected Damaged, got {other}"),
        }
        // Nothing is left under the requested name.
        assert!(!dir.path().join("out").exists());
    });
}

#[test]
fn a_failing_store_leaves_no_point() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(
        &img,
        &[Region::Random(3 << 20), Region::Text(1 << 20)],
        9,
        false,
    )
    .unwrap();
    rt().block_on(async {
        let inner = Arc::new(LocalBackend::in_memory());
        Repository::init(inner.clone(), small_config())
            .await
            .unwrap();
        let plan = FaultPlan {
            outage_after: Some(12),
            ..FaultPlan::default()
        };
        let failing = Arc::new(FaultyBackend::new(inner.clone(), plan));
        let repo = Repository::open(failing).await.unwrap();
        let err = run_backup(&repo, "vm", &img).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let clean = Repository::open(inner).await.unwrap();
        assert!(clean.list_points(None).await.unwrap().is_empty());
    });
}

/// Backups, restores and sweeps through a store that fails requests,
/// loses replies, deletes half a batch and adds latency: each either
/// succeeds with correct data or fails with a clear error, and the
/// repository stays consistent (checked through a faultless view).
#[test]
fn injected_faults_never_corrupt_the_repository() {
    use xfull_core::verify::{VerifyOptions, verify};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(
        &img,
        &[Region::Random(3 << 20), Region::Text(2 << 20)],
        4,
        false,
    )
    .unwrap();
    let (mut ok, mut failed, mut injected) = (0, 0, 0);
    rt().block_on(async {
        // The in-memory store with a test clock: each round runs an hour
        // after the last, so the sweeps may delete what failed rounds left.
        let inner = Arc::new(MemBackend::default());
        let clean = Repository::init(inner.clone(), small_config())
            .await
            .unwrap();
        for seed in 0..12u64 {
            inner.clock().advance(chrono::Duration::hours(1));
            // Every other round only slows requests down and half-deletes
            // batches; the others also fail some and lose some replies.
            let rate = if seed % 2 == 0 {
                0.0
            } else {
                0.004 * seed as f64
            };
            let plan = FaultPlan {
                seed,
                error_rate: rate,
                lost_reply_rate: rate,
                partial_delete_rate: 0.5,
                max_latency: std::time::Duration::from_millis(2),
                ..FaultPlan::default()
            };
            let faulty = Arc::new(FaultyBackend::new(inner.clone(), plan));
            let Ok(repo) = Repository::open(faulty.clone()).await else {
                failed += 1;
                continue;
            };
            // Each round writes a little new data.
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            std::os::unix::fs::FileExt::write_all_at(
                &f,
                &seed.to_le_bytes().repeat(512),
                seed * 65536,
            )
            .unwrap();
            let want_now = blake3::hash(&std::fs::read(&img).unwrap())
                .to_hex()
                .to_string();
            match run_backup(&repo, "vm", &img).await {
                Ok(m) => {
                    ok += 1;
                    let out = dir.path().join(format!("out{seed}"));
                    // Restoring through the faults: right data or an error.
                    match restore_to(&repo, &m, &out).await {
                        Ok(h) => assert_eq!(h, want_now),
                        Err(e) => assert!(e.to_string().contains("injected"), "{e}"),
                    }
                    let _ = std::fs::remove_file(&out);
                    let out = dir.path().join(format!("clean{seed}"));
                    assert_eq!(restore_to(&clean, &m, &out).await.unwrap(), want_now);
                    std::fs::remove_file(&out).unwrap();
                }
                Err(e) => {
                    failed += 1;
                    assert!(e.to_string().contains("injected"), "unclear error: {e}");
                }
            }
            // A sweep through the faults either finishes or stops; either
            // way nothing referenced goes.
            if let Err(e) = xfull_core::gc::run(&repo, false).await {
                assert!(e.to_string().contains("injected"), "{e}");
            }
            let report = verify(
                &clean,
                &[],
                &VerifyOptions {
                    read_data: true,
                    ..VerifyOptions::default()
                },
                Arc::default(),
            )
            .await
            .unwrap();
            assert!(report.is_clean(), "seed {seed}: {:?}", report.damaged);
            injected += faulty.injected();
        }
    });
    assert!(
        ok > 0 && failed > 0,
        "{ok} backups succeeded, {failed} failed"
    );
    assert!(injected >= 10, "{injected} faults injected");
}
