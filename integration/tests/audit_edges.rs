//! The audit at its edges, in process on 32 MiB segments (two read
//! windows each): a missed write on the parent cut just before a reported
//! change, parent nodes the audit finds missing or damaged, and a lie
//! found after a touched segment already sent part of its new chunks.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use xfull_core::backend::{Backend, PutMode};
use xfull_core::backup::backup;
use xfull_core::backup::segment::chunk_segment;
use xfull_core::keys;
use xfull_core::manifest::Manifest;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::verify::{VerifyOptions, verify};
use xfull_integration::{Region, write_image};
use xfull_local::LocalBackend;

use crate::engine::{request, rt};
use crate::windows::{MIB, SEG, changes_file, layout, repo_on, restores_to, whole_segments, write};

/// FastCDC decides a cut from the bytes up to and including the first
/// byte of the next chunk. A touched segment's audit hashes the parent
/// chunks re-chunking kept, but the byte after the last kept one belongs
/// to a freshly cut chunk: a write the source missed there moves the
/// whole segment's cut, and the audit must see that.
#[test]
fn an_audit_finds_a_missed_write_on_the_cut_before_a_reported_change() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(&img, &layout(), 8, false).unwrap();
    rt().block_on(async {
        let repo = repo_on(Arc::new(LocalBackend::in_memory())).await;
        first(&repo, &img).await;
        // A parent cut in the first segment's random data that one
        // changed byte there moves.
        let bytes = std::fs::read(&img).unwrap();
        let seg = &bytes[..SEG as usize];
        let (params, codec) = (&repo.config().chunking, repo.codec());
        let parent = chunk_segment(params, codec, seg);
        let moves = |at: &&usize| {
            let at = **at;
            let mut s = seg.to_vec();
            s[at] ^= 0x5a;
            !chunk_segment(params, codec, &s).offsets.contains(&at)
        };
        let b = *parent
            .offsets
            .iter()
            .filter(|&&o| o > MIB as usize && o < 8 * MIB as usize)
            .find(moves)
            .expect("a parent cut that one byte moves");
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[bytes[b] ^ 0x5a], b as u64).unwrap();
        let told = write(&img, &[(b as u64 + 100, 64, 11)]);
        let m = audited(&repo, &img, dir.path(), &told).await;
        let d = &m.disks[0];
        assert_eq!(d.audit.as_ref().unwrap().mismatch_at, Some(0), "cut {b}");
        assert!(d.source.starts_with("full-scan"), "{}", d.source);
        assert_eq!(d.segments, whole_segments(&repo, &img));
        restores_to(&repo, &m, dir.path(), &img).await;
    });
}

/// The audit of a segment the source calls unchanged reads the parent's
/// node: one that turns out missing, or damaged, must not be reused but
/// read in full and stored again, like any parent node found unsound.
/// (The parent check samples one reused node of the 19 here, so it
/// mostly misses both.)
#[test]
fn an_audited_unchanged_segment_with_a_missing_or_damaged_parent_node_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    // 20 segments, each with a little data.
    let layout: Vec<Region> = (0..20)
        .flat_map(|_| [Region::Random(64 << 10), Region::Hole(SEG - (64 << 10))])
        .collect();
    write_image(&img, &layout, 12, false).unwrap();
    rt().block_on(async {
        let mem = Arc::new(LocalBackend::in_memory());
        let repo = repo_on(mem.clone()).await;
        let ids: Vec<_> = first(&repo, &img).await.disks[0]
            .segments
            .iter()
            .flatten()
            .copied()
            .collect();
        let nodes: Vec<String> = ids.iter().map(keys::node).collect();
        assert_eq!(nodes.len(), 20);
        // Segment 7's node is gone; segment 13's holds other bytes.
        mem.delete_many(&[nodes[7].clone(), nodes[13].clone()])
            .await
            .unwrap();
        let garbage = xfull_core::testing::xorshift_bytes(300, 7);
        mem.put(&nodes[13], garbage.into(), PutMode::Create)
            .await
            .unwrap();
        let told = write(&img, &[(4096, 4096, 13)]);
        let m = audited(&repo, &img, dir.path(), &told).await;
        let d = &m.disks[0];
        assert_eq!(d.audit.as_ref().unwrap().mismatch_at, None);
        assert!(
            d.source.contains("2 segment(s) read in full"),
            "{}",
            d.source
        );
        assert_eq!(d.segments, whole_segments(&repo, &img));
        for i in [7, 13] {
            let stored = mem.get(&nodes[i]).await.unwrap();
            assert!(repo.decode_node(&ids[i], &stored).is_ok(), "{}", nodes[i]);
        }
        let report = verify(&repo, &[], &VerifyOptions::default(), Arc::default())
            .await
            .unwrap();
        assert!(report.is_clean(), "{:?}", report.damaged);
        restores_to(&repo, &m, dir.path(), &img).await;
    });
}

/// A touched segment whose new chunks pass a read window sends them as
/// partial jobs, stored while it is re-chunked; the audit then finds a
/// write the source missed further on. The full scan that follows must
/// leave a point that restores and verifies, whatever of those partial
/// jobs was stored.
#[test]
fn an_audit_mismatch_after_partial_jobs_leaves_a_whole_point() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(&img, &layout(), 14, false).unwrap();
    rt().block_on(async {
        let repo = repo_on(Arc::new(LocalBackend::in_memory())).await;
        first(&repo, &img).await;
        let told = write(&img, &[(2 * MIB, 20 * MIB, 15)]);
        write(&img, &[(28 * MIB, 100, 16)]);
        let m = audited(&repo, &img, dir.path(), &told).await;
        let d = &m.disks[0];
        assert_eq!(d.audit.as_ref().unwrap().mismatch_at, Some(0));
        assert_eq!(d.segments, whole_segments(&repo, &img));
        restores_to(&repo, &m, dir.path(), &img).await;
        let opts = VerifyOptions {
            read_data: true,
            ..VerifyOptions::default()
        };
        let report = verify(&repo, &[], &opts, Arc::default()).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.damaged);
    });
}

/// The first backup of `img`, a full scan.
async fn first(repo: &Repository, img: &Path) -> Manifest {
    let progress = Arc::new(Progress::default());
    backup(repo, request("v", img), progress).await.unwrap()
}

/// An incremental backup of `img` whose change source reports `told`,
/// every segment audited.
async fn audited(repo: &Repository, img: &Path, dir: &Path, told: &[Range<u64>]) -> Manifest {
    let mut req = request("v", img);
    let changes = changes_file(&dir.join("c.json"), told);
    req.changes.insert("d".parse().unwrap(), changes);
    req.audit_percent = 100.0;
    backup(repo, req, Arc::new(Progress::default()))
        .await
        .unwrap()
}
