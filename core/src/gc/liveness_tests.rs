//! Nobody waits or gives way for nothing.
//!
//! One sweep runs at a time: a sweep gives way to a running one with a
//! fresh marker. A sweep that is over (it gave way itself, or stopped
//! after going silent) deletes nothing more, so it must not make later
//! sweeps give way, although its last marker write is fresh and it leaves
//! no done marker. (Before, every sweep that gave way made the next one
//! give way in turn while sweeps kept starting, and a resumed sweep that
//! stopped itself blocked the next gc for the sweep TTL.)
//!
//! A backup waits for a delete batch in flight only if the batch may have
//! been chosen before the sweep saw the lease as it is now. A sweep that
//! began after the backup's check wrote its final lease and listed the
//! sweeps sees that lease at every look, so a backup still checking (after
//! waiting for an earlier one) must not wait for it: in a tight gc loop
//! that could go on sweep after sweep.

use chrono::Duration;

use crate::backend::Backend;
use crate::error::Error;
use crate::gc::Sweep;
use crate::gc::markers::{Phase, SweepState};
use crate::gc::sweep::Candidate;
use crate::gc::test_packs::{mem_repo, store_pack};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::repo::Repository;
use crate::session::{Check, Session};

const TTL: u64 = 60;

async fn run(mut sweep: Sweep) {
    sweep.read_leases().await.unwrap();
    sweep.read_points().await.unwrap();
    sweep.mark().await.unwrap();
    sweep.delete().await.unwrap();
    sweep.finish().await.unwrap();
}

#[tokio::test]
async fn a_sweep_that_gave_way_does_not_make_the_next_one_give_way() {
    let (_, repo) = mem_repo(TTL).await;
    let first = Sweep::begin(&repo, false).await.unwrap();
    assert!(first.yielded_to().is_none());
    let second = Sweep::begin(&repo, false).await.unwrap();
    assert_eq!(second.yielded_to().map(|y| y.0), Some(first.seq()));
    // The report says how long a killed sweep would keep others waiting.
    let reason = second.yield_reason().unwrap();
    assert!(
        reason.starts_with(&format!("gc sweep {} is running on ", first.seq()))
            && reason.contains("refreshed 0 s ago")
            && [TTL, TTL - 1]
                .iter()
                .any(|left| reason.contains(&format!("running {left} s from now"))),
        "{reason}"
    );
    assert_eq!(first.yield_reason(), None);
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
    let (mem, repo) = mem_repo(TTL).await;
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

/// Stores an unreferenced chunk in a pack of its own, indexed: garbage.
/// Returns the pack's name.
async fn garbage(repo: &Repository, tag: u8) -> ObjectId {
    let data = vec![tag; 100];
    store_pack(repo, &[(ObjectId::of(&data), data)]).await.0
}

/// A sweep up to its first delete batch, announced (a batch in flight):
/// the candidates `pick` keeps.
async fn announce(repo: &Repository, pick: impl Fn(&Candidate) -> bool) -> (Sweep, Vec<Candidate>) {
    let mut sweep = Sweep::begin(repo, false).await.unwrap();
    assert!(sweep.yielded_to().is_none());
    sweep.read_leases().await.unwrap();
    sweep.read_points().await.unwrap();
    sweep.mark().await.unwrap();
    sweep.prepare_packs().await.unwrap();
    let mut batch: Vec<_> = sweep
        .pack_candidates()
        .into_iter()
        .filter(|c| c.key().starts_with(crate::keys::PACKS) && pick(c))
        .collect();
    assert!(!batch.is_empty());
    sweep.begin_batch(&mut batch).await.unwrap();
    (sweep, batch)
}

#[tokio::test]
async fn a_backup_does_not_wait_for_a_sweep_that_began_after_its_final_lease() {
    let (mem, repo) = mem_repo(TTL).await;
    let (g1, g2, g3) = (
        garbage(&repo, 1).await,
        garbage(&repo, 2).await,
        garbage(&repo, 3).await,
    );
    mem.clock().advance(Duration::hours(1));
    let vm = "a".parse().unwrap();
    let mut session = Session::begin(&repo, &vm, "h").await.unwrap();
    // The backup found g2 stored and relies on it (written to the lease at
    // the next check).
    session.depend([ObjectRef::Pack(g2)]);

    // A batch announced before the check writes the lease: wait for it.
    let (mut first, mut batch) = announce(&repo, |c| c.id() == g1).await;
    let check = session.check().await.unwrap();
    assert!(
        matches!(check, Check::Wait { seq, .. } if seq == first.seq()),
        "{check:?}"
    );
    first.commit_batch(&mut batch).await.unwrap();
    first.finish().await.unwrap();

    // The next sweep began after that check: its batch respects the lease
    // (g2 is no candidate), so the backup goes on without waiting.
    let (mut second, mut batch) = announce(&repo, |_| true).await;
    assert!(batch.iter().all(|c| c.id() == g3));
    loop {
        let check = session.check().await.unwrap();
        match &check {
            Check::Clear => break,
            Check::Wait { .. } => panic!(
                "sweep {} began after the lease was final: {check:?}",
                second.seq()
            ),
            Check::Verify { deps, .. } => {
                for d in deps {
                    mem.head(&d.key()).await.unwrap();
                }
                session.settle(&check);
            }
        }
    }
    second.commit_batch(&mut batch).await.unwrap();
    second.finish().await.unwrap();
    mem.head(&ObjectRef::Pack(g2).key()).await.unwrap();
    assert!(mem.head(&ObjectRef::Pack(g3).key()).await.is_err());
}

/// A settle round that only looked at the deps for the first time, and
/// found them all, is the last (`Session::settle` says so): no check
/// follows it. A sweep that begins after it sees the lease naming the
/// deps, and deletes the other garbage but not them.
#[tokio::test]
async fn after_the_last_round_a_new_sweep_spares_the_deps() {
    let (mem, repo) = mem_repo(TTL).await;
    let (g1, g2) = (garbage(&repo, 1).await, garbage(&repo, 2).await);
    mem.clock().advance(Duration::hours(1));
    let vm = "a".parse().unwrap();
    let mut session = Session::begin(&repo, &vm, "h").await.unwrap();
    session.depend([ObjectRef::Pack(g2)]);
    let check = session.check().await.unwrap();
    assert!(
        matches!(&check, Check::Verify { sweeps, all: false, deps, .. }
            if sweeps.is_empty() && deps[..] == [ObjectRef::Pack(g2)]),
        "{check:?}"
    );
    mem.head(&ObjectRef::Pack(g2).key()).await.unwrap();
    assert!(session.settle(&check), "the last round");
    run(Sweep::begin(&repo, false).await.unwrap()).await;
    mem.head(&ObjectRef::Pack(g2).key()).await.unwrap();
    assert!(
        mem.head(&ObjectRef::Pack(g1).key()).await.is_err(),
        "the sweep ran: the other garbage is gone"
    );
}
