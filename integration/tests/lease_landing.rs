//! A lease write the backup stops waiting for still lands.
//!
//! A server that has received a PUT applies it even if the client drops
//! the request (Ctrl-C drops the backup's work, a heartbeat is aborted).
//! If the cancelled backup then deletes its lease before that PUT is
//! applied, the PUT brings the lease back, and every gc takes it for a
//! running backup until its TTL runs out. Here the store applies each
//! lease PUT a while after it was sent, whoever still waits for it, and
//! the backup is cancelled while one is on its way: no lease may be left
//! once the store has applied everything it was sent.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use xfull_core::Error;
use xfull_core::backend::{Backend, ObjectMeta};
use xfull_core::backup::backup;
use xfull_core::config::RepoConfig;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::testing::LatePuts;
use xfull_integration::{Region, write_image};
use xfull_local::LocalBackend;

use crate::engine::{request, rt, small_config};

/// How long after it was sent the store applies a lease PUT.
const LAG: Duration = Duration::from_millis(300);

/// How long a pack upload takes: long enough for the lease writes the
/// tests cancel at (heartbeats and check rounds) to come before the
/// commit.
const PACK_UPLOAD: Duration = Duration::from_secs(2);

/// The leases in the store once every PUT it was sent has been applied,
/// after a backup cancelled when its `nth` lease write was sent.
fn leases_left_after_cancel(nth: u64, config: RepoConfig) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    write_image(&img, &[Region::Random(6 << 20)], nth, true).unwrap();
    rt().block_on(async {
        let inner = Arc::new(LocalBackend::in_memory());
        let progress = Arc::new(Progress::default());
        let store = Arc::new(
            LatePuts::new(inner.clone(), "leases/", LAG, nth, progress.clone())
                .slow_puts("packs/", PACK_UPLOAD),
        );
        let repo = Repository::init(store.clone(), config).await.unwrap();
        let r = backup(&repo, request("vm", &img), progress).await;
        assert!(
            matches!(r, Err(Error::Cancelled { .. })),
            "lease write {nth}: the backup was cancelled, got {r:?}"
        );
        assert!(store.sent() >= nth, "lease write {nth} was sent");
        tokio::time::sleep(LAG * 3).await;
        let left: Vec<ObjectMeta> = inner.list("leases/").try_collect().await.unwrap();
        left.into_iter().map(|m| m.key).collect()
    })
}

/// Cancelled while the first check round's lease write is on its way (the
/// first write, `begin`'s, is awaited before any work starts).
#[test]
fn a_cancelled_backup_leaves_no_lease_behind_a_write_in_flight() {
    let left = leases_left_after_cancel(2, small_config());
    assert!(left.is_empty(), "a lease came back: {left:?}");
}

/// Cancelled while a heartbeat's write is on its way: with a 1 s TTL the
/// heartbeat writes every 250 ms, so the lease writes after the first
/// are heartbeats or check rounds, whichever comes first.
#[test]
fn a_cancelled_backup_leaves_no_lease_behind_a_heartbeat_in_flight() {
    let mut config = small_config();
    config.protocol.lease_ttl_secs = 1;
    config.protocol.sweep_ttl_secs = 1;
    for nth in 2..=4 {
        let left = leases_left_after_cancel(nth, config.clone());
        assert!(
            left.is_empty(),
            "lease write {nth}: a lease came back: {left:?}"
        );
    }
}
