//! The session's record of what it relies on.

use std::sync::Arc;

use futures::StreamExt;

use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::markers::{SweepLog, SweepState};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::repo::Repository;
use crate::session::Session;
use crate::testing::MemBackend;

/// A session begun on a new repository in memory.
async fn begun() -> (Arc<MemBackend>, Session) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let session = Session::begin(&repo, &"vm".parse().unwrap(), "h")
        .await
        .unwrap();
    (mem, session)
}

/// A pack that many segments reuse chunks from is one dep, however many
/// times it is recorded (each dep is HEADed at the next check).
#[tokio::test]
async fn each_dep_is_recorded_once() {
    let (_, session) = begun().await;
    let (p, q) = (ObjectId::of(b"p"), ObjectId::of(b"q"));
    session.depend([ObjectRef::Pack(p), ObjectRef::Pack(p)]);
    session.depend([ObjectRef::Pack(q), ObjectRef::Pack(p), ObjectRef::Index(p)]);
    assert_eq!(
        session.deps(),
        [ObjectRef::Pack(p), ObjectRef::Pack(q), ObjectRef::Index(p)]
    );
}

/// A check that asks only for the first look at the deps, which finds
/// them all stored, needs no second round: that would rewrite the same
/// lease (a PUT, on S3 paid for) and list the sweeps again for nothing.
#[tokio::test]
async fn deps_found_stored_settle_without_another_round() {
    let (mem, mut session) = begun().await;
    session.depend([ObjectRef::Pack(ObjectId::of(b"p"))]);
    let puts = mem.request_counts()["put"];
    let progress = crate::progress::Progress::default();
    let mut rounds = Vec::new();
    session
        .settle_with(&progress, async |all, deps| {
            rounds.push((all, deps.to_vec()));
            Ok(Vec::new())
        })
        .await
        .unwrap();
    assert_eq!(rounds, [(false, session.deps())], "one look at the dep");
    assert_eq!(mem.request_counts()["put"] - puts, 1, "one lease write");
}

/// A first round made beside the backup's last uploads may come back
/// clear before those uploads record deps (a pack or index object found
/// already stored): settling from it writes those deps to the lease and
/// looks at them in another round, rather than committing on the clear.
#[tokio::test]
async fn a_clear_first_round_is_not_the_last_when_deps_came_after_it() {
    let (mem, mut session) = begun().await;
    let first = session.check().await.unwrap();
    assert_eq!(first, crate::session::Check::Clear);
    let late = ObjectRef::Pack(ObjectId::of(b"late"));
    session.depend([late]);
    let progress = crate::progress::Progress::default();
    let mut rounds = Vec::new();
    session
        .settle_from(Some(first), &progress, async |all, deps| {
            rounds.push((all, deps.to_vec()));
            Ok(Vec::new())
        })
        .await
        .unwrap();
    assert_eq!(rounds, [(false, vec![late])], "the late dep looked at");
    let key = mem.list("leases/").next().await.unwrap().unwrap().key;
    let lease = crate::lease::LeaseRecord::decode(
        &key,
        &mem.get(&key).await.unwrap(),
        &crate::codec::Codec::plain(),
    );
    assert_eq!(lease.unwrap().deps, [late], "the late dep in the lease");
}

/// A round whose repair found objects already stored (new deps) is not
/// the last: the lease grew, and the next check writes and checks them.
#[tokio::test]
async fn a_round_that_grew_the_lease_is_not_the_last() {
    let (_, mut session) = begun().await;
    session.depend([ObjectRef::Pack(ObjectId::of(b"p"))]);
    let check = session.check().await.unwrap();
    session.depend([ObjectRef::Pack(ObjectId::of(b"q"))]);
    assert!(!session.settle(&check));
    let check = session.check().await.unwrap();
    assert!(
        matches!(&check, crate::session::Check::Verify { deps, .. }
            if deps[..] == [ObjectRef::Pack(ObjectId::of(b"q"))]),
        "{check:?}"
    );
    assert!(session.settle(&check));
}

/// A begin that fails after writing its lease (here: the sweep log
/// cannot be listed) takes the lease back: nothing was pinned or written
/// under it, and left behind it would look like a live session to gc
/// until it expired.
#[tokio::test]
async fn a_begin_that_fails_after_its_lease_removes_it() {
    use crate::testing::{FaultPlan, FaultyBackend};
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    Repository::init(mem.clone(), cfg).await.unwrap();
    let plan = FaultPlan {
        error_rate: 1.0,
        only_prefix: Some("gc/".into()),
        ..FaultPlan::default()
    };
    let repo = Repository::open(Arc::new(FaultyBackend::new(mem.clone(), plan)))
        .await
        .unwrap();
    let Err(e) = Session::begin(&repo, &"vm".parse().unwrap(), "h").await else {
        panic!("began though the sweep log cannot be read");
    };
    assert!(!e.is_damage(), "{e}");
    let leases: Vec<_> = mem.list(crate::keys::LEASES).collect().await;
    assert!(leases.is_empty(), "{leases:?}");
}

/// A session's start and each check cost two round trips: the lease
/// write, then its time and the sweep log together, the log in one
/// listing of `gc/` (it was three and four: `gc/sweeps/` and `gc/done/`
/// listed one after the other, and a check's HEAD before both). A running
/// sweep's marker is one more.
#[tokio::test]
async fn begin_and_check_take_two_round_trips_each() {
    let b = Arc::new(crate::testing::InFlight::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(b.clone(), cfg).await.unwrap();
    // Sweep 1 finished: both kinds of marker are there to list.
    let report = crate::gc::run(&repo, false).await.unwrap();
    assert_eq!((report.seq, report.skipped.as_deref()), (1, None));
    let gc_lists = || {
        b.requests()
            .iter()
            .filter(|r| r.kind == "LIST" && r.key.starts_with("gc/"))
            .count()
    };
    let vm = "vm".parse().unwrap();
    let (rounds, lists) = (b.rounds(), gc_lists());
    let mut session = Session::begin(&repo, &vm, "h").await.unwrap();
    assert_eq!(gc_lists() - lists, 1, "{:#?}", b.requests());
    assert_eq!(b.rounds() - rounds, 2, "{:#?}", b.requests());
    assert!(b.overlapped(("HEAD", "leases/"), ("LIST", "gc/")));
    let (rounds, lists) = (b.rounds(), gc_lists());
    assert_eq!(session.check().await.unwrap(), crate::session::Check::Clear);
    assert_eq!(gc_lists() - lists, 1, "{:#?}", b.requests());
    assert_eq!(b.rounds() - rounds, 2, "{:#?}", b.requests());

    // Sweeps 2 and 3 running: the listing splits the markers by kind,
    // and a session reads the running ones' markers, both at once.
    for seq in [2, 3] {
        let key = crate::keys::sweep(seq);
        let state = SweepState {
            seq,
            host: "g".into(),
            ..SweepState::default()
        };
        let marker = state.encode(repo.codec(), &key).unwrap();
        b.inner.put(&key, marker, PutMode::Create).await.unwrap();
    }
    let log = SweepLog::read(&repo).await.unwrap();
    assert_eq!(log.started.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(log.done.keys().copied().collect::<Vec<_>>(), [1]);
    let marker_reads = |from: usize| {
        b.requests()[from..]
            .iter()
            .filter(|r| r.kind == "GET" && r.key.starts_with("gc/sweeps/"))
            .count()
    };
    let (rounds, from) = (b.rounds(), b.requests().len());
    let mut session = Session::begin(&repo, &vm, "h").await.unwrap();
    assert_eq!(marker_reads(from), 2, "{:#?}", b.requests());
    assert_eq!(b.rounds() - rounds, 3, "{:#?}", b.requests());
    let (rounds, from) = (b.rounds(), b.requests().len());
    session.check().await.unwrap();
    assert_eq!(marker_reads(from), 2, "{:#?}", b.requests());
    assert_eq!(b.rounds() - rounds, 3, "{:#?}", b.requests());
}

/// A backup settles again before its commit when its last check began
/// too long ago: it asks the session how long ago that was.
#[tokio::test]
async fn a_session_tells_how_long_ago_its_last_check_began() {
    use std::time::Duration;
    let (_mem, mut session) = begun().await;
    assert_eq!(session.since_check(), None);
    session.check().await.unwrap();
    assert!(session.since_check().unwrap() < Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(session.since_check().unwrap() > Duration::from_millis(10));
}

/// A failed backup's session ends within [`crate::session::ABANDON_LIMIT`]
/// even when the store never answers the lease's removal (a hung server:
/// the failure being reported): the lease then lives until its TTL, as a
/// killed backup's does. It used to wait for the store's own timeouts,
/// two minutes of a frozen S3 server after the backup had failed.
#[tokio::test(start_paused = true)]
async fn an_abandoned_session_does_not_wait_for_a_store_that_never_answers() {
    use crate::testing::{HookAt, Hooked};
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    Repository::init(mem.clone(), cfg).await.unwrap();
    let never = Hooked::new(
        mem.clone(),
        HookAt::Delete(crate::keys::LEASES),
        Box::new(|| Box::pin(std::future::pending())),
    );
    let repo = Repository::open(never.clone()).await.unwrap();
    let session = Session::begin(&repo, &"vm".parse().unwrap(), "h")
        .await
        .unwrap();
    let began = tokio::time::Instant::now();
    let limit = crate::session::ABANDON_LIMIT;
    let ended = tokio::time::timeout(limit * 30, session.abandon()).await;
    assert!(
        ended.is_ok(),
        "still waiting for the store after {:?}",
        limit * 30
    );
    assert!(never.fired(), "the lease's removal was sent");
    assert!(began.elapsed() >= limit);
    // Left as a killed backup's lease is.
    let leases: Vec<_> = mem.list(crate::keys::LEASES).collect().await;
    assert_eq!(leases.len(), 1);
}
