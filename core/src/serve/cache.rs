//! A bounded cache of served parts (at most 16 MiB of a segment, see
//! `restore/read.rs`), least recently used first out, shared by every
//! disk a server or mount serves. Concurrent readers of a part not yet
//! cached share one fetch: a fetch in flight is remembered until it
//! completes, so a sequential reader and the read-ahead ahead of it never
//! fetch a part twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::part::CachedPart;
use crate::error::Error;

/// A cached part: which disk (a number the cache gave out) and which
/// part of it.
pub(super) type Key = (u64, usize);

/// What a fetch gives to everyone waiting for it. The error is shared:
/// every waiter reports the same failure.
pub(super) type Fetched = Result<Arc<CachedPart>, Arc<Error>>;

type InFlight = Shared<BoxFuture<'static, Fetched>>;

#[derive(Default)]
struct State {
    /// Cached parts with their last use.
    entries: HashMap<Key, (Arc<CachedPart>, u64)>,
    /// Last use to key, oldest first.
    order: BTreeMap<u64, Key>,
    in_flight: HashMap<Key, InFlight>,
    bytes: u64,
    tick: u64,
}

/// The cache; at most `limit` bytes of part data (a part larger than the
/// limit is served but not kept).
pub struct PartCache {
    limit: u64,
    state: Mutex<State>,
    next_owner: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PartCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartCache")
            .field("limit", &self.limit)
            .finish()
    }
}

impl PartCache {
    pub fn new(limit: u64) -> Arc<PartCache> {
        Arc::new(PartCache {
            limit,
            state: Mutex::default(),
            next_owner: Default::default(),
        })
    }

    /// A number naming one disk in the cache's keys.
    pub(super) fn owner(&self) -> u64 {
        self.next_owner
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` is cached or being fetched.
    pub(super) fn has(&self, key: Key) -> bool {
        let s = self.lock();
        s.entries.contains_key(&key) || s.in_flight.contains_key(&key)
    }

    /// The part under `key`, fetched with `fetch` unless cached or
    /// already being fetched. A failed fetch is not cached (the next
    /// read tries again: the store may have recovered).
    pub(super) async fn get(
        self: &Arc<Self>,
        key: Key,
        fetch: impl FnOnce() -> BoxFuture<'static, Fetched>,
    ) -> Fetched {
        let shared = {
            let mut s = self.lock();
            s.tick += 1;
            let tick = s.tick;
            if let Some((seg, used)) = s.entries.get_mut(&key) {
                let (seg, old) = (seg.clone(), std::mem::replace(used, tick));
                s.order.remove(&old);
                s.order.insert(tick, key);
                return Ok(seg);
            }
            match s.in_flight.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let cache = self.clone();
                    let fut = fetch();
                    let f = async move {
                        let r = fut.await;
                        cache.done(key, &r);
                        r
                    }
                    .boxed()
                    .shared();
                    s.in_flight.insert(key, f.clone());
                    f
                }
            }
        };
        shared.await
    }

    fn done(&self, key: Key, r: &Fetched) {
        let mut s = self.lock();
        s.in_flight.remove(&key);
        let Ok(seg) = r else { return };
        let weight = seg.weight();
        if weight > self.limit || s.entries.contains_key(&key) {
            return;
        }
        s.tick += 1;
        let tick = s.tick;
        s.entries.insert(key, (seg.clone(), tick));
        s.order.insert(tick, key);
        s.bytes += weight;
        while s.bytes > self.limit {
            let Some((_, old)) = s.order.pop_first() else {
                break;
            };
            if let Some((seg, _)) = s.entries.remove(&old) {
                s.bytes -= seg.weight();
            }
        }
    }

    /// Bytes held (for tests and reports).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}
