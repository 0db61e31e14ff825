//! When a backup checks the sweeps before it commits (step (c) of the
//! protocol, docs/design.md "Concurrency"): its first round beside its
//! last uploads, and a fresh round when those uploads took so long that
//! the first is too old to commit on.

use std::sync::Arc;
use std::time::Duration;

use xfull_core::backend::Backend;
use xfull_core::repo::Repository;
use xfull_core::testing::InFlight;

use crate::engine::{in_flight_repo, mixed_image, rt, run_backup, small_config};

/// A backup's first check of the sweeps (a lease write, then the lease's
/// time and the sweep log) runs while its last pack is uploaded (here
/// its only one), instead of after that and the index object.
#[test]
fn a_backup_checks_the_sweeps_beside_its_last_uploads() {
    let (_dir, img) = mixed_image(5);
    rt().block_on(async {
        let (b, repo) = in_flight_repo().await;
        let m = run_backup(&repo, "vm", &img).await.unwrap();
        assert!(m.stats.new_chunks > 0);
        let log = b.requests();
        assert!(
            log.iter()
                .any(|r| r.kind == "PUT" && r.key.starts_with("index/")),
            "{log:#?}"
        );
        let beside = |kind: &str, prefix: &str| b.overlapped(("PUT", "packs/"), (kind, prefix));
        assert!(
            beside("PUT", "leases/") || beside("LIST", "gc/"),
            "the sweeps were checked after the last uploads: {log:#?}"
        );
        // The pack's bytes still count in the disk's figures, though its
        // put ended after the disk's pipeline did.
        use futures::TryStreamExt;
        let packs: Vec<_> = b.inner.list("packs/").try_collect().await.unwrap();
        let pack_bytes: u64 = packs.iter().map(|p| p.size).sum();
        let d = &m.disks[0].stats;
        assert!(
            pack_bytes > 0 && d.bytes_uploaded >= pack_bytes,
            "{d:?}, packs {pack_bytes}"
        );
        assert!(d.bytes_stored >= pack_bytes, "{d:?}, packs {pack_bytes}");
    });
}

/// The first round began beside the uploads; when the last of them (the
/// index object, here slowed to twice a quarter of the lease TTL) ends
/// more than a quarter TTL after it, the backup checks the sweeps again
/// before the manifest, instead of committing on the old round and
/// finding a late commit only after it (review found sweeps that removed
/// what such a point relied on before it was repaired).
#[test]
fn a_backup_whose_last_upload_was_slow_checks_the_sweeps_again_before_it_commits() {
    let (_dir, img) = mixed_image(5);
    rt().block_on(async {
        let mut cfg = small_config();
        cfg.protocol.lease_ttl_secs = 4;
        let slow = InFlight::default().slow_puts("index/", Duration::from_secs(2));
        let b = Arc::new(slow);
        let repo = Repository::init(b.clone(), cfg).await.unwrap();
        // The first backup's requests (init's, the lease's) are left out.
        let before = b.requests().len();
        let m = run_backup(&repo, "vm", &img).await.unwrap();
        assert!(m.stats.new_chunks > 0, "{:?}", m.stats);
        let log = b.requests().split_off(before);
        let is = |r: &xfull_core::testing::in_flight::Request, kind: &str, prefix: &str| {
            r.kind == kind && r.key.starts_with(prefix)
        };
        let index = log
            .iter()
            .find(|&r| is(r, "PUT", "index/"))
            .expect("index PUT");
        let manifest = log
            .iter()
            .find(|&r| is(r, "PUT", "points/"))
            .expect("manifest PUT");
        let checked_between = log
            .iter()
            .any(|r| is(r, "LIST", "gc/") && r.began > index.ended && r.ended < manifest.began);
        assert!(
            checked_between,
            "no check of the sweeps between the slow upload and the commit: {log:#?}"
        );
    });
}
