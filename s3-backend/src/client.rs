//! The SDK client: region, credentials, timeouts and retries, and why.
//!
//! Timeouts bound silence, not size: a transfer that keeps moving may take
//! as long as it needs at a floor of 64 KiB/s, one that stops is cut off
//! soon.
//! - connect: 5 s for TCP and TLS; a host that drops our packets fails
//!   within 3 attempts, about 15 s.
//! - answer: 30 s from handing a request's last byte to the connection
//!   until the response head arrives (`silence.rs`), plus what is still in
//!   transit then (at most 8 MiB of a body) at the floor, 128 s at most.
//!   The SDK's own read timeout counts from the request's start, upload
//!   included, which would make a 32 MiB pack need 9 Mbit/s; it is off
//!   for S3 requests (the credential providers' requests, to STS or SSO,
//!   keep it: their bodies are small). A server that accepts the
//!   connection and never answers fails within 2 attempts, about 60 s.
//! - stalled bodies: an upload the connection takes no more of for 20 s
//!   (`silence.rs`: it counts 256 KiB pieces, so below about 13 KiB/s);
//!   a download that moves no byte for 20 s (the SDK's stalled-stream
//!   protection).
//! - attempt 5 min, operation 10 min, each plus an upload's body at the
//!   floor (a 32 MiB pack: 8.5 and 17 min more): the backstop for a
//!   trickle.
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
use crate::silence::Watched;

const MAX_ATTEMPTS: u32 = 6;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeouts of a client (see the module's text); tests shrink them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub answer: Duration,
    pub stall: Duration,
    pub attempt: Duration,
    pub operation: Duration,
    /// The slowest upload, in bytes per second, that still succeeds: per
    /// request, so a backup's two packs in flight need twice this.
    pub upload_floor: u64,
    /// What may still be in transit when the connection has taken a
    /// body's last byte: Linux grows a socket's send buffer to 4 MiB, and
    /// the server's receive window holds as much again.
    pub in_transit: u64,
}

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        connect: CONNECT_TIMEOUT,
        answer: ANSWER_TIMEOUT,
        stall: Duration::from_secs(20),
        attempt: Duration::from_secs(300),
        operation: Duration::from_secs(600),
        upload_floor: 64 << 10,
        in_transit: 8 << 20,
    };

    /// For every client the config loader makes, credential providers'
    /// (STS, SSO) too; the S3 client turns the read timeout off.
    pub fn loader(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.answer)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    /// `bytes` at the floor rate.
    fn at_floor(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.upload_floor as f64)
    }

    /// How long a request may wait for the response head once the
    /// connection has its body's last byte (`body` bytes in all).
    pub fn answer_after(&self, body: u64) -> Duration {
        self.answer + self.at_floor(body.min(self.in_transit))
    }

    /// The attempt and operation timeouts of a request uploading `body`
    /// bytes: room for the body at the floor rate, twice in an operation.
    pub fn for_body(&self, body: u64) -> TimeoutConfig {
        let upload = self.at_floor(body);
        TimeoutConfig::builder()
            .operation_attempt_timeout(self.attempt + upload)
            .operation_timeout(self.operation + upload * 2)
            .build()
    }
}

/// The client and the region it signs for.
pub(crate) struct Built {
    pub client: Client,
    pub region: String,
}

/// `http` replaces the SDK's default HTTP client and its answer timeout
/// (tests); with a `budget`, the client's connector makes retries wait
/// for it (`budget.rs`).
pub(crate) async fn build(
    opts: &S3Options,
    http: Option<SharedHttpClient>,
    budget: Option<Arc<Budget>>,
    timeouts: Timeouts,
) -> Result<Built, OpenError> {
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5));
    let limits = timeouts.loader();
    let stalls = StalledStreamProtectionConfig::enabled()
        .grace_period(timeouts.stall)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(limits)
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
        // Uploads are timed on silence instead (`silence.rs`); the other
        // timeouts stay the loader's.
        .timeout_config(TimeoutConfig::builder().disable_read_timeout().build())
        // S3-compatible servers do not all know the newer checksums.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(ep) = &opts.endpoint {
        conf = conf.endpoint_url(ep).force_path_style(true);
    } else if blank_endpoint_variable(|n| std::env::var_os(n)) {
        // An exported but empty variable means "not set"; the SDK would
        // take it as the endpoint and fail every request ("Custom endpoint
        // `` was not a valid URI"). The loader's own choice (which
        // refuses an empty one) stands instead.
        conf.set_endpoint_url(shared.endpoint_url().map(str::to_string));
    }
    // A fake client (tests) has no connection to be silent on.
    let http = http.unwrap_or_else(|| {
        let inner = shared.http_client().unwrap_or_else(default_http_client);
        SharedHttpClient::new(Watched { inner, timeouts })
    });
    conf = conf.http_client(match budget {
        Some(budget) => SharedHttpClient::new(Limited {
            inner: http,
            budget,
        }),
        None => http,
    });
    Ok(Built {
        client: Client::from_conf(conf.build()),
        region: region.to_string(),
    })
}

/// Whether the endpoint variable the SDK reads for S3 (`AWS_ENDPOINT_URL_S3`
/// if set, else `AWS_ENDPOINT_URL`) is set but empty.
fn blank_endpoint_variable(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .into_iter()
        .find_map(var)
        .is_some_and(|v| v.is_empty())
}

/// The client the SDK builds when given none (hyper, rustls on aws-lc,
/// the proxy from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` as the SDK's
/// behaviour version says), to wrap in the answer timeout and the budget:
/// built the same way, so that they change nothing else about how
/// requests travel.
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

#[cfg(test)]
mod tests {
    use super::blank_endpoint_variable;
    use std::ffi::OsString;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| OsString::from(v))
        }
    }

    /// The SDK takes AWS_ENDPOINT_URL_S3 when it is set (even empty),
    /// else AWS_ENDPOINT_URL.
    #[test]
    fn an_empty_endpoint_variable_is_found_where_the_sdk_looks() {
        assert!(!blank_endpoint_variable(env(&[])));
        assert!(blank_endpoint_variable(env(&[("AWS_ENDPOINT_URL", "")])));
        assert!(blank_endpoint_variable(env(&[("AWS_ENDPOINT_URL_S3", "")])));
        assert!(!blank_endpoint_variable(env(&[
            ("AWS_ENDPOINT_URL_S3", "http://h:1"),
            ("AWS_ENDPOINT_URL", ""),
        ])));
        assert!(blank_endpoint_variable(env(&[
            ("AWS_ENDPOINT_URL_S3", ""),
            ("AWS_ENDPOINT_URL", "http://h:1"),
        ])));
        assert!(!blank_endpoint_variable(env(&[(
            "AWS_ENDPOINT_URL",
            "http://h:1"
        )])));
    }
}
