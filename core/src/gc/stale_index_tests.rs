//! An index object may name a pack that is already gone: a sweep keeps
//! an index object while it names a pack a live lease protects, even when
//! another pack it names was deleted in the same batch (docs/design.md,
//! "gc over packs"; the next sweep replaces it). A backup that began
//! after that sweep finds a chunk there (the lookup HEADs the pack, but
//! it may go between that HEAD and the check), and no sweep deletes
//! anything after its start: the sweeps alone give it no reason to check. Its
//! first check must still make it look at every dependency once, so that
//! the point never names a chunk stored nowhere (`gc_liveness` e2e found
//! this: one run in about twelve under load lost a chunk). Likewise a
//! repair's pack found already stored (named by its bytes) is a dep.

use super::test_packs::{mem_repo, store_pack_deps};
use crate::backend::Backend;
use crate::backup::repair::all_exist;
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;
use crate::placement::session::Found;
use crate::session::{Check, Session};

#[tokio::test]
async fn a_chunk_found_in_a_pack_gone_before_the_backup_began_is_checked_and_found_missing() {
    let (mem, repo) = mem_repo(60).await;
    let data = vec![7u8; 3000];
    let id = ObjectId::of(&data);
    let (gone, _, _) = store_pack_deps(&repo, &[(id, data)]).await;
    let kept = vec![8u8; 3000];
    let (kept_pack, _, _) = store_pack_deps(&repo, &[(ObjectId::of(&kept), kept)]).await;
    // Found while its pack was there (a lookup HEADs the pack first)...
    let packs = repo
        .chunks()
        .session(repo.chunks().open_index().await.unwrap());
    let found = packs.find(&[id]).await.unwrap();
    assert!(
        matches!(found[..], [Found::In(p)] if p == gone),
        "{found:?}"
    );
    // ... then the pack is deleted, its index object stays.
    mem.delete_many(&[keys::pack(&gone)]).await.unwrap();
    let fresh = repo
        .chunks()
        .session(repo.chunks().open_index().await.unwrap());
    assert_eq!(fresh.find(&[id]).await.unwrap(), [Found::New]);

    let mut session = Session::begin(&repo, &"a".parse().unwrap(), "h")
        .await
        .unwrap();
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
    // Recorded again: still one dep, checked already.
    session.depend([ObjectRef::Pack(kept_pack)]);
    assert_eq!(session.check().await.unwrap(), Check::Clear);
    let later = vec![9u8; 3000];
    let (later, _, _) = store_pack_deps(&repo, &[(ObjectId::of(&later), later)]).await;
    session.depend([ObjectRef::Pack(later)]);
    let check = session.check().await.unwrap();
    assert!(
        matches!(&check, Check::Verify { deps, .. } if deps[..] == [ObjectRef::Pack(later)]),
        "a dependency added later is checked too: {check:?}"
    );
}

/// A repair stores chunks again in a pack named by its bytes: that pack
/// (and its index object) may already be there, another writer's
/// garbage a sweep is about to delete. The session must then name them
/// in its lease and check them, as a backup's first put does.
#[tokio::test]
async fn a_repair_that_finds_its_pack_already_stored_depends_on_it() {
    let (_, repo) = mem_repo(60).await;
    let data = vec![5u8; 3000];
    let id = ObjectId::of(&data);
    let blob = repo.chunks().encode_chunk(&id, &data, 3).unwrap();
    let chunks = vec![(id, data.len(), blob)];
    assert_eq!(repo.chunks().store(chunks.clone()).await.unwrap(), vec![]);
    let existed = repo.chunks().store(chunks).await.unwrap();
    assert!(
        matches!(existed[..], [ObjectRef::Pack(_), ObjectRef::Index(_)]),
        "{existed:?}"
    );

    let mut session = Session::begin(&repo, &"a".parse().unwrap(), "h")
        .await
        .unwrap();
    // A dep of its own makes the first check ask for a round.
    let other = vec![6u8; 3000];
    let (reused, _, _) = store_pack_deps(&repo, &[(ObjectId::of(&other), other)]).await;
    session.depend([ObjectRef::Pack(reused)]);
    let progress = crate::progress::Progress::default();
    let mut rounds = Vec::new();
    session
        .settle_with(&progress, async |all, deps| {
            rounds.push((all, deps.to_vec()));
            // The first round "repairs" and finds the objects there.
            Ok(if rounds.len() == 1 {
                existed.clone()
            } else {
                Vec::new()
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session.deps()[1..], existed, "the lease names them");
    assert!(
        rounds.iter().any(|(_, deps)| *deps == existed),
        "and a later round checked them: {rounds:?}"
    );
}

/// A repair that finds a chunk in a pack stored before the session began
/// relies on that pack: no sweep marks a chunk of a point not committed
/// yet, so only the lease naming the pack keeps it. A pack stored since
/// is young for every sweep while the lease lives: no dep needed.
#[tokio::test]
async fn a_chunk_found_by_a_repair_in_an_older_pack_makes_that_pack_a_dep() {
    let (mem, repo) = mem_repo(60).await;
    let (a, b) = (vec![1u8; 3000], vec![2u8; 3000]);
    let (ia, ib) = (ObjectId::of(&a), ObjectId::of(&b));
    // The store's clock (every request moves it forward).
    let earlier = mem.clock().now();
    let (pa, _, _) = store_pack_deps(&repo, &[(ia, a)]).await;
    let (pb, _, _) = store_pack_deps(&repo, &[(ib, b)]).await;
    mem.delete_many(&[keys::pack(&pb)]).await.unwrap();
    let index = repo.chunks().open_index().await.unwrap();
    let later = mem.clock().now();
    let found = repo
        .chunks()
        .presence_in(&index, &[ia, ib], Some(later))
        .await
        .unwrap();
    assert_eq!(
        found.absent,
        vec![ib],
        "the chunk of the gone pack is absent"
    );
    assert_eq!(found.relied, vec![pa], "the older pack is relied on");
    let found = repo
        .chunks()
        .presence_in(&index, &[ia, ib], Some(earlier))
        .await
        .unwrap();
    assert_eq!((found.absent, found.relied), (vec![ib], vec![]));
}
