//! The SDK client: region, credentials, timeouts and retries, and why.
//!
//! Timeouts bound silence, not size: a transfer that keeps moving may take
//! as long as it needs (up to the attempt timeout), one that stops is cut
//! off soon.
//! - connect: 5 s for TCP and TLS; a host that drops our packets fails
//!   within 3 attempts, about 15 s.
//! - answer (the SDK's read timeout): 30 s from sending a request until the
//!   response head arrives. An upload counts in this time, so one object
//!   must upload at 17 KB/s or more (chunks are at most 512 KiB by default;
//!   backups keep up to 32 uploads in flight). A server that accepts the
//!   connection and never answers fails within 2 attempts, about 60 s.
//! - stalled bodies: the SDK's stalled-stream protection fails a body that
//!   moves no byte for 20 s, in either direction.
//! - attempt 5 min, operation 10 min: the backstop for a trickle.
//!
//! Throttling (503 SlowDown), 5xx and dropped connections get the SDK's
//! standard retries: 6 attempts, exponential backoff from 100 ms to 5 s
//! with jitter. Failures to connect get fewer (see `attempts.rs`).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};

use std::sync::Arc;

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::ConnectorBuilder;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::S3Options;
use crate::budget::{Budget, Limited};
use crate::options::OpenError;

const MAX_ATTEMPTS: u32 = 6;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const STALL_GRACE: Duration = Duration::from_secs(20);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(600);

/// The client and the region it signs for.
pub(crate) struct Built {
    pub client: Client,
    pub region: String,
}

/// `http` replaces the SDK's default HTTP client (tests); with a `budget`,
/// the client's connector makes retries wait for it (`budget.rs`).
pub(crate) async fn build(
    opts: &S3Options,
    http: Option<SharedHttpClient>,
    budget: Option<Arc<Budget>>,
) -> Result<Built, OpenError> {
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(ANSWER_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let stalls = StalledStreamProtectionConfig::enabled()
        .grace_period(STALL_GRACE)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts)
        .stalled_stream_protection(stalls);
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some((key, secret)) = &opts.static_credentials {
        loader =
            loader.credentials_provider(Credentials::new(key, secret, None, None, "xfull-static"));
    }
    let shared = loader.load().await;
    let region = match (shared.region(), &opts.endpoint) {
        (Some(r), _) => r.clone(),
        // Custom endpoints rarely care about the region, but signing needs one.
        (None, Some(_)) => Region::new("us-east-1"),
        // AWS itself needs it to find the endpoint; found now, not at the
        // first request, so the message can say which setting is missing.
        (None, None) => {
            return Err(OpenError::NoRegion {
                location: opts.location(),
            });
        }
    };
    let mut conf = aws_sdk_s3::config::Builder::from(&shared)
        .region(region.clone())
        // S3-compatible servers do not all know the newer checksums.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(ep) = &opts.endpoint {
        conf = conf.endpoint_url(ep).force_path_style(true);
    }
    let http = http.or_else(|| shared.http_client());
    match (http, budget) {
        (inner, Some(budget)) => {
            let inner = inner.unwrap_or_else(default_http_client);
            conf = conf.http_client(Limited { inner, budget });
        }
        (Some(inner), None) => conf = conf.http_client(inner),
        (None, None) => {}
    }
    Ok(Built {
        client: Client::from_conf(conf.build()),
        region: region.to_string(),
    })
}

/// The client the SDK builds when given none (hyper, rustls on aws-lc,
/// the proxy from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` as the SDK's
/// behaviour version says), to wrap in the budget: built the same way, so
/// that a budget changes nothing else about how requests travel.
fn default_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}
