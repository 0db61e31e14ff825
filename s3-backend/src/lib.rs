//! xfull's backend for S3-compatible object stores, on aws-sdk-s3.
//!
//! - Repository `s3://bucket/prefix`; a custom endpoint (MinIO, SeaweedFS)
//!   uses path-style addressing; credentials come from the standard AWS
//!   chain (environment, profile, web identity, instance metadata).
//! - Create-only puts send `If-None-Match: *`; 412 means "already exists".
//!   [`S3Backend::probe_conditional_put`] checks at `init` that the server
//!   honours it. Where it does not, `no_conditional_put` selects a slower
//!   HEAD-then-PUT mode whose race window is documented in the README.
//! - Retries with exponential backoff and jitter on throttling, 5xx and
//!   connection errors (the SDK's standard retry mode), bounded by attempt
//!   and operation timeouts, so nothing hangs forever.
//! - Chunks may live in their own storage class; nodes, manifests and the
//!   config stay in the bucket's default (readable) class.

mod errors;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ServerSideEncryption, StorageClass};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use xfull_core::backend::{Backend, BackendError, ObjectMeta, PutMode};

use errors::Mapper;

/// How to reach a bucket.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing slash.
    pub prefix: String,
    /// A custom endpoint, e.g. `http://127.0.0.1:9000`; implies path-style.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Emulate create-only puts with HEAD then PUT (servers that ignore
    /// `If-None-Match`).
    pub no_conditional_put: bool,
    /// Storage class for chunk objects, e.g. `STANDARD_IA`, `GLACIER_IR`.
    pub chunk_storage_class: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// An access key and secret to use instead of the standard AWS chain
    /// (for programs that embed the backend, and tests).
    pub static_credentials: Option<(String, String)>,
}

impl S3Options {
    /// Parses `s3://bucket/prefix`.
    pub fn parse_url(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

/// Requests sent, by kind.
#[derive(Debug, Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

#[derive(Debug)]
pub struct S3Backend {
    client: Client,
    opts: S3Options,
    chunk_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    errors: Mapper,
    counters: Counters,
}

impl S3Backend {
    pub async fn new(opts: S3Options) -> Result<Self, BackendError> {
        let location = location(&opts);
        let bad = |message: String| BackendError::Other {
            location: location.clone(),
            message,
        };
        let chunk_class = known(
            "storage class",
            opts.chunk_storage_class.as_deref(),
            StorageClass::values(),
        )
        .map_err(bad)?;
        let sse = known(
            "server-side encryption",
            opts.sse.as_deref(),
            ServerSideEncryption::values(),
        )
        .map_err(bad)?;
        let retry = RetryConfig::standard()
            .with_max_attempts(6)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(300))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts);
        match (&opts.region, &opts.endpoint) {
            (Some(r), _) => loader = loader.region(Region::new(r.clone())),
            // Custom endpoints rarely care about the region, but signing needs one.
            (None, Some(_))
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none() =>
            {
                loader = loader.region(Region::new("us-east-1"));
            }
            _ => {}
        }
        if let Some((key, secret)) = &opts.static_credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                key,
                secret,
                None,
                None,
                "xfull-static",
            ));
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            // S3-compatible servers do not all know the newer checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &opts.endpoint {
            conf = conf.endpoint_url(ep).force_path_style(true);
        }
        Ok(S3Backend {
            client: Client::from_conf(conf.build()),
            errors: Mapper::new(location),
            opts,
            chunk_class,
            sse,
            counters: Counters::default(),
        })
    }

    fn key(&self, key: &str) -> String {
        if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        }
    }

    fn unkey<'a>(&self, full: &'a str) -> &'a str {
        if self.opts.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.opts.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    /// Checks that the server refuses a second create-only put of a key
    /// (as `If-None-Match: *` requires); a server that ignores the header
    /// would let two writers overwrite each other's objects.
    pub async fn probe_conditional_put(&self) -> Result<bool, BackendError> {
        let key = format!("probe/conditional-put-{}", std::process::id());
        let first = self.raw_put(&key, Bytes::from_static(b"1"), true).await;
        let second = self.raw_put(&key, Bytes::from_static(b"2"), true).await;
        self.delete_many(std::slice::from_ref(&key)).await?;
        first?;
        match second {
            Err(e) if e.is_already_exists() => Ok(true),
            Ok(()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// GET of a whole object or a byte range of it.
    async fn fetch(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, BackendError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .get_object()
            .bucket(&self.opts.bucket)
            .key(self.key(key))
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)))
            .send()
            .await
            .map_err(|e| self.errors.map(e, key))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| BackendError::Transient {
                location: self.location(),
                message: format!("reading {key}: {e}"),
            })?;
        Ok(body.into_bytes())
    }

    async fn raw_put(&self, key: &str, data: Bytes, create: bool) -> Result<(), BackendError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(self.key(key))
            .body(ByteStream::from(data));
        if create {
            req = req.if_none_match("*");
        }
        if key.starts_with(xfull_core::keys::CHUNKS)
            && let Some(c) = &self.chunk_class
        {
            req = req.storage_class(c.clone());
        }
        if let Some(s) = &self.sse {
            req = req.server_side_encryption(s.clone());
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| self.errors.map(e, key))
    }
}

/// Checks a user-given SDK enum value against the values the SDK knows.
fn known<T: for<'a> From<&'a str>>(
    what: &str,
    value: Option<&str>,
    values: &[&str],
) -> Result<Option<T>, String> {
    match value {
        None => Ok(None),
        Some(v) if values.contains(&v) => Ok(Some(T::from(v))),
        Some(v) => Err(format!(
            "unknown {what} {v:?} (one of: {})",
            values.join(", ")
        )),
    }
}

/// `s3://bucket/prefix` (and the endpoint, when custom), for messages.
fn location(opts: &S3Options) -> String {
    let url = if opts.prefix.is_empty() {
        format!("s3://{}", opts.bucket)
    } else {
        format!("s3://{}/{}", opts.bucket, opts.prefix)
    };
    match &opts.endpoint {
        Some(ep) => format!("{url} at {ep}"),
        None => url,
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        location(&self.opts)
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<(), BackendError> {
        match (mode, self.opts.no_conditional_put) {
            (PutMode::Overwrite, _) => self.raw_put(key, data, false).await,
            (PutMode::Create, false) => self.raw_put(key, data, true).await,
            (PutMode::Create, true) => match self.head(key).await {
                Ok(_) => Err(BackendError::AlreadyExists {
                    location: self.location(),
                    key: key.to_string(),
                }),
                Err(e) if e.is_not_found() => self.raw_put(key, data, false).await,
                Err(e) => Err(e),
            },
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.fetch(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        self.fetch(key, Some(range)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .head_object()
            .bucket(&self.opts.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| self.errors.map(e, key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_chrono(out.last_modified()),
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.opts.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        let prefix = prefix.to_string();
        futures::stream::unfold(pages, move |mut pages| async move {
            self.counters.list.fetch_add(1, Ordering::Relaxed);
            let page = pages.next().await?;
            Some((page, pages))
        })
        .flat_map(move |page| {
            let items: Vec<Result<ObjectMeta, BackendError>> = match page {
                Err(e) => vec![Err(self.errors.map(e, &prefix))],
                Ok(out) => out
                    .contents()
                    .iter()
                    .filter_map(|o| {
                        Some(Ok(ObjectMeta {
                            key: self.unkey(o.key()?).to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            last_modified: to_chrono(o.last_modified()),
                        }))
                    })
                    .collect(),
            };
            futures::stream::iter(items)
        })
        .boxed()
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        // DeleteObjects takes at most 1,000 keys a request.
        for batch in keys.chunks(1000) {
            self.counters.delete.fetch_add(1, Ordering::Relaxed);
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.key(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::Other {
                    location: self.location(),
                    message: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| BackendError::Other {
                    location: self.location(),
                    message: e.to_string(),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.opts.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.errors.map(e, &batch[0]))?;
            if let Some(err) = out.errors().first() {
                return Err(BackendError::Other {
                    location: self.location(),
                    message: format!(
                        "deleting {}: {} {}",
                        err.key().unwrap_or("?"),
                        err.code().unwrap_or(""),
                        err.message().unwrap_or("")
                    ),
                });
            }
        }
        Ok(())
    }

    fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        let c = &self.counters;
        [
            ("put", c.put.load(Ordering::Relaxed)),
            ("get", c.get.load(Ordering::Relaxed)),
            ("head", c.head.load(Ordering::Relaxed)),
            ("list", c.list.load(Ordering::Relaxed)),
            ("delete", c.delete.load(Ordering::Relaxed)),
        ]
        .into()
    }
}
