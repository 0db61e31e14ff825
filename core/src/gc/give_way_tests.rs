//! One sweep runs at a time: a sweep gives way to a running one with a
//! fresh marker. A sweep that is over (it gave way itself, or stopped
//! after going silent) deletes nothing more, so it must not make later
//! sweeps give way, although its last marker write is fresh and it leaves
//! no done marker. (Before, every sweep that gave way made the next one
//! give way in turn while sweeps kept starting, and a resumed sweep that
//! stopped itself blocked the next gc for the sweep TTL.)

use std::sync::Arc;

use chrono::Duration;

use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::error::Error;
use crate::gc::Sweep;
use crate::gc::markers::{Phase, SweepState};
use crate::repo::Repository;
use crate::testing::MemBackend;

const TTL: u64 = 60;

async fn repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: TTL,
        clock_margin_secs: 0,
        sweep_ttl_secs: TTL,
    };
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

async fn run(mut sweep: Sweep) {
    sweep.read_leases().await.unwrap();
    sweep.read_points().await.unwrap();
    sweep.mark().await.unwrap();
    sweep.delete().await.unwrap();
    sweep.finish().await.unwrap();
}

#[tokio::test]
async fn a_sweep_that_gave_way_does_not_make_the_next_one_give_way() {
    let (_, repo) = repo().await;
    let first = Sweep::begin(&repo, false).await.unwrap();
    assert!(first.yielded_to().is_none());
    let second = Sweep::begin(&repo, false).await.unwrap();
    assert_eq!(second.yielded_to().map(|y| y.0), Some(first.seq()));
    let s = second.seq();
    run(first).await;

    let third = Sweep::begin(&repo, false).await.unwrap();
    assert_eq!(
        third.yielded_to(),
        None,
        "sweep {s} gave way and is over; nothing runs"
    );
}

#[tokio::test]
async fn a_sweep_that_stopped_itself_does_not_make_the_next_one_give_way() {
    let (mem, repo) = repo().await;
    let mut paused = Sweep::begin(&repo, false).await.unwrap();
    // Paused past half the sweep TTL: on resuming, it says it stopped.
    mem.clock().advance(Duration::seconds(TTL as i64));
    let err = paused.read_leases().await.unwrap_err();
    assert!(
        matches!(err, Error::SweepStopped { damage: false, .. }),
        "{err}"
    );
    let seq = paused.seq();
    let marker = SweepState::load(&repo, seq, false).await.unwrap().unwrap();
    assert_eq!(marker.phase, Phase::Stopped);

    let next = Sweep::begin(&repo, false).await.unwrap();
    assert_eq!(
        next.yielded_to(),
        None,
        "sweep {seq} stopped itself; nothing runs"
    );
    run(next).await;
}
