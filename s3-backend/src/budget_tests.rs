//! The request budget wired into the SDK: a fake HTTP client answers and
//! records when it was called. Only lower bounds on the spacing are
//! asserted (the budget guarantees them; a slow machine only adds to
//! them), so these take a few seconds of real time.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use bytes::Bytes;
use tokio::time::{Duration, Instant};
use xfull_core::backend::{Backend, PutMode};

use crate::budget::{AttemptNo, Limits};
use crate::client::Timeouts;
use crate::{S3Backend, S3Options};

/// What the fake server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    attempt: Option<u32>,
    body: u64,
    /// The body, when it was sent from memory (small XML requests).
    text: String,
    /// The request's URI (path and query).
    uri: String,
}

/// Answers with the statuses given, in turn (then 200), and records calls.
#[derive(Debug, Clone)]
pub(crate) struct Fake {
    answers: Arc<Mutex<Vec<u16>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    pub(crate) fn new(answers: &[u16]) -> Fake {
        let mut a = answers.to_vec();
        a.reverse();
        Fake {
            answers: Arc::new(Mutex::new(a)),
            seen: Arc::default(),
        }
    }

    /// The bodies of the requests seen, in order.
    pub(crate) fn bodies(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.text).collect()
    }

    /// The URIs of the requests seen, in order.
    pub(crate) fn uris(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.uri).collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl HttpClient for Fake {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Fake {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            attempt: request.extension::<AttemptNo>().map(|a| a.0),
            body: request.body().content_length().unwrap_or(0),
            text: request
                .body()
                .bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            uri: request.uri().to_string(),
        });
        let status = self.answers.lock().unwrap().pop().unwrap_or(200);
        let body = match status {
            503 => {
                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            }
            409 => {
                "<Error><Code>RestoreAlreadyInProgress</Code><Message>Object restore is already in progress</Message></Error>"
            }
            _ => "abc",
        };
        let mut resp =
            HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        resp.headers_mut()
            .insert("content-length", body.len().to_string());
        resp.headers_mut().insert("etag", "\"e\"");
        // As every S3 HEAD answer has (a HEAD without it is refused).
        resp.headers_mut()
            .insert("last-modified", "Wed, 01 Jan 2025 00:00:00 GMT");
        // What a HEAD of a thawing DEEP_ARCHIVE object says.
        resp.headers_mut()
            .insert("x-amz-storage-class", "DEEP_ARCHIVE");
        resp.headers_mut()
            .insert("x-amz-restore", "ongoing-request=\"true\"");
        // A versioned bucket's HEAD names the version it read.
        resp.headers_mut().insert("x-amz-version-id", "v7");
        resp.headers_mut()
            .insert("x-amz-object-lock-mode", "COMPLIANCE");
        resp.headers_mut().insert(
            "x-amz-object-lock-retain-until-date",
            "2030-01-01T00:00:00.000Z",
        );
        HttpConnectorFuture::ready(Ok(resp))
    }
}

pub(crate) async fn backend(fake: &Fake, limits: Limits) -> S3Backend {
    let opts = S3Options {
        bucket: "b".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("k".into(), "s".into())),
        limits,
        ..S3Options::default()
    };
    let http = Some(SharedHttpClient::new(fake.clone()));
    S3Backend::with_parts(opts, http, Timeouts::DEFAULT)
        .await
        .unwrap()
}

/// Retries after 503 SlowDown wait for the budget like first attempts:
/// the SDK's own backoff before them is at most 100 and 200 ms, the
/// budget spaces them a second apart.
#[tokio::test]
async fn retries_after_throttling_wait_for_the_request_budget() {
    let fake = Fake::new(&[503, 503]);
    let limits = Limits {
        requests_per_second: Some(1.0),
        upload_bytes_per_second: None,
    };
    let b = backend(&fake, limits).await;
    let t0 = Instant::now();
    assert_eq!(&b.get("k").await.unwrap()[..], b"abc");
    let seen = fake.seen();
    let attempts: Vec<_> = seen.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3)]);
    // The first slot is at t0 or later, each next one a second on.
    for (i, s) in seen.iter().enumerate() {
        let after = s.at - t0;
        assert!(after >= Duration::from_secs(i as u64), "{i}: {after:?}");
    }
    // One paid before sending, two by the connector: the retries.
    let budget = b.budget().unwrap();
    assert_eq!(budget.paid(), 3);
    assert!(budget.waited_ms() >= 1500, "{}", budget.waited_ms());

    // Without limits there is no budget; the fake sees the same attempts.
    let fake = Fake::new(&[503, 503]);
    let b = backend(&fake, Limits::default()).await;
    b.get("k").await.unwrap();
    assert!(b.budget().is_none());
    assert_eq!(fake.seen().len(), 3);
}

/// Uploads are paid for by their bytes: at 256 KiB/s, a 512 KiB put holds
/// the next one back by 2 s; a GET (no body) only by the request rate.
#[tokio::test]
async fn uploads_wait_for_the_byte_budget() {
    let fake = Fake::new(&[]);
    let limits = Limits {
        requests_per_second: Some(100.0),
        upload_bytes_per_second: Some(256 << 10),
    };
    let b = backend(&fake, limits).await;
    let body = Bytes::from(vec![7u8; 512 << 10]);
    let t0 = Instant::now();
    b.put("a", body.clone(), PutMode::Overwrite).await.unwrap();
    b.get("k").await.unwrap();
    b.put("b", body, PutMode::Overwrite).await.unwrap();
    let seen = fake.seen();
    assert_eq!(
        seen.iter().map(|s| s.body).collect::<Vec<_>>(),
        [512 << 10, 0, 512 << 10]
    );
    // The GET's slot is 10 ms after the first put's (the request rate),
    // the second put's 2 s after it (its bytes).
    assert!(seen[1].at - t0 >= Duration::from_millis(10));
    let after = seen[2].at - t0;
    assert!(after >= Duration::from_secs(2), "{after:?}");
    assert_eq!(b.budget().unwrap().paid(), 3);
}

#[tokio::test]
async fn budgets_that_cannot_work_are_refused_naming_the_option() {
    for (limits, what) in [
        (
            Limits {
                requests_per_second: Some(0.5),
                upload_bytes_per_second: None,
            },
            "request budget",
        ),
        (
            Limits {
                requests_per_second: None,
                upload_bytes_per_second: Some(1000),
            },
            "upload budget",
        ),
    ] {
        let opts = S3Options {
            bucket: "b".into(),
            limits,
            ..S3Options::default()
        };
        let e = S3Backend::new(opts).await.unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
    }
}

/// A retried upload is charged its bytes but not held back for them (the
/// SDK fails an upload whose body is not read for 20 s): the next upload
/// waits for both attempts' bytes instead, 4 s at 256 KiB/s for two
/// attempts of 512 KiB.
#[tokio::test]
async fn a_retried_upload_goes_at_once_and_the_next_pays_for_it() {
    let fake = Fake::new(&[503]);
    let limits = Limits {
        requests_per_second: None,
        upload_bytes_per_second: Some(256 << 10),
    };
    let b = backend(&fake, limits).await;
    let body = Bytes::from(vec![7u8; 512 << 10]);
    let t0 = Instant::now();
    b.put("a", body.clone(), PutMode::Overwrite).await.unwrap();
    b.put("b", body, PutMode::Overwrite).await.unwrap();
    let seen = fake.seen();
    let attempts: Vec<_> = seen.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(1)]);
    let after = seen[2].at - t0;
    assert!(after >= Duration::from_secs(4), "{after:?}");
    assert_eq!(b.budget().unwrap().paid(), 3);
}

/// An urgent write (a lease, a sweep's marker) is not held back behind
/// the bytes of the uploads before it: its first poll starts it (no
/// clock involved), where an ordinary upload waits for those bytes. It
/// is still charged: the next ordinary upload waits for its bytes too.
#[tokio::test]
async fn an_urgent_write_goes_at_once_and_is_charged() {
    let budget = crate::budget::Budget::new(Limits {
        requests_per_second: None,
        upload_bytes_per_second: Some(256 << 10),
    });
    // A pack's bytes: the next upload's slot is 2 s away.
    budget.admit(512 << 10).await;
    let mut ordinary = Box::pin(budget.admit(100));
    assert!(futures::poll!(&mut ordinary).is_pending(), "held back");
    drop(ordinary);
    let mut urgent = Box::pin(budget.admit_urgent(100));
    assert!(futures::poll!(&mut urgent).is_ready(), "not held back");
    assert_eq!(budget.paid(), 2);
}
