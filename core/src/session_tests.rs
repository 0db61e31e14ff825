//! The session's record of what it relies on.

use std::sync::Arc;

use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::repo::Repository;
use crate::session::Session;
use crate::testing::MemBackend;

/// A pack that many segments reuse chunks from is one dep, however many
/// times it is recorded (each dep is HEADed at the next check).
#[tokio::test]
async fn each_dep_is_recorded_once() {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem, cfg).await.unwrap();
    let session = Session::begin(&repo, &"vm".parse().unwrap(), "h")
        .await
        .unwrap();
    let (p, q) = (ObjectId::of(b"p"), ObjectId::of(b"q"));
    session.depend([ObjectRef::Pack(p), ObjectRef::Pack(p)]);
    session.depend([ObjectRef::Pack(q), ObjectRef::Pack(p), ObjectRef::Index(p)]);
    assert_eq!(
        session.deps(),
        [ObjectRef::Pack(p), ObjectRef::Pack(q), ObjectRef::Index(p)]
    );
}
