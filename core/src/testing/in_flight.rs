//! A backend that counts the most reads (GETs and listings) in flight at
//! once, to show that code sends requests together rather than one round
//! trip after another. Each request takes a few milliseconds, so requests
//! sent together overlap. It also keeps a log of every request (reads,
//! writes, HEADs, deletes), from which [`InFlight::rounds`] counts round
//! trips one after another and [`InFlight::overlapped`] says whether two
//! requests were in flight together.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::MemBackend;
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};

/// [`MemBackend`] whose GETs (whole or ranged) and listings are counted
/// in flight (a listing as one request, answered whole).
#[derive(Debug, Default)]
pub struct InFlight {
    pub inner: MemBackend,
    now: AtomicUsize,
    most: AtomicUsize,
    log: Mutex<Log>,
    /// PUTs of keys with this prefix take this much longer.
    slow: Option<(String, Duration)>,
}

/// Every request: what it was, and when it began and ended, counted in
/// events (a request's start or end) since the backend was made.
#[derive(Debug, Default)]
struct Log {
    events: u64,
    /// Requests in flight now, of any kind.
    open: usize,
    /// Requests that began with none in flight.
    rounds: usize,
    done: Vec<Request>,
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `PUT`, `HEAD`, `LIST` or `DELETE`.
    pub kind: &'static str,
    /// Its key (a listing's prefix; a delete's first key).
    pub key: String,
    /// When it began and ended, in events (see [`Log`]): comparable
    /// with other requests' only.
    pub began: u64,
    pub ended: u64,
}

impl InFlight {
    /// Counts the reads of `inner` (e.g. a fork of a prepared store).
    pub fn new(inner: MemBackend) -> InFlight {
        InFlight {
            inner,
            ..InFlight::default()
        }
    }

    /// Makes every PUT of a key starting with `prefix` take `extra`
    /// longer (a slow upload).
    pub fn slow_puts(mut self, prefix: &str, extra: Duration) -> InFlight {
        self.slow = Some((prefix.to_string(), extra));
        self
    }

    /// The most reads that were in flight at once so far.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// Round trips so far: requests that began with no request in flight
    /// (requests sent together are one).
    pub fn rounds(&self) -> usize {
        self.lock().rounds
    }

    /// The requests that ended so far, in the order they ended.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().done.clone()
    }

    /// Whether a request of `kind` on a key starting with `a` was in
    /// flight together with one on a key starting with `b`.
    pub fn overlapped(&self, a: (&str, &str), b: (&str, &str)) -> bool {
        InFlight::overlap_in(&self.lock().done, a, b)
    }

    /// [`InFlight::overlapped`] among `log` (e.g. one command's requests).
    pub fn overlap_in(log: &[Request], a: (&str, &str), b: (&str, &str)) -> bool {
        let is =
            |r: &Request, (kind, prefix): (&str, &str)| r.kind == kind && r.key.starts_with(prefix);
        log.iter().filter(|x| is(x, a)).any(|x| {
            log.iter()
                .filter(|y| is(y, b))
                .any(|y| x.began < y.ended && y.began < x.ended)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn counted<T>(&self, read: impl Future<Output = T>) -> T {
        /// Counts the read out when it ends, or is dropped unfinished.
        struct Out<'a>(&'a AtomicUsize);
        impl Drop for Out<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        let _out = Out(&self.now);
        self.most.fetch_max(n, Ordering::SeqCst);
        read.await
    }

    /// Logs a request of any kind, which takes a few milliseconds.
    async fn logged<T>(&self, kind: &'static str, key: &str, req: impl Future<Output = T>) -> T {
        /// Logs the request's end when it ends, or is dropped unfinished.
        struct End<'a>(&'a InFlight, Option<Request>);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                let mut log = self.0.lock();
                log.events += 1;
                log.open -= 1;
                if let Some(mut r) = self.1.take() {
                    r.ended = log.events;
                    log.done.push(r);
                }
            }
        }
        let began = {
            let mut log = self.lock();
            log.events += 1;
            if log.open == 0 {
                log.rounds += 1;
            }
            log.open += 1;
            log.events
        };
        let request = Request {
            kind,
            key: key.to_string(),
            began,
            ended: 0,
        };
        let _end = End(self, Some(request));
        let extra = match &self.slow {
            Some((prefix, extra)) if kind == "PUT" && key.starts_with(prefix) => *extra,
            _ => Duration::ZERO,
        };
        tokio::time::sleep(Duration::from_millis(5) + extra).await;
        req.await
    }
}

#[async_trait]
impl Backend for InFlight {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        self.logged("PUT", key, self.inner.put_opts(key, data, opts))
            .await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.counted(self.logged("GET", key, self.inner.get(key)))
            .await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let read = self.logged("GET", key, self.inner.get_range(key, range));
        self.counted(read).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.logged("HEAD", key, self.inner.head(key)).await
    }
    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        self.inner.free_for_data().await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let prefix = prefix.to_string();
        let all = async move {
            let read = self.logged(
                "LIST",
                &prefix,
                self.inner.list(&prefix).collect::<Vec<_>>(),
            );
            self.counted(read).await
        };
        futures::stream::once(all)
            .flat_map(futures::stream::iter)
            .boxed()
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let first = keys.first().map(String::as_str).unwrap_or("");
        self.logged("DELETE", first, self.inner.delete_many(keys))
            .await
    }
}
