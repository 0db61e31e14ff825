//! Object lock is the target's own: copying from a locked source into a
//! target locked otherwise locks every pack, node and manifest of the
//! target with the target's retention and records the target's
//! generation in the manifests; into an unlocked target, nothing of the
//! source's lock state travels.

use std::sync::Arc;

use futures::TryStreamExt;

use super::tests::{back_up, data, every_point, run};
use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::lock::{LockMode, ObjectLock};
use crate::repo::Repository;
use crate::testing::{LockSim, MemBackend};

const SOURCE_LOCK: ObjectLock = ObjectLock {
    mode: LockMode::Governance,
    retain_secs: 3_600,
    generation_secs: 7 * 3_600,
};
const TARGET_LOCK: ObjectLock = ObjectLock {
    mode: LockMode::Compliance,
    retain_secs: 2 * 86_400,
    generation_secs: 10 * 86_400,
};

fn config(lock: Option<ObjectLock>) -> RepoConfig {
    let mut c = RepoConfig::new(1 << 20, ChunkParams::from_avg(16 << 10), 3).unwrap();
    c.object_lock = lock;
    c.protocol.clock_margin_secs = 0;
    c
}

/// A target made like `source` over `backend`, with `lock`.
async fn like(
    backend: Arc<dyn Backend>,
    lock: Option<ObjectLock>,
    source: &Repository,
) -> Repository {
    Repository::init_like(
        backend,
        config(lock),
        source,
        None,
        crate::crypto::Argon2Params::DEFAULT,
    )
    .await
    .unwrap()
}

async fn keys_of(b: &MemBackend, prefix: &str) -> Vec<String> {
    let metas: Vec<_> = b.list(prefix).try_collect().await.unwrap();
    metas.into_iter().map(|m| m.key).collect()
}

#[tokio::test]
async fn a_locked_target_locks_what_it_gets_with_its_own_retention() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Arc::new(MemBackend::default());
    let source = Repository::init(
        Arc::new(LockSim::new(sm.clone())),
        config(Some(SOURCE_LOCK)),
    )
    .await
    .unwrap();
    let one = data(3 << 20, 30);
    let mut two = one.clone();
    two[(1 << 20) + 10..(1 << 20) + 40_000].copy_from_slice(&data(39_990, 31));
    let a1 = back_up(&source, &dir, "a", &one).await;
    let a2 = back_up(&source, &dir, "a", &two).await;
    assert!(a2.disks[0].lock_generation.is_some());

    // Locked otherwise.
    let tm = Arc::new(MemBackend::default());
    let sim = Arc::new(LockSim::new(tm.clone()));
    let target = like(sim.clone(), Some(TARGET_LOCK), &source).await;
    let g = TARGET_LOCK.current(chrono::Duration::zero());
    run(&source, &target, every_point(&[&a1, &a2]))
        .await
        .unwrap();
    for prefix in ["packs/", "nodes/", "points/"] {
        let keys = keys_of(&tm, prefix).await;
        assert!(!keys.is_empty(), "{prefix}");
        for k in keys {
            let r = sim
                .lock_of(&k)
                .unwrap_or_else(|| panic!("{k} is not locked"));
            assert_eq!(r, TARGET_LOCK.retention_of(g), "{k}");
        }
    }
    for m in [&a1, &a2] {
        let copied = target.load_manifest(&m.vm, &m.id).await.unwrap();
        assert_eq!(
            copied.disks[0].lock_generation,
            Some(g),
            "{}",
            m.point_name()
        );
        assert!(copied.stats.lock.is_some());
        assert_eq!(copied.disks[0].segments, m.disks[0].segments);
    }
    // The second point builds on the first, in the same generation:
    // nothing inherited needed a look.
    let second = target.load_manifest(&a2.vm, &a2.id).await.unwrap();
    assert_eq!(second.stats.lock.unwrap().disks_renewed, 0);

    // Unlocked: the source's lock state stays behind.
    let plain = Arc::new(MemBackend::default());
    let unlocked = like(plain.clone(), None, &source).await;
    run(&source, &unlocked, every_point(&[&a1, &a2]))
        .await
        .unwrap();
    for m in [&a1, &a2] {
        let copied = unlocked.load_manifest(&m.vm, &m.id).await.unwrap();
        assert_eq!(copied.disks[0].lock_generation, None);
        assert_eq!(copied.stats.lock, None);
    }
}

/// A copy into a locked target whose clock is a day ahead of this
/// machine's would lock for less than the lock period: refused before
/// anything is stored, and its lease is gone.
#[tokio::test]
async fn a_clock_behind_a_locked_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = Repository::init(Arc::new(MemBackend::default()), config(None))
        .await
        .unwrap();
    let a = back_up(&source, &dir, "a", &data(1 << 20, 40)).await;
    let tm = Arc::new(MemBackend::default());
    let target = like(
        Arc::new(LockSim::new(tm.clone())),
        Some(TARGET_LOCK),
        &source,
    )
    .await;
    let ahead = chrono::Utc::now() + chrono::Duration::days(1) - tm.clock().now();
    tm.clock().advance(ahead);
    let e = run(&source, &target, every_point(&[&a])).await.unwrap_err();
    assert!(
        matches!(e, crate::error::Error::ClockBehind { behind_secs, margin_secs: 0, .. }
            if behind_secs > 86_000),
        "{e}"
    );
    for prefix in ["points/", "leases/", "packs/", "nodes/"] {
        assert!(keys_of(&tm, prefix).await.is_empty(), "{prefix}");
    }
}
