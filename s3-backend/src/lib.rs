//! xfull's backend for S3-compatible object stores, on aws-sdk-s3.
//!
//! - Repository `s3://bucket/prefix`; a custom endpoint (MinIO, SeaweedFS)
//!   uses path-style addressing; credentials come from the standard AWS
//!   chain (environment, profile, web identity, instance metadata).
//! - Create-only puts send `If-None-Match: *`; 412 means "already exists".
//!   [`S3Backend::probe_conditional_put`] checks at `init` that the server
//!   honours it. Where it does not, `no_conditional_put` selects a slower
//!   HEAD-then-PUT mode whose race window is documented in the README.
//! - Timeouts bound silence, not size; throttling, 5xx and dropped
//!   connections get the SDK's standard retries, endpoints that cannot be
//!   reached or do not answer fewer (`client.rs`, `attempts.rs`), so a
//!   dead endpoint fails in seconds and nothing hangs forever.
//! - Errors say what is wrong (`errors.rs`, `transport.rs`): an archived
//!   object, throttling, refused access or missing credentials are never
//!   reported as damage.
//! - Chunks may live in their own storage class; nodes, manifests and the
//!   config stay in the bucket's default (readable) class.

/// Sends one request built by `$req` with its own attempt counter (see
/// `attempts.rs`); returns the SDK's result and the attempts made. With a
/// request budget, its first attempt waits for its slot first
/// (`budget.rs`), uploading `$body` bytes; an `$urgent` one (a lease, a
/// sweep's marker: `PutOptions::urgent`) is charged its bytes but waits
/// only for its request slot. Defined before the modules so that
/// `archive.rs` sends the same way.
macro_rules! send_raw {
    ($self:ident, $req:expr, $body:expr) => {
        send_raw!($self, $req, $body, false)
    };
    ($self:ident, $req:expr, $body:expr, $urgent:expr) => {{
        if let Some(b) = &$self.budget {
            if $urgent {
                b.admit_urgent($body).await;
            } else {
                b.admit($body).await;
            }
        }
        let attempts = Attempts::new($self.errors.https());
        let config = attempts
            .config()
            .timeout_config($self.timeouts.for_body($body));
        let sent = $req.customize().config_override(config).send().await;
        (sent, attempts.made())
    }};
}

/// [`send_raw!`] with its error mapped for `$key`.
macro_rules! send {
    ($self:ident, $req:expr, $key:expr) => {
        send!($self, $req, $key, 0)
    };
    ($self:ident, $req:expr, $key:expr, $body:expr) => {
        send!($self, $req, $key, $body, false)
    };
    ($self:ident, $req:expr, $key:expr, $body:expr, $urgent:expr) => {{
        let (sent, made) = send_raw!($self, $req, $body, $urgent);
        sent.map_err(|e| $self.errors.map(e, $key, made))
    }};
}

mod archive;
mod attempts;
mod budget;
#[cfg(test)]
mod budget_tests;
mod client;
mod errors;
mod lock;
mod options;
mod requests;
mod silence;
#[cfg(test)]
mod slow_tests;
mod transport;
mod versions;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use bytes::Bytes;
use futures::stream::BoxStream;
use xfull_core::archive::{ArchiveState, ThawAnswer, ThawTier};
use xfull_core::backend::{
    Backend, BackendError, ObjectMeta, PutMode, PutOptions, Retained, Version,
};
use xfull_core::config::StoreSettings;

pub use budget::{Budget, Limits};
use client::Timeouts;
use errors::Mapper;
pub use options::{InvalidOption, OpenError, S3Options, SSE_VALUES, storage_classes};
pub(crate) use requests::paged;

/// Requests sent, by kind.
#[derive(Debug, Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    restore: AtomicU64,
    /// PutObjectRetention requests.
    retention: AtomicU64,
}

pub struct S3Backend {
    client: Client,
    opts: S3Options,
    chunk_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    errors: Mapper,
    counters: Counters,
    budget: Option<Arc<Budget>>,
    timeouts: Timeouts,
}

// By hand: the SDK client's debug text would show the endpoint as given.
impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("opts", &self.opts)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Checks the options and sets up the client; sends nothing.
    pub async fn new(opts: S3Options) -> Result<Self, OpenError> {
        Self::with_parts(opts, None, Timeouts::DEFAULT).await
    }

    /// [`S3Backend::new`] over another HTTP client than the SDK's default
    /// (tests answer from a fake one) or with other timeouts (tests shrink
    /// them).
    async fn with_parts(
        opts: S3Options,
        http: Option<aws_sdk_s3::config::SharedHttpClient>,
        timeouts: Timeouts,
    ) -> Result<Self, OpenError> {
        opts.check()?;
        let budget = opts
            .limits
            .is_set()
            .then(|| Arc::new(Budget::new(opts.limits)));
        let built = client::build(&opts, http, budget.clone(), timeouts).await?;
        Ok(S3Backend {
            client: built.client,
            errors: Mapper::new(opts.location(), opts.endpoint.as_deref(), &built.region),
            chunk_class: opts.chunk_storage_class.as_deref().map(StorageClass::from),
            sse: opts.sse.as_deref().map(ServerSideEncryption::from),
            opts,
            counters: Counters::default(),
            budget,
            timeouts,
        })
    }

    /// The request budget, if `limits` set one: what it made requests wait.
    pub fn budget(&self) -> Option<Arc<Budget>> {
        self.budget.clone()
    }

    /// Takes the repository's stored settings (its config, from `init
    /// --data-storage-class / --sse`) where the options give none: what
    /// this client says explicitly (a flag, its profile) wins, because it
    /// is the operator's choice for this client, while the repository's
    /// is everyone's default. A stored value this build does not know is
    /// refused, naming the config.
    pub fn use_repository_settings(&mut self, stored: &StoreSettings) -> Result<(), InvalidOption> {
        let from_config = |what, v: &Option<String>, valid: &[&str]| -> Result<_, InvalidOption> {
            options::one_of(what, v, valid)?;
            Ok(v.clone())
        };
        let class = from_config(
            "data storage class in the repository config",
            &stored.data_storage_class,
            storage_classes(),
        )?;
        let sse = from_config(
            "server-side encryption in the repository config",
            &stored.sse,
            SSE_VALUES,
        )?;
        if self.opts.chunk_storage_class.is_none() {
            self.opts.chunk_storage_class = class;
            self.chunk_class = self
                .opts
                .chunk_storage_class
                .as_deref()
                .map(StorageClass::from);
        }
        if self.opts.sse.is_none() {
            self.opts.sse = sse;
            self.sse = self.opts.sse.as_deref().map(ServerSideEncryption::from);
        }
        Ok(())
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
        // A first put that fails (an unreachable endpoint, refused
        // access) is the answer: trying more requests only takes longer.
        let opts = PutOptions::new(PutMode::Create);
        self.raw_put(&key, Bytes::from_static(b"1"), true, &opts)
            .await?;
        let second = self
            .raw_put(&key, Bytes::from_static(b"2"), true, &opts)
            .await;
        self.delete_many(std::slice::from_ref(&key)).await?;
        match second {
            Err(e) if e.is_already_exists() => Ok(true),
            Ok(()) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        self.opts.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        match (opts.mode, self.opts.no_conditional_put) {
            (PutMode::Overwrite, _) => self.raw_put(key, data, false, &opts).await,
            (PutMode::Create, false) => self.raw_put(key, data, true, &opts).await,
            (PutMode::Create, true) => match self.head(key).await {
                Ok(_) => Err(BackendError::AlreadyExists {
                    location: self.location(),
                    key: key.to_string(),
                }),
                Err(e) if e.is_not_found() => self.raw_put(key, data, false, &opts).await,
                Err(e) => Err(e),
            },
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.fetch(key, None, u64::MAX).await
    }

    async fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        self.fetch(key, None, max).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        self.fetch(key, Some(range), u64::MAX).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        Ok(self.head_object(key).await?.0)
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let full = self.key(prefix);
        let prefix = prefix.to_string();
        paged(None, move |token: Option<String>| {
            let (full, prefix) = (full.clone(), prefix.clone());
            async move {
                let (items, next) = self.list_page(&full, &prefix, token).await?;
                Ok((items, next.map(Some)))
            }
        })
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        // DeleteObjects takes at most 1,000 keys a request.
        for batch in keys.chunks(1000) {
            let objects: Vec<_> = batch.iter().map(|k| (k.as_str(), None)).collect();
            self.delete_objects(&objects).await?;
        }
        Ok(())
    }

    async fn archive_state(&self, key: &str) -> Result<(ObjectMeta, ArchiveState), BackendError> {
        self.head_archive(key).await
    }

    async fn thaw(
        &self,
        key: &str,
        days: Option<u32>,
        tier: ThawTier,
    ) -> Result<ThawAnswer, BackendError> {
        self.restore_object(key, days, tier).await
    }

    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        self.bucket_lock_enabled().await
    }

    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        self.head_retention(key).await
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: xfull_core::lock::Retention,
    ) -> Result<(), BackendError> {
        self.put_retention(key, version, retention).await
    }

    fn list_versions(&self, prefix: &str) -> BoxStream<'_, Result<Version, BackendError>> {
        self.versions(prefix)
    }

    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<xfull_core::lock::Retention>, BackendError> {
        self.retention_of_version(key, version_id).await
    }

    async fn delete_versions(&self, versions: &[(String, String)]) -> Result<(), BackendError> {
        self.remove_versions(versions).await
    }

    fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        let c = &self.counters;
        [
            ("put", c.put.load(Ordering::Relaxed)),
            ("get", c.get.load(Ordering::Relaxed)),
            ("head", c.head.load(Ordering::Relaxed)),
            ("list", c.list.load(Ordering::Relaxed)),
            ("delete", c.delete.load(Ordering::Relaxed)),
            ("restore", c.restore.load(Ordering::Relaxed)),
            ("put_retention", c.retention.load(Ordering::Relaxed)),
        ]
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::storage_class;
    use xfull_core::backend::ObjectClass;

    fn settings(class: Option<&str>, sse: Option<&str>) -> StoreSettings {
        StoreSettings {
            data_storage_class: class.map(String::from),
            sse: sse.map(String::from),
            ..Default::default()
        }
    }

    async fn backend(class: Option<&str>, sse: Option<&str>) -> S3Backend {
        S3Backend::new(S3Options {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("k".into(), "s".into())),
            chunk_storage_class: class.map(String::from),
            sse: sse.map(String::from),
            ..S3Options::default()
        })
        .await
        .unwrap()
    }

    /// What puts are asked for: the repository's settings where the client
    /// gives none, the client's where it does.
    #[tokio::test]
    async fn repository_settings_fill_in_and_explicit_options_win() {
        let stored = settings(Some("STANDARD_IA"), Some("aws:kms"));
        let mut b = backend(None, None).await;
        b.use_repository_settings(&stored).unwrap();
        assert_eq!(
            storage_class(b.chunk_class.as_ref(), ObjectClass::Data),
            Some(StorageClass::StandardIa)
        );
        assert_eq!(
            storage_class(b.chunk_class.as_ref(), ObjectClass::Metadata),
            None
        );
        assert_eq!(b.sse, Some(ServerSideEncryption::AwsKms));

        let mut b = backend(Some("GLACIER_IR"), Some("AES256")).await;
        b.use_repository_settings(&stored).unwrap();
        assert_eq!(b.chunk_class, Some(StorageClass::GlacierIr));
        assert_eq!(b.sse, Some(ServerSideEncryption::Aes256));

        let mut b = backend(None, None).await;
        b.use_repository_settings(&StoreSettings::default())
            .unwrap();
        assert_eq!((b.chunk_class, b.sse), (None, None));

        let e = backend(None, None)
            .await
            .use_repository_settings(&settings(Some("COLD"), None))
            .unwrap_err();
        assert!(e.to_string().contains("repository config"), "{e}");
    }

    #[test]
    fn the_class_comes_from_the_put_options_not_the_key() {
        let ia = StorageClass::from("STANDARD_IA");
        assert_eq!(
            storage_class(Some(&ia), ObjectClass::Data),
            Some(ia.clone())
        );
        assert_eq!(storage_class(Some(&ia), ObjectClass::Metadata), None);
        assert_eq!(storage_class(None, ObjectClass::Data), None);
    }
}
