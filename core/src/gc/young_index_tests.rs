//! A sweep lists `packs/` before `index/`. A backup that stores a pack
//! and its index object between the two listings leaves an index object
//! that names a pack the sweep did not list. That index object is young
//! (written after the sweep's cutoff): it must stay, not be "replaced"
//! as one naming a gone pack, which would delete the only object placing
//! the backup's chunks (`gc_liveness` e2e found this: about one run in a
//! hundred under load committed a point whose chunks no index names).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::test_packs::{find, pack_entries, put_pack, read_chunk, store_pack_deps};
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::id::ObjectId;
use crate::keys;
use crate::placement::index_write::store_entries;
use crate::repo::Repository;
use crate::session::Session;
use crate::testing::MemBackend;

type Hook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Runs `hook` once, when the first listing of `index/` begins.
struct BeforeIndexListing {
    inner: Arc<MemBackend>,
    hook: Hook,
    fired: AtomicBool,
}

impl std::fmt::Debug for BeforeIndexListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeforeIndexListing").finish()
    }
}

#[async_trait]
impl Backend for BeforeIndexListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, opts).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        if prefix.starts_with(keys::INDEX) && !self.fired.swap(true, Ordering::SeqCst) {
            let hook = (self.hook)();
            let prefix = prefix.to_string();
            return futures::stream::once(hook)
                .flat_map(move |()| self.inner.list(&prefix))
                .boxed();
        }
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}

/// A repository whose `index/` listing runs `hook` first, holding
/// `garbage` in a pack no point references (its name returned); and a
/// session live before the sweep begins.
async fn setup(
    garbage: Vec<u8>,
    hook: impl Fn(Repository) -> BoxFuture<'static, ()> + Send + Sync + 'static,
) -> (Repository, Arc<BeforeIndexListing>, Session, ObjectId) {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: 60,
        clock_margin_secs: 0,
        sweep_ttl_secs: 60,
    };
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let (dead, _, _) = store_pack_deps(&repo, &[(ObjectId::of(&garbage), garbage)]).await;
    let session = Session::begin(&repo, &"a".parse().unwrap(), "h")
        .await
        .unwrap();
    let writer = repo.clone();
    let hooked = Arc::new(BeforeIndexListing {
        inner: mem,
        hook: Box::new(move || hook(writer.clone())),
        fired: AtomicBool::new(false),
    });
    (repo, hooked, session, dead)
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
    let swept = Repository::open(hooked.clone()).await.unwrap();
    super::run(&swept, false).await.unwrap();
    assert!(
        hooked.fired.load(Ordering::SeqCst),
        "the write came mid-sweep"
    );
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
    let swept = Repository::open(hooked.clone()).await.unwrap();
    super::run(&swept, false).await.unwrap();
    assert!(
        hooked.fired.load(Ordering::SeqCst),
        "the write came mid-sweep"
    );

    let placed = find(&repo, &[id]).await;
    assert!(
        placed[0].is_some(),
        "an index object still places the chunk"
    );
    read_chunk(&repo, &id).await.unwrap();
    session.end(None).await.unwrap();
}
