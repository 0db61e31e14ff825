//! The session's record of what it relies on.

use std::sync::Arc;

use futures::StreamExt;

use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
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
