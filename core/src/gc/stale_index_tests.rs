//! An index object may name a pack that is already gone: a sweep keeps
//! an index object while it names a pack a live lease protects, even when
//! another pack it names was deleted in the same batch (docs/design.md,
//! "gc over packs"; the next sweep replaces it). A backup that began
//! after that sweep finds a chunk there, and no sweep deletes anything
//! after its start: the sweeps alone give it no reason to check. Its
//! first check must still make it look at every dependency once, so that
//! the point never names a chunk stored nowhere (`gc_liveness` e2e found
//! this: one run in about twelve under load lost a chunk).

use std::sync::Arc;

use super::test_packs::store_pack_deps;
use crate::backend::Backend;
use crate::backup::repair::all_exist;
use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;
use crate::placement::session::Found;
use crate::repo::Repository;
use crate::session::{Check, Session};
use crate::testing::MemBackend;

#[tokio::test]
async fn a_chunk_found_in_a_pack_gone_before_the_backup_began_is_checked_and_found_missing() {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: 60,
        clock_margin_secs: 0,
        sweep_ttl_secs: 60,
    };
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let data = vec![7u8; 3000];
    let id = ObjectId::of(&data);
    let (gone, _, _) = store_pack_deps(&repo, &[(id, data)]).await;
    let kept = vec![8u8; 3000];
    let (kept_pack, _, _) = store_pack_deps(&repo, &[(ObjectId::of(&kept), kept)]).await;
    // The pack is deleted, its index object stays.
    mem.delete_many(&[keys::pack(&gone)]).await.unwrap();

    let mut session = Session::begin(&repo, &"a".parse().unwrap(), "h")
        .await
        .unwrap();
    let packs = repo
        .chunks()
        .session(repo.chunks().open_index().await.unwrap());
    let found = packs.find(&[id]).await.unwrap();
    assert!(
        matches!(found[..], [Found::In(p)] if p == gone),
        "{found:?}"
    );
    session.depend([ObjectRef::Pack(gone), ObjectRef::Pack(kept_pack)]);

    let check = session.check().await.unwrap();
    let Check::Verify { deps, .. } = &check else {
        panic!("the dependencies were never checked: {check:?}");
    };
    assert_eq!(deps.len(), 2, "{deps:?}");
    assert!(!all_exist(&repo, deps).await.unwrap());
    session.settle(&check);
    // Checked once: not again while no sweep runs.
    assert_eq!(session.check().await.unwrap(), Check::Clear);
    session.depend([ObjectRef::Pack(kept_pack)]);
    let check = session.check().await.unwrap();
    assert!(
        matches!(&check, Check::Verify { deps, .. } if deps.len() == 1),
        "a dependency added later is checked too: {check:?}"
    );
}
