//! A bounded cache of served parts (at most 16 MiB of a segment, see
//! `restore/read.rs`), least recently used first out, shared by every
//! disk a server or mount serves. Concurrent readers of a part not yet
//! cached share one fetch: a fetch in flight is remembered until it
//! completes, so a sequential reader and the read-ahead ahead of it never
//! fetch a part twice.
//!
//! Fetches run as tasks of their own, a bounded number at once: each
//! holds up to a part in memory beside the cache, and a server's clients
//! may have 512 reads in flight (32 clients x 16), each of a part of its
//! own, plus the read-ahead behind them. Unbounded, that was a part per
//! read (16 MiB each, gigabytes) whatever `--cache` said; bounded, the
//! fetches hold about the cache's limit again. Read-ahead starts only
//! when a fetch slot is free, so it never delays a read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::part::CachedPart;
use crate::error::Error;
use crate::restore::PART;

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
    /// Slots for fetches running at once.
    fetches: Arc<Semaphore>,
}

/// Fetches at once for a cache of `limit` bytes: as many of the largest
/// parts as it holds, at least 2 (a read and its read-ahead), at most 64.
fn fetch_slots(limit: u64) -> usize {
    (limit / PART).clamp(2, 64) as usize
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
            fetches: Arc::new(Semaphore::new(fetch_slots(limit))),
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

    /// The part under `key`, fetched with `fetch` unless cached or
    /// already being fetched (then waiting for a fetch slot). A failed
    /// fetch is not cached (the next read tries again: the store may
    /// have recovered).
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
                None => self.start(&mut s, key, fetch(), None),
            }
        };
        shared.await
    }

    /// Starts fetching `key` in the background if it is neither cached
    /// nor being fetched and a fetch slot is free now (read-ahead: it
    /// must not take a slot a read is waiting for).
    pub(super) fn prefetch(
        self: &Arc<Self>,
        key: Key,
        fetch: impl FnOnce() -> BoxFuture<'static, Fetched>,
    ) {
        let mut s = self.lock();
        if s.entries.contains_key(&key) || s.in_flight.contains_key(&key) {
            return;
        }
        let Ok(slot) = self.fetches.clone().try_acquire_owned() else {
            return;
        };
        // It runs on its own; readers find it in flight.
        let _in_flight = self.start(&mut s, key, fetch(), Some(slot));
    }

    /// Spawns the fetch of `key` (it runs to the end even if every
    /// reader waiting for it has gone) and remembers it as in flight.
    fn start(
        self: &Arc<Self>,
        s: &mut State,
        key: Key,
        fetch: BoxFuture<'static, Fetched>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> InFlight {
        let cache = self.clone();
        let task = tokio::spawn(async move {
            let _slot = match slot {
                Some(p) => Some(p),
                // Never closed: `None` only if it were.
                None => cache.fetches.clone().acquire_owned().await.ok(),
            };
            let r = fetch.await;
            cache.done(key, &r);
            r
        });
        let cache = self.clone();
        let f = async move {
            task.await.unwrap_or_else(|e| {
                // The fetch panicked: forget it, so the next read tries
                // again rather than meeting this error for ever.
                cache.lock().in_flight.remove(&key);
                Err(Arc::new(Error::Internal(format!("fetching a part: {e}"))))
            })
        }
        .boxed()
        .shared();
        s.in_flight.insert(key, f.clone());
        f
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn part() -> Arc<CachedPart> {
        Arc::new(CachedPart {
            start: 0,
            len: PART,
            data: None,
            entries: Vec::new(),
            damaged: Vec::new(),
        })
    }

    /// Readers of many distinct parts at once (clients reading far apart,
    /// 16 requests in flight each) run no more fetches at once than the
    /// cache has slots: each fetch holds up to a part in memory.
    #[tokio::test(flavor = "current_thread")]
    async fn fetches_at_once_are_bounded() {
        let cache = PartCache::new(2 * PART);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let asked = Arc::new(AtomicUsize::new(0));
        let mut readers = tokio::task::JoinSet::new();
        for k in 0..10 {
            let (cache, asked) = (cache.clone(), asked.clone());
            let (running, most, gate) = (running.clone(), most.clone(), gate.clone());
            readers.spawn(async move {
                asked.fetch_add(1, Ordering::SeqCst);
                let fetch = move || {
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let _ = gate.acquire().await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(part())
                    }
                    .boxed()
                };
                cache.get((0, k), fetch).await
            });
        }
        // One thread: once every reader has asked, each has run until it
        // waited, and a fetch it was allowed to start has started.
        while asked.load(Ordering::SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
        let at_once = most.load(Ordering::SeqCst);
        assert!(at_once <= 2, "{at_once} fetches at once, for 2 slots");
        gate.add_permits(1);
        while let Some(r) = readers.join_next().await {
            assert!(r.unwrap().is_ok());
        }
        let at_once = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&at_once), "{at_once} fetches at once");
    }

    /// A fetch goes on when the reader that started it goes away, and
    /// the part is cached for the next one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_fetch_outlives_its_reader() {
        let cache = PartCache::new(2 * PART);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = |gate: Arc<tokio::sync::Semaphore>, n: Arc<AtomicUsize>| {
            move || {
                async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.acquire().await;
                    Ok(part())
                }
                .boxed()
            }
        };
        let first = {
            let cache = cache.clone();
            let f = fetch(gate.clone(), fetches.clone());
            tokio::spawn(async move { cache.get((0, 0), f).await })
        };
        while fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        first.abort();
        let _ = first.await;
        gate.add_permits(1);
        // Asked again: the first fetch's result, not a second fetch.
        let got = cache
            .get((0, 0), fetch(gate.clone(), fetches.clone()))
            .await;
        assert!(got.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
