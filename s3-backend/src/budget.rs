//! A request and upload budget: `--max-requests-per-second` and
//! `--max-upload-bytes-per-second`, for providers that throttle (or bill)
//! past a rate, and links shared with other traffic.
//!
//! Each limit is a schedule of slots ([`Pace`]): a request may start at
//! its slot, and its cost (one request; its body's bytes) pushes the next
//! slot back by cost / rate. Over any span of time the requests started
//! are at most the rate times the span plus one, and the bytes sent at
//! most the rate times the span plus one body: a body is paid for when
//! it starts, then sent at link speed, not shaped while it streams.
//!
//! Where the waiting happens matters, because the SDK bounds an attempt's
//! time (5 minutes, `client.rs`) from the moment it calls the connector:
//! - a request's first attempt waits for its slot in the backend, before
//!   the SDK sees it ([`Budget::admit`]), so thirty-two uploads queued
//!   behind a slow budget never time out while they wait;
//! - every later attempt (a retry after 503 SlowDown, a dropped
//!   connection) waits in the HTTP connector ([`Limited`]), the SDK's
//!   lowest layer, so retries are paid for like any request and
//!   throttling cannot make xfull exceed the budget. Such a wait is short:
//!   first attempts only take slots when they start, so the schedule
//!   never runs ahead of now by more than one request's cost.
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

/// The lowest upload budget: a retry waits in the connector for up to one
/// body's worth of it, within the SDK's 5-minute attempt time, and the
/// largest object xfull writes is an index shard of up to 40 MiB (160 s
/// at this rate).
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

/// One rate: the next free slot.
#[derive(Debug)]
struct Pace {
    per_second: f64,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    fn new(per_second: f64) -> Pace {
        Pace {
            per_second,
            next: Mutex::new(None),
        }
    }

    /// Takes the first slot at or after `now` for `cost` units and returns
    /// when it starts.
    fn reserve(&self, cost: u64, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let start = next.map_or(now, |n| n.max(now));
        // Seconds as f64: exact enough for any rate a flag can give, and
        // no overflow for a huge body at a tiny rate (capped at a day).
        let secs = (cost as f64 / self.per_second).min(86_400.0);
        *next = Some(start + Duration::from_secs_f64(secs));
        start
    }
}

/// Both limits of one client, and what they cost in waiting.
#[derive(Debug)]
pub struct Budget {
    requests: Option<Pace>,
    upload: Option<Pace>,
    waited_ms: AtomicU64,
    paid: AtomicU64,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            requests: limits.requests_per_second.map(Pace::new),
            upload: limits.upload_bytes_per_second.map(|b| Pace::new(b as f64)),
            waited_ms: AtomicU64::new(0),
            paid: AtomicU64::new(0),
        }
    }

    /// Takes a slot for one request with `body` bytes to upload, asked at
    /// `now`, and returns when it starts.
    fn slot(&self, body: u64, now: Instant) -> Instant {
        let mut start = now;
        if let Some(p) = &self.requests {
            start = start.max(p.reserve(1, now));
        }
        if let Some(p) = &self.upload
            && body > 0
        {
            start = start.max(p.reserve(body, now));
        }
        start
    }

    /// Waits for a slot for one request with `body` bytes to upload.
    pub async fn admit(&self, body: u64) {
        let now = Instant::now();
        let start = self.slot(body, now);
        self.paid.fetch_add(1, Ordering::Relaxed);
        if start > now {
            let wait = start - now;
            self.waited_ms
                .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep_until(start).await;
        }
    }

    /// Requests (attempts) paid for so far.
    pub fn paid(&self) -> u64 {
        self.paid.load(Ordering::Relaxed)
    }

    /// Time spent waiting for slots so far, in milliseconds (summed over
    /// requests waiting at once).
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
            budget.admit(body).await;
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

    #[test]
    fn slots_are_spaced_by_cost_over_rate_and_never_before_now() {
        let base = Instant::now();
        let p = Pace::new(4.0);
        assert_eq!(p.reserve(1, base), base);
        assert_eq!(p.reserve(1, base), at(base, 250));
        assert_eq!(p.reserve(2, base), at(base, 500));
        // The next slot is at 1 s; asked later than that, it starts then.
        assert_eq!(p.reserve(1, at(base, 3000)), at(base, 3000));
        assert_eq!(p.reserve(1, at(base, 3000)), at(base, 3250));
    }

    #[test]
    fn a_huge_body_at_a_tiny_rate_is_capped_not_an_overflow() {
        let base = Instant::now();
        let p = Pace::new(1.0);
        p.reserve(u64::MAX, base);
        assert_eq!(p.reserve(1, base), at(base, 86_400_000));
    }

    #[test]
    fn a_request_takes_the_later_of_both_slots() {
        let b = Budget::new(Limits {
            requests_per_second: Some(10.0),
            upload_bytes_per_second: Some(1000),
        });
        let t0 = Instant::now();
        assert_eq!(b.slot(2000, t0), t0); // the next upload slot is 2 s on
        assert_eq!(b.slot(0, t0), at(t0, 100)); // no body: the request rate only
        assert_eq!(b.slot(10, t0), at(t0, 2000)); // a body waits for the upload slot
    }
}
