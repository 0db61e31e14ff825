//! A backend that runs a test's hook once, just before a chosen request
//! reaches the store: to put another writer's step exactly between two
//! steps of the code under test (a copy's puts, a sweep's listings).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::MemBackend;
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};

/// What a [`Hooked`] backend runs.
pub type Hook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Which request runs the hook (the first one that matches).
#[derive(Clone, Copy, Debug)]
pub enum HookAt {
    /// A put of a key under this prefix.
    Put(&'static str),
    /// A read (whole or ranged) of a key under this prefix.
    Get(&'static str),
    /// A listing of this prefix (or one under it).
    List(&'static str),
    /// A delete batch whose first key starts with this prefix.
    Delete(&'static str),
}

/// Runs its hook once, before the first request [`HookAt`] names. Reads
/// ([`HookAt::Get`]) that match while the hook runs wait for it: code
/// that reads several objects at once otherwise read the others before
/// the hook's writes landed, and a test of "this happened before the
/// reads" failed now and then under load (`verify_race`).
pub struct Hooked {
    inner: Arc<MemBackend>,
    at: HookAt,
    hook: Hook,
    fired: AtomicBool,
    /// Set once the hook of a [`HookAt::Get`] ran; matching reads meanwhile
    /// wait for it.
    ran: tokio::sync::OnceCell<()>,
}

impl Hooked {
    pub fn new(inner: Arc<MemBackend>, at: HookAt, hook: Hook) -> Arc<Self> {
        Arc::new(Hooked {
            inner,
            at,
            hook,
            fired: AtomicBool::new(false),
            ran: tokio::sync::OnceCell::new(),
        })
    }

    /// Whether the hook ran.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    async fn before_get(&self, key: &str) {
        if matches!(self.at, HookAt::Get(p) if key.starts_with(p)) {
            // The first match runs the hook; the others wait until it ran.
            self.ran
                .get_or_init(|| async {
                    self.fired.store(true, Ordering::SeqCst);
                    (self.hook)().await
                })
                .await;
        }
    }

    /// True once: for the first request that matches.
    fn fire(&self, matches: bool) -> bool {
        matches && !self.fired.swap(true, Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").field("at", &self.at).finish()
    }
}

#[async_trait]
impl Backend for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        if self.fire(matches!(self.at, HookAt::Put(p) if key.starts_with(p))) {
            (self.hook)().await;
        }
        self.inner.put_opts(key, data, opts).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.before_get(key).await;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.before_get(key).await;
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        self.inner.free_for_data().await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        if self.fire(matches!(self.at, HookAt::List(p) if prefix.starts_with(p))) {
            let prefix = prefix.to_string();
            return futures::stream::once((self.hook)())
                .flat_map(move |()| self.inner.list(&prefix))
                .boxed();
        }
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let first = keys.first().map_or("", String::as_str);
        if self.fire(matches!(self.at, HookAt::Delete(p) if first.starts_with(p))) {
            (self.hook)().await;
        }
        self.inner.delete_many(keys).await
    }
}
