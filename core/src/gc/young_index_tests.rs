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

use super::test_packs::{find, read_chunk, store_pack_deps};
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::id::ObjectId;
use crate::keys;
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

#[tokio::test]
async fn an_index_object_written_between_the_sweeps_listings_stays() {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: 60,
        clock_margin_secs: 0,
        sweep_ttl_secs: 60,
    };
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let data = vec![9u8; 3000];
    let id = ObjectId::of(&data);
    // A backup is running: its lease is live before the sweep begins.
    let session = Session::begin(&repo, &"a".parse().unwrap(), "h")
        .await
        .unwrap();
    let writer = repo.clone();
    let hook: Hook = Box::new(move || {
        let (repo, data) = (writer.clone(), data.clone());
        Box::pin(async move {
            store_pack_deps(&repo, &[(id, data)]).await;
        })
    });
    let hooked = Arc::new(BeforeIndexListing {
        inner: mem.clone(),
        hook,
        fired: AtomicBool::new(false),
    });
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
