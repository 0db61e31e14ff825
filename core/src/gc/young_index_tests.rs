//! A sweep lists `packs/` before `index/`. A backup that stores a pack
//! and its index object between the two listings leaves an index object
//! that names a pack the sweep did not list. That index object is young
//! (written after the sweep's cutoff): it must stay, not be "replaced"
//! as one naming a gone pack, which would delete the only object placing
//! the backup's chunks (`gc_liveness` e2e found this: about one run in a
//! hundred under load committed a point whose chunks no index names).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::test_packs::{find, mem_repo, pack_entries, put_pack, read_chunk, store_pack_deps};
use crate::id::ObjectId;
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
/// put found that pack already there) is not rewritten without the
/// unlisted pack's entries: it stays until a later sweep.
#[tokio::test]
async fn a_young_index_object_naming_a_dead_pack_and_an_unlisted_one_stays() {
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
