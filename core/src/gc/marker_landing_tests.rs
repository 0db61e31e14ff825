//! A marker write the sweep stops waiting for still lands.
//!
//! A gc asked to stop aborts its heartbeat and writes its marker
//! `Stopped`. A store that had received the heartbeat's PUT applies it
//! whether or not the client still waits: if that lands after `Stopped`,
//! the marker says the sweep is marking or deleting again, and backups
//! wait on it until it goes stale. Here the store applies each marker PUT
//! a while after it was sent, and the sweep is stopped while one is on
//! its way: once everything sent has been applied, the marker must still
//! say `Stopped`.

use std::sync::Arc;
use std::time::Duration;

use super::markers::{Phase, SweepState};
use super::test_packs::{mem_repo, store_pack};
use super::{PackOptions, run_with};
use crate::error::Error;
use crate::gc::pack_sweep_tests::{chunk, point};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::LatePuts;

/// How long after it was sent the store applies a marker PUT (the
/// heartbeat writes every 250 ms with a 1 s TTL).
const LAG: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sweeps_marker_stays_stopped_behind_a_heartbeat_in_flight() {
    let mut stopped = 0;
    for nth in 2..=6 {
        let (mem, repo) = mem_repo(1).await;
        let c: Vec<_> = (0..8).map(chunk).collect();
        for part in c.chunks(2) {
            store_pack(&repo, part).await;
        }
        point(&repo, 1, &c[..3]).await;
        mem.clock().advance(chrono::Duration::hours(1));
        let progress = Arc::new(Progress::default());
        let late = Arc::new(LatePuts::new(
            mem.clone(),
            "gc/sweeps/",
            LAG,
            nth,
            progress.clone(),
        ));
        let on_late = Repository::open(late).await.unwrap();
        let packs = PackOptions::for_repository(on_late.config(), None);
        match run_with(&on_late, false, packs, &progress).await {
            Err(Error::Cancelled { .. }) => stopped += 1,
            // Finished before it looked at the cancellation again.
            Ok(_) => continue,
            Err(e) => panic!("marker write {nth}: {e}"),
        }
        tokio::time::sleep(LAG * 3).await;
        let marker = SweepState::load(&repo, 1, false).await.unwrap().unwrap();
        assert_eq!(marker.phase, Phase::Stopped, "marker write {nth}");
    }
    assert!(stopped >= 3, "{stopped} of 5 sweeps were stopped");
}
