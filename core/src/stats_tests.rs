//! The leases stats counts, by state: a finished backup's ended lease is
//! not a running or killed backup; sums that saturate.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::id::PointId;
use crate::repo::Repository;
use crate::session::Session;
use crate::stats::{LeaseStates, RepoStats, add_points, collect};
use crate::testing::MemBackend;

#[tokio::test]
async fn leases_are_counted_by_state() {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let vm = "vm".parse().unwrap();
    // Killed: begun, never ended, not refreshed for longer than the TTL.
    let killed = Session::begin(&repo, &vm, "h").await.unwrap();
    mem.clock()
        .advance(repo.config().protocol.ttl() + chrono::Duration::seconds(1));
    // Two backups that committed, and one still running.
    for _ in 0..2 {
        let done = Session::begin(&repo, &vm, "h").await.unwrap();
        let point: PointId = "20261205T190053Z-a8a2".parse().unwrap();
        done.end(Some(point)).await.unwrap();
    }
    let running = Session::begin(&repo, &vm, "h").await.unwrap();
    // A damaged lease, and an object not named like one.
    let damaged = "leases/20261205T190052Z-bd3a940f46ce59b4";
    mem.put(
        damaged,
        Bytes::from_static(b"XFL1 no lease"),
        PutMode::Create,
    )
    .await
    .unwrap();
    mem.put(
        "leases/notes.txt",
        Bytes::from_static(b"x"),
        PutMode::Create,
    )
    .await
    .unwrap();

    let s = collect(&repo, mem.clock().now()).await.unwrap();
    assert_eq!(s.leases, 6);
    let want = LeaseStates {
        ended: 2,
        open: 1,
        stale: 1,
        unreadable: 2,
    };
    assert_eq!(s.lease_states, want);
    drop((killed, running));
}

/// Points' sizes saturate instead of overflowing: a manifest may
/// declare 256 TiB of disks, and 65536 such points (a hostile
/// repository's, say) overflowed the sum (review 94).
#[test]
fn logical_bytes_saturate() {
    let mut s = RepoStats::default();
    let huge = u64::MAX / 2 + 1;
    add_points(&mut s, vec![("a", huge), ("a", huge), ("b", 5)]);
    assert_eq!(s.logical_bytes, u64::MAX);
    assert_eq!(s.vms["a"].logical_bytes, u64::MAX);
    assert_eq!(s.vms["b"].logical_bytes, 5);
    assert_eq!(s.points, 3);
}
