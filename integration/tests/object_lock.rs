//! Object lock over a store that plays S3 Object Lock (`LockSim`: a put
//! may carry a retention, a locked object refuses deletion and shortening,
//! retention is judged by the real clock). Short periods (seconds) so that
//! generations turn and retentions end within the test.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use xfull_core::backup::backup;
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::lock::{LockMode, ObjectLock};
use xfull_core::manifest::Manifest;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::testing::{LockSim, MemBackend};
use xfull_integration::{Region, write_image};

use crate::engine::request;

const SEG: u64 = 1 << 20;
const LOCK: ObjectLock = ObjectLock {
    mode: LockMode::Compliance,
    retain_secs: 3,
    generation_secs: 6,
};

/// A repository locked by `lock` over a store that plays S3 Object Lock
/// (the store and the simulator returned too), with 1 MiB segments and a
/// clock margin of `margin` seconds when given.
pub(crate) async fn locked_sim(
    lock: ObjectLock,
    margin: Option<u64>,
) -> (Arc<MemBackend>, Arc<LockSim>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let sim = Arc::new(LockSim::new(mem.clone()));
    let mut config = RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap();
    config.object_lock = Some(lock);
    if let Some(m) = margin {
        config.protocol.clock_margin_secs = m;
    }
    let repo = Repository::init(sim.clone(), config).await.unwrap();
    (mem, sim, repo)
}

/// Sleeps until a generation has just begun, so that what follows within
/// a second or two stays in it.
async fn start_of_generation() -> u64 {
    let g = LOCK.generation_of(Utc::now());
    let next = LOCK.until_of(g) - Duration::seconds(LOCK.retain_secs as i64);
    let wait = (next - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + StdDuration::from_millis(50)).await;
    LOCK.generation_of(Utc::now())
}

async fn back_up(repo: &Repository, image: &std::path::Path) -> Manifest {
    backup(repo, request("vm", image), Arc::new(Progress::default()))
        .await
        .unwrap()
}

async fn keys(mem: &MemBackend, prefix: &str) -> Vec<String> {
    use xfull_core::backend::Backend;
    mem.list(prefix)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap()
}

fn touch(image: &std::path::Path, at: u64, byte: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte; 200_000], at).unwrap();
}

/// Every object a point relies on is put locked; retention is extended
/// once per generation (a backup in its parent's generation extends
/// nothing, the first in a new one looks at its disk whole); prune and gc
/// never try to delete a locked object and say until when; once the
/// retentions end, they delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_points_and_garbage_outlive_prune_and_gc_until_retention_ends() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk");
    write_image(
        &image,
        &[Region::Random(3 << 20), Region::Text(2 << 20)],
        7,
        true,
    )
    .unwrap();
    let (mem, sim, repo) = locked_sim(LOCK, Some(0)).await;

    // Two backups in one generation.
    let g1 = start_of_generation().await;
    let started = Utc::now();
    let a = back_up(&repo, &image).await;
    touch(&image, SEG, 1);
    let b = back_up(&repo, &image).await;
    assert_eq!(
        LOCK.generation_of(Utc::now()),
        g1,
        "the test outran its generation"
    );
    for m in [&a, &b] {
        assert_eq!(m.disks[0].lock_generation, Some(g1));
    }
    let lb = b.stats.lock.unwrap();
    assert_eq!(lb.disks_renewed, 0, "same generation as the parent: {lb:?}");
    assert_eq!(lb.extended, 0, "{lb:?}");
    // Locked: packs, nodes, manifests, the config; not index objects or
    // leases.
    let mut locked = Vec::new();
    for prefix in ["packs/", "nodes/", "points/", "config"] {
        let ks = keys(&mem, prefix).await;
        assert!(!ks.is_empty(), "{prefix}");
        locked.extend(ks);
    }
    for k in &locked {
        let r = sim
            .lock_of(k)
            .unwrap_or_else(|| panic!("{k} is not locked"));
        assert_eq!(r.mode, LockMode::Compliance);
        assert!(r.until >= started + Duration::seconds(3), "{k}: {r:?}");
        assert_eq!(r.until, LOCK.until_of(g1), "{k}");
    }
    for prefix in ["index/", "leases/"] {
        for k in keys(&mem, prefix).await {
            assert!(sim.lock_of(&k).is_none(), "{k} should not be locked");
        }
    }

    // Garbage under lock: chunks stored by nobody's point (as a killed
    // backup leaves them).
    let stray = b"a chunk no point names".to_vec();
    let placement = repo.chunks();
    let id = repo.codec().chunk_id(&stray);
    let blob = placement.encode_chunk(&id, &stray, 3).unwrap();
    placement
        .store(vec![(id, stray.len(), blob)])
        .await
        .unwrap();
    let packs_before = keys(&mem, "packs/").await.len();
    mem.clock().advance(Duration::hours(1));
    let gc = xfull_core::gc::run(&repo, false).await.unwrap();
    assert_eq!(gc.packs_deleted, 0, "{gc:?}");
    assert!(gc.locked_kept >= 1, "{gc:?}");
    assert!(gc.locked_first_until.unwrap() > Utc::now());
    assert_eq!(keys(&mem, "packs/").await.len(), packs_before);

    // prune keeps a locked point and says until when.
    let pins = xfull_core::prune::read_pins(&repo).await.unwrap();
    let doomed = [(a.vm.clone(), a.id.clone())];
    let removed = xfull_core::prune::remove(&repo, &pins, &doomed)
        .await
        .unwrap();
    assert_eq!(removed.removed, 0);
    assert_eq!(removed.locked.len(), 1);
    assert_eq!(removed.locked[0].until, LOCK.until_of(g1));
    assert_eq!(sim.refused_deletes(), 0, "nothing locked was even tried");

    // A new generation: the first backup looks at its disk whole and
    // extends what it inherits; the next one in it extends nothing.
    let g2 = start_of_generation().await;
    assert!(g2 > g1);
    // Another VM with the same data, no parent: what it relies on it
    // found through the index (packs) or already stored (nodes), written
    // in g1; it extends exactly those.
    let twin_image = dir.path().join("twin");
    std::fs::copy(&image, &twin_image).unwrap();
    let twin = backup(
        &repo,
        request("twin", &twin_image),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let lt = twin.stats.lock.unwrap();
    assert_eq!(lt.disks_renewed, 0, "{lt:?}");
    assert!(lt.extended >= 2, "its packs and nodes: {lt:?}");
    let nodes = xfull_core::point_objects::nodes_of([twin.disks[0].segments.as_slice()]);
    let packs = xfull_core::point_objects::packs_of_nodes(&repo, &nodes, &Progress::default())
        .await
        .unwrap();
    assert!(!packs.packs.is_empty());
    for p in packs.packs {
        let k = xfull_core::keys::pack(&p);
        assert_eq!(sim.lock_of(&k).unwrap().until, LOCK.until_of(g2), "{k}");
    }
    for n in &nodes {
        let k = xfull_core::keys::node(n);
        assert_eq!(sim.lock_of(&k).unwrap().until, LOCK.until_of(g2), "{k}");
    }
    touch(&image, 2 * SEG, 2);
    let ext_before = sim.extensions();
    let c = back_up(&repo, &image).await;
    let lc = c.stats.lock.unwrap();
    // Its disk looked at whole (a node and a HEAD per node and pack); the
    // twin had already extended everything the two share, so only what
    // differs is extended, each once.
    assert_eq!(lc.disks_renewed, 1, "{lc:?}");
    assert!(lc.checked as usize > c.disks[0].segments.len(), "{lc:?}");
    assert_eq!(sim.extensions() - ext_before, lc.extended);
    touch(&image, 3 * SEG, 3);
    let d = back_up(&repo, &image).await;
    assert_eq!(
        LOCK.generation_of(Utc::now()),
        g2,
        "the test outran its generation"
    );
    let ld = d.stats.lock.unwrap();
    assert_eq!((ld.disks_renewed, ld.extended), (0, 0), "{ld:?}");
    // What d relies on is locked into g2's retention; a's manifest not.
    for k in keys(&mem, "nodes/").await {
        let until = sim.lock_of(&k).unwrap().until;
        assert!(
            until == LOCK.until_of(g1) || until == LOCK.until_of(g2),
            "{k}"
        );
    }
    for n in d.disks[0].segments.iter().flatten() {
        let k = xfull_core::keys::node(n);
        assert_eq!(sim.lock_of(&k).unwrap().until, LOCK.until_of(g2), "{k}");
    }

    // Once a's retention (g1's) has ended, prune removes it and gc deletes
    // the stray pack, still without a refused delete.
    let ended: DateTime<Utc> = LOCK.until_of(g1);
    let wait = (ended - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + StdDuration::from_millis(300)).await;
    let removed = xfull_core::prune::remove(&repo, &pins, &doomed)
        .await
        .unwrap();
    assert_eq!((removed.removed, removed.locked.len()), (1, 0));
    mem.clock().advance(Duration::hours(1));
    let gc = xfull_core::gc::run(&repo, false).await.unwrap();
    assert!(gc.packs_deleted >= 1, "{gc:?}");
    assert_eq!(sim.refused_deletes(), 0);
    // d still restores whole: nothing it relies on was touched.
    let opts = xfull_core::verify::VerifyOptions {
        read_data: true,
        ..Default::default()
    };
    let report = xfull_core::verify::verify(&repo, &[], &opts, Arc::new(Progress::default()))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.points, 4);
}

/// A machine whose clock is behind the store's by more than the clock
/// margin would lock for less than the lock period: its backup is refused
/// before it stores anything, and its lease is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_the_store_is_refused_under_object_lock() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk");
    write_image(&image, &[Region::Random(1 << 20)], 9, true).unwrap();
    let (mem, _sim, repo) = locked_sim(LOCK, None).await;
    // The store's clock a day ahead of this machine's.
    let ahead = Utc::now() + Duration::days(1) - mem.clock().now();
    mem.clock().advance(ahead);
    let e = backup(&repo, request("vm", &image), Arc::new(Progress::default()))
        .await
        .unwrap_err();
    assert!(matches!(e, xfull_core::Error::ClockBehind { .. }), "{e}");
    assert!(
        e.to_string().contains("behind the clock of the store at"),
        "{e}"
    );
    assert!(keys(&mem, "points/").await.is_empty());
    assert!(keys(&mem, "leases/").await.is_empty());
}

/// `forget` of a VM's newest point that object lock keeps: the point
/// stays, so it is still the newest and its change information applies;
/// forget does not say it removed the newest point, and writes no
/// `removed/` record (review, stop 56: it said so from its plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_of_a_newest_point_object_lock_keeps_does_not_say_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk");
    write_image(&image, &[Region::Random(1 << 20)], 11, true).unwrap();
    let lock = ObjectLock {
        retain_secs: 3600,
        generation_secs: 3600,
        ..LOCK
    };
    let (mem, _sim, repo) = locked_sim(lock, None).await;
    let m = back_up(&repo, &image).await;
    let point = (m.vm.clone(), m.id.clone());
    let out = xfull_core::prune::forget::forget(&repo, &[point], false)
        .await
        .unwrap();
    assert_eq!(out.removed.locked.len(), 1, "{out:?}");
    assert_eq!(out.removed.removed, 0, "{out:?}");
    assert!(out.newest_removed.is_empty(), "{out:?}");
    assert!(keys(&mem, "removed/").await.is_empty());
    assert_eq!(keys(&mem, "points/").await.len(), 1);
}
