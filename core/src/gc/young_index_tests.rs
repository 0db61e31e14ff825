//! A sweep lists `packs/` before `index/`. A backup that stores a pack
//! and its index object between the two listings leaves an index object
//! that names a pack the sweep did not list. That index object is young
//! (written after the sweep's cutoff): it must stay, not be "replaced"
//! as one naming a gone pack, which would delete the only object placing
//! the backup's chunks (`gc_liveness` e2e found this: about one run in a
//! hundred under load committed a point whose chunks no index names).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::test_packs::{
    all_entries, find, mem_repo, pack_entries, put_pack, read_chunk, store_pack_deps, write_point,
};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::placement::index_write::store_entries;
use crate::repo::Repository;
use crate::session::Session;
use crate::testing::{HookAt, Hooked};

/// A repository holding `garbage` in a pack no point references (its
/// name returned), the same store with `hook` run when the first listing
/// of `index/` begins, and a session live before the sweep begins.
async fn setup(
    garbage: Vec<u8>,
    hook: impl Fn(Repository) -> BoxFuture<'static, ()> + Send + Sync + 'static,
) -> (Repository, Arc<Hooked>, Session, ObjectId) {
    let (mem, repo) = mem_repo(60).await;
    let (dead, _, _) = store_pack_deps(&repo, &[(ObjectId::of(&garbage), garbage)]).await;
    let session = Session::begin(&repo, &"a".parse().unwrap(), "h")
        .await
        .unwrap();
    let writer = repo.clone();
    let at = HookAt::List(keys::INDEX);
    let hooked = Hooked::new(mem, at, Box::new(move || hook(writer.clone())));
    (repo, hooked, session, dead)
}

/// A whole sweep through `hooked`, whose hook must have run mid-sweep.
async fn sweep(hooked: &Arc<Hooked>) {
    let swept = Repository::open(hooked.clone()).await.unwrap();
    super::run(&swept, false).await.unwrap();
    assert!(hooked.fired(), "the write came mid-sweep");
}

/// A young index object that also names an old dead pack (a backup's
/// put found that pack already there) is rewritten without the dead
/// pack's entries but with the unlisted pack's: before, it stayed whole
/// until a later sweep, naming the deleted pack.
#[tokio::test]
async fn a_young_index_object_naming_a_dead_pack_and_an_unlisted_one_keeps_the_unlisted() {
    let dead = vec![3u8; 3000];
    let new = vec![4u8; 3000];
    let id = ObjectId::of(&new);
    let dead_id = ObjectId::of(&dead);
    let (repo, hooked, session, gone) = setup(dead, move |repo| {
        let new = new.clone();
        Box::pin(async move {
            let n = put_pack(&repo, &[(id, new)]).await;
            let d = find(&repo, &[dead_id]).await[0].unwrap().pack;
            let mut entries = pack_entries(&repo, &d).await;
            entries.extend(pack_entries(&repo, &n).await);
            store_entries(&**repo.backend(), repo.codec(), "", entries)
                .await
                .unwrap();
        })
    })
    .await;
    sweep(&hooked).await;
    assert!(
        repo.backend().head(&keys::pack(&gone)).await.is_err(),
        "the dead pack went"
    );
    assert!(find(&repo, &[id]).await[0].is_some(), "the chunk is placed");
    read_chunk(&repo, &id).await.unwrap();
    let stale: Vec<_> = all_entries(&repo)
        .await
        .into_iter()
        .filter(|e| e.pack == gone)
        .collect();
    assert!(stale.is_empty(), "entries of the deleted pack: {stale:?}");
    session.end(None).await.unwrap();
}

/// Two sweeps back to back: the first rewrites the index into an object
/// that names a pack still live; the pack dies; the second, while that
/// object is younger than its cutoff, deletes the pack and rewrites the
/// object without it. Before, the object kept naming the deleted pack
/// until a sweep found it old, and a backup reusing a chunk there read
/// its segment again (the crash walk of session 44: 39 backups).
#[tokio::test]
async fn back_to_back_sweeps_leave_no_entry_naming_a_deleted_pack() {
    let (mem, repo) = mem_repo(60).await;
    let (a, b) = (vec![5u8; 3000], vec![6u8; 3000]);
    let (ia, ib) = (ObjectId::of(&a), ObjectId::of(&b));
    let (pa, _, _) = store_pack_deps(&repo, &[(ia, a.clone())]).await;
    store_pack_deps(&repo, &[(ib, b.clone())]).await;
    let (p1, p2): (PointId, PointId) = (
        "20260101T000000Z-0001".parse().unwrap(),
        "20260101T000000Z-0002".parse().unwrap(),
    );
    write_point(&repo, "a", &p1, &[(ia, a)]).await;
    write_point(&repo, "b", &p2, &[(ib, b)]).await;
    mem.clock().advance(chrono::Duration::hours(1));
    // A backup running through both sweeps: what the first writes is
    // younger than the second's cutoff.
    let session = Session::begin(&repo, &"c".parse().unwrap(), "h")
        .await
        .unwrap();
    // Merges the two backups' small objects into one (young from now on).
    let r = super::run(&repo, false).await.unwrap();
    assert!(r.index_objects_written > 0, "{r:?}");
    crate::prune::remove(&repo, &Default::default(), &[("a".parse().unwrap(), p1)])
        .await
        .unwrap();
    let r = super::run(&repo, false).await.unwrap();
    assert_eq!(r.packs_deleted, 1, "{r:?}");
    assert!(repo.backend().head(&keys::pack(&pa)).await.is_err());
    let entries = all_entries(&repo).await;
    assert!(entries.iter().all(|e| e.pack != pa), "{entries:?}");
    read_chunk(&repo, &ib).await.unwrap();
    session.end(None).await.unwrap();
}

#[tokio::test]
async fn an_index_object_written_between_the_sweeps_listings_stays() {
    let data = vec![9u8; 3000];
    let id = ObjectId::of(&data);
    let (repo, hooked, session, _) = setup(vec![8u8; 3000], move |repo| {
        let data = data.clone();
        Box::pin(async move {
            store_pack_deps(&repo, &[(id, data)]).await;
        })
    })
    .await;
    sweep(&hooked).await;

    let placed = find(&repo, &[id]).await;
    assert!(
        placed[0].is_some(),
        "an index object still places the chunk"
    );
    read_chunk(&repo, &id).await.unwrap();
    session.end(None).await.unwrap();
}

/// The same with a sharded index: the first sweep distributes the index
/// into shard objects, young at the second, which rewrites the ones
/// naming the pack it deletes in their own shards (no object of any ids
/// appears, which every lookup would have to read).
#[tokio::test]
async fn a_young_shard_object_is_rewritten_in_its_own_shard() {
    let (mem, repo) = mem_repo(60).await;
    let chunks: Vec<(ObjectId, Vec<u8>)> = (0..40u64)
        .map(|i| {
            let d = crate::testing::seeded_bytes(2000, i + 1);
            (ObjectId::of(&d), d)
        })
        .collect();
    let id: PointId = "20260101T000000Z-0001".parse().unwrap();
    let mut packs = Vec::new();
    for (n, part) in chunks.chunks(10).enumerate() {
        packs.push(store_pack_deps(&repo, part).await.0);
        write_point(&repo, &format!("v{n}"), &id, part).await;
    }
    mem.clock().advance(chrono::Duration::hours(1));
    let session = Session::begin(&repo, &"c".parse().unwrap(), "h")
        .await
        .unwrap();
    let options = || crate::gc::PackOptions {
        shard_entries: 4,
        ..crate::gc::PackOptions::for_repository(repo.config(), None)
    };
    let progress = Arc::new(crate::progress::Progress::default());
    let shard_objects = async || {
        let listed: Vec<_> = futures::TryStreamExt::try_collect(repo.backend().list(keys::INDEX))
            .await
            .unwrap();
        assert!(!listed.is_empty());
        listed
            .iter()
            .all(|m| keys::parse_index_in(&m.key).is_some_and(|(p, _)| !p.is_empty()))
    };
    super::run_with(&repo, false, options(), &progress)
        .await
        .unwrap();
    assert!(shard_objects().await, "the first sweep shards the index");
    crate::prune::remove(&repo, &Default::default(), &[("v0".parse().unwrap(), id)])
        .await
        .unwrap();
    let r = super::run_with(&repo, false, options(), &progress)
        .await
        .unwrap();
    assert_eq!(r.packs_deleted, 1, "{r:?}");
    assert!(r.index_objects_written > 0, "{r:?}");
    assert!(shard_objects().await, "rewritten in their shards");
    let entries = all_entries(&repo).await;
    assert!(entries.iter().all(|e| e.pack != packs[0]), "{entries:?}");
    assert_eq!(entries.len(), 30);
    for (c, _) in &chunks[10..] {
        read_chunk(&repo, c).await.unwrap();
    }
    session.end(None).await.unwrap();
}
