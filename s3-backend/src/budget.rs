//! A request and upload budget: `--max-requests-per-second` and
//! `--max-upload-bytes-per-second`, for providers that throttle (or bill)
//! past a rate, and links shared with other traffic.
//!
//! Each limit is a schedule ([`Pace`]): the next moment a request may
//! start, pushed back by each request's cost (one request; its body's
//! bytes) over the rate. Over any span of time the requests started are
//! at most the rate times the span plus one, and the bytes sent at most
//! the rate times the span plus one body per request in flight: a body is
//! paid for when it starts, then sent at link speed, not shaped while it
//! streams.
//!
//! Where the waiting happens matters, because the SDK times an attempt
//! from the moment it calls the connector: 5 minutes in all, and an
//! upload whose body is not read for 20 s fails as stalled (`client.rs`):
//! - a request's first attempt waits in the backend, before the SDK sees
//!   it ([`Budget::admit`]), for as long as the budget says; waiting
//!   requests take a slot only once it has come (nothing is booked ahead),
//!   so the schedule never runs ahead of now by more than the cost of the
//!   requests just started;
//! - every later attempt (a retry after 503 SlowDown, a dropped
//!   connection) goes through the HTTP connector ([`Limited`]), the SDK's
//!   lowest layer, and waits there for its request slot, usually at most
//!   a second away (no booking ahead, and at least one request a second),
//!   never more than 10 s. Its body's bytes are charged in full but not
//!   waited for (the SDK calls an upload held back 20 s stalled): the
//!   requests after it wait for them instead, so a throttling server
//!   cannot make xfull exceed the budget over time, only send a retried
//!   body early.
//!
//! The attempt counter (`attempts.rs`) tags every attempt with its number,
//! which is how the connector tells a paid first attempt from a retry; a
//! request without the tag (none is sent so today) pays in the connector.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use tokio::time::Instant;

use crate::InvalidOption;

/// The limits, as given (both optional).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub requests_per_second: Option<f64>,
    pub upload_bytes_per_second: Option<u64>,
}

/// The lowest upload budget: smaller ones are not meant (a 32 MiB pack
/// then holds the next upload back two minutes).
pub const MIN_UPLOAD_BYTES_PER_SECOND: u64 = 256 << 10;

impl Limits {
    pub fn is_set(&self) -> bool {
        self.requests_per_second.is_some() || self.upload_bytes_per_second.is_some()
    }

    pub(crate) fn check(&self) -> Result<(), InvalidOption> {
        if let Some(r) = self.requests_per_second
            && !(1.0..=1e6).contains(&r)
        {
            return Err(InvalidOption {
                what: "request budget",
                value: format!("{r} requests per second"),
                expected: "1 to 1000000 requests per second".into(),
            });
        }
        if let Some(b) = self.upload_bytes_per_second
            && b < MIN_UPLOAD_BYTES_PER_SECOND
        {
            return Err(InvalidOption {
                what: "upload budget",
                value: format!("{b} bytes per second"),
                expected: "at least 256 KiB per second".into(),
            });
        }
        Ok(())
    }
}

/// The attempt number of a request, put on it by the attempt counter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptNo(pub u32);

/// The longest a retry waits for its request slot in the connector: well
/// inside the SDK's 20 s grace for an upload whose body is not read. Only
/// many requests waiting at once make a slot that far away (nothing is
/// booked ahead); past it the retry goes and is charged, so the requests
/// after it wait instead.
const RETRY_WAIT: Duration = Duration::from_secs(10);

/// One rate: the moment the next request may start.
#[derive(Debug)]
struct Pace {
    per_second: f64,
    next: Option<Instant>,
}

impl Pace {
    fn new(per_second: f64) -> Pace {
        Pace {
            per_second,
            next: None,
        }
    }

    /// Whether a request may start at `now`; if not, when.
    fn free_at(&self, now: Instant) -> Option<Instant> {
        self.next.filter(|n| *n > now)
    }

    /// Charges `cost` units to a request starting at `now` (or to the one
    /// before it, if that one's charge still runs).
    fn charge(&mut self, cost: u64, now: Instant) {
        let from = self.next.map_or(now, |n| n.max(now));
        // Seconds as f64: exact enough for any rate a flag can give, and
        // no overflow for a huge body at a tiny rate (capped at a day).
        let secs = (cost as f64 / self.per_second).min(86_400.0);
        self.next = Some(from + Duration::from_secs_f64(secs));
    }
}

/// Both limits of one client, and what they cost in waiting.
#[derive(Debug)]
pub struct Budget {
    /// Both paces under one lock: a request takes its request and upload
    /// slots together, so no two requests can start on one slot.
    paces: Mutex<(Option<Pace>, Option<Pace>)>,
    waited_ms: AtomicU64,
    paid: AtomicU64,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            paces: Mutex::new((
                limits.requests_per_second.map(Pace::new),
                limits.upload_bytes_per_second.map(|b| Pace::new(b as f64)),
            )),
            waited_ms: AtomicU64::new(0),
            paid: AtomicU64::new(0),
        }
    }

    /// Starts a request at `now` if the budget has room for it, charging
    /// both limits; else says when to look again. `wait_for_bytes` false
    /// charges the body without waiting for room for it (retries).
    fn try_start(&self, body: u64, wait_for_bytes: bool, now: Instant) -> Result<(), Instant> {
        let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, upload) = &mut *paces;
        let busy = [
            requests.as_ref().and_then(|p| p.free_at(now)),
            upload
                .as_ref()
                .filter(|_| wait_for_bytes && body > 0)
                .and_then(|p| p.free_at(now)),
        ];
        if let Some(later) = busy.into_iter().flatten().max() {
            return Err(later);
        }
        if let Some(p) = requests {
            p.charge(1, now);
        }
        if let Some(p) = upload
            && body > 0
        {
            p.charge(body, now);
        }
        Ok(())
    }

    /// Waits for room and charges; a retry (`wait_for_bytes` false) waits
    /// at most [`RETRY_WAIT`], then goes and is charged all the same.
    async fn start(&self, body: u64, wait_for_bytes: bool) {
        let first = Instant::now();
        let deadline = first + RETRY_WAIT;
        loop {
            let now = Instant::now();
            match self.try_start(body, wait_for_bytes, now) {
                Ok(()) => break,
                Err(at) if !wait_for_bytes && at > deadline => {
                    self.charge_anyway(body, now);
                    break;
                }
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
        self.paid.fetch_add(1, Ordering::Relaxed);
        let waited = first.elapsed().as_millis() as u64;
        self.waited_ms.fetch_add(waited, Ordering::Relaxed);
    }

    fn charge_anyway(&self, body: u64, now: Instant) {
        let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, upload) = &mut *paces;
        if let Some(p) = requests {
            p.charge(1, now);
        }
        if let Some(p) = upload {
            p.charge(body, now);
        }
    }

    /// Waits until the budget has room for a request with `body` bytes to
    /// upload, and charges it.
    pub async fn admit(&self, body: u64) {
        self.start(body, true).await;
    }

    /// An urgent first attempt (`PutOptions::urgent`: a lease, a sweep's
    /// marker, small and waited on): as a retry, it waits for its request
    /// slot and is charged its body without waiting for room for it, so
    /// the uploads after it pay for its bytes instead.
    pub async fn admit_urgent(&self, body: u64) {
        self.start(body, false).await;
    }

    /// A retry: waits for a request slot, charges its body without
    /// waiting for room for it.
    async fn retry(&self, body: u64) {
        self.start(body, false).await;
    }

    /// Requests (attempts) paid for so far.
    pub fn paid(&self) -> u64 {
        self.paid.load(Ordering::Relaxed)
    }

    /// Time spent waiting for the budget so far, in milliseconds (summed
    /// over requests waiting at once).
    pub fn waited_ms(&self) -> u64 {
        self.waited_ms.load(Ordering::Relaxed)
    }
}

/// The SDK's HTTP client with the budget in front of its connector.
#[derive(Debug)]
pub(crate) struct Limited {
    pub inner: SharedHttpClient,
    pub budget: std::sync::Arc<Budget>,
}

impl HttpClient for Limited {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // The inner client keeps one connector (and connection pool) per
        // settings; this wrapper is rebuilt per call and holds no state.
        SharedHttpConnector::new(LimitedConnector {
            inner: self.inner.http_connector(settings, components),
            budget: self.budget.clone(),
        })
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
    budget: std::sync::Arc<Budget>,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let first = matches!(request.extension::<AttemptNo>(), Some(AttemptNo(1)));
        if first {
            return self.inner.call(request);
        }
        let body = request.body().content_length().unwrap_or(0);
        let inner = self.inner.clone();
        let budget = self.budget.clone();
        HttpConnectorFuture::new(async move {
            budget.retry(body).await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn budget(requests: Option<f64>, upload: Option<u64>) -> Budget {
        Budget::new(Limits {
            requests_per_second: requests,
            upload_bytes_per_second: upload,
        })
    }

    #[test]
    fn requests_start_a_cost_over_rate_apart_and_nothing_is_booked_ahead() {
        let t0 = Instant::now();
        let b = budget(Some(4.0), None);
        assert_eq!(b.try_start(0, true, t0), Ok(()));
        // Asked again and again before its time: still the same answer,
        // and asking books nothing.
        assert_eq!(b.try_start(0, true, t0), Err(at(t0, 250)));
        assert_eq!(b.try_start(0, true, at(t0, 100)), Err(at(t0, 250)));
        assert_eq!(b.try_start(0, true, at(t0, 250)), Ok(()));
        // Much later: starts at once, the next a quarter second after.
        assert_eq!(b.try_start(0, true, at(t0, 3000)), Ok(()));
        assert_eq!(b.try_start(0, true, at(t0, 3000)), Err(at(t0, 3250)));
    }

    #[test]
    fn a_request_needs_room_in_both_limits_and_a_retry_only_in_requests() {
        let t0 = Instant::now();
        let b = budget(Some(10.0), Some(1000));
        assert_eq!(b.try_start(2000, true, t0), Ok(())); // the bytes run 2 s
        assert_eq!(b.try_start(0, true, at(t0, 100)), Ok(())); // no body
        assert_eq!(b.try_start(10, true, at(t0, 200)), Err(at(t0, 2000)));
        // A retry charges its bytes without waiting for them...
        assert_eq!(b.try_start(1000, false, at(t0, 200)), Ok(()));
        // ...so the next upload waits for them too.
        assert_eq!(b.try_start(10, true, at(t0, 2000)), Err(at(t0, 3000)));
    }

    #[test]
    fn a_huge_body_at_a_tiny_rate_is_capped_not_an_overflow() {
        let t0 = Instant::now();
        let b = budget(None, Some(1));
        assert_eq!(b.try_start(u64::MAX, true, t0), Ok(()));
        assert_eq!(b.try_start(1, true, t0), Err(at(t0, 86_400_000)));
    }
}
