//! The storage seam: one small async trait that every backend implements.
//!
//! Contract (checked by the conformance suite, `conformance` feature):
//! - `put` with [`PutMode::Create`] never overwrites: on an existing key it
//!   fails with [`BackendError::AlreadyExists`] and leaves the object as it
//!   was. A successful `put` is durable and atomic: no reader ever sees a
//!   partially written object under its key.
//! - After a successful `put`, `get`, `head` and `list` see the object
//!   (strong read-after-write consistency, as S3, MinIO and a local file
//!   system give).
//! - `list` returns every object whose key starts with the prefix, in no
//!   particular order, with its size and the store's modification time.
//! - `delete_many` treats missing keys as already deleted.

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::archive::{ArchiveState, ThawAnswer, ThawTier};
use crate::lock::Retention;

/// Errors with a meaning callers act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("{key} not found in {location}")]
    NotFound { location: String, key: String },

    #[error("{key} already exists in {location}")]
    AlreadyExists { location: String, key: String },

    #[error("precondition failed for {key} in {location}: {message}")]
    Precondition {
        location: String,
        key: String,
        message: String,
    },

    /// The store does not know these credentials or refuses them as a
    /// whole (bad key, expired token, no credentials at all).
    #[error("access to {location} denied: {message}")]
    Unauthenticated { location: String, message: String },

    /// The store knows the credentials and refuses them this one request:
    /// a policy (S3 403 AccessDenied to a signed request) or the file
    /// system (EACCES, EPERM) does not let them `operation` the key. Not
    /// damage and not worth retrying; least-privilege roles
    /// (docs/least-privilege.md) meet it by design, so it names what was
    /// refused for the operator to grant or to run elsewhere.
    #[error("{location} refused to {operation} {key}: {message}")]
    PermissionDenied {
        location: String,
        key: String,
        operation: Operation,
        message: String,
    },

    /// Worth retrying: throttling, timeouts, a dropped connection.
    #[error("temporary failure at {location}: {message}")]
    Transient { location: String, message: String },

    /// The object is in an archive storage class (S3 GLACIER, DEEP_ARCHIVE)
    /// and must be restored from the archive before it can be read.
    #[error(
        "{key} in {location} is in an archive storage class and must be restored from the \
         archive before it can be read"
    )]
    Archived { location: String, key: String },

    /// What is stored under the key cannot be an object: not a regular
    /// file, a symbolic link, a size no object has. Damage, not an outage.
    #[error("{key} in {location} is damaged: {message}")]
    Corrupt {
        location: String,
        key: String,
        message: String,
    },

    /// No room to store the object: the file system is full, or a write
    /// of chunk data would eat into the room kept for gc and prune (see
    /// [`Backend::free_for_data`]). Not damage; nothing stored changed.
    #[error("no space at {location} for {key}: {message}")]
    NoSpace {
        location: String,
        key: String,
        message: String,
    },

    #[error("storage error at {location}: {message}")]
    Other { location: String, message: String },
}

impl BackendError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
    pub fn is_already_exists(&self) -> bool {
        matches!(self, BackendError::AlreadyExists { .. })
    }
    /// True when the store refused this request to these credentials.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, BackendError::PermissionDenied { .. })
    }
    /// True when the stored object itself is damaged (not the store
    /// unreachable or the access denied).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, BackendError::Corrupt { .. })
    }
    /// True when the store had no room for a write.
    pub fn is_no_space(&self) -> bool {
        matches!(self, BackendError::NoSpace { .. })
    }
}

/// Refuses an object of `size` bytes where at most `max` are expected
/// (see [`Backend::get_at_most`]).
pub fn check_size(location: &str, key: &str, size: u64, max: u64) -> Result<(), BackendError> {
    if size > max {
        return Err(BackendError::Corrupt {
            location: location.to_string(),
            key: key.to_string(),
            message: format!("{size} bytes, more than such an object can be ({max})"),
        });
    }
    Ok(())
}

/// What a refused request was for, as permissions are granted: S3
/// policies grant reading, listing, writing and deleting separately, and
/// a bucket policy can allow only create-only writes (condition key
/// `s3:if-none-match`), which refuses overwrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    /// A put; a store that cannot tell whether it would have replaced an
    /// object (S3) says this.
    Write,
    /// A put known to replace an existing object ([`PutMode::Overwrite`]).
    Overwrite,
    Delete,
    /// Asking an archive class for a readable copy (S3 RestoreObject).
    Thaw,
    /// Reading an object's retention (S3 HEAD shows it only to
    /// `s3:GetObjectRetention`) or a bucket's object lock setting.
    ReadLock,
    /// Extending an object's retention (S3 PutObjectRetention).
    Retain,
    /// Listing every version of objects (S3 ListObjectVersions).
    ListVersions,
    /// Reading one version of an object by its id.
    ReadVersion,
    /// Deleting one version of an object for good, by its id.
    DeleteVersion,
}

impl Operation {
    /// The permission as an S3 policy names it (`s3:PutObject` covers
    /// both writes and overwrites; `s3:ListBucket` is granted on the
    /// bucket, the others on its objects).
    pub fn s3_action(self) -> &'static str {
        match self {
            Operation::Read => "s3:GetObject",
            Operation::List => "s3:ListBucket",
            Operation::Write | Operation::Overwrite => "s3:PutObject",
            Operation::Delete => "s3:DeleteObject",
            Operation::Thaw => "s3:RestoreObject",
            Operation::ReadLock => "s3:GetObjectRetention",
            Operation::Retain => "s3:PutObjectRetention",
            Operation::ListVersions => "s3:ListBucketVersions",
            Operation::ReadVersion => "s3:GetObjectVersion",
            Operation::DeleteVersion => "s3:DeleteObjectVersion",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Write => "write",
            Operation::Overwrite => "overwrite",
            Operation::Delete => "delete",
            Operation::Thaw => "thaw",
            Operation::ReadLock => "read the retention of",
            Operation::Retain => "extend the retention of",
            Operation::ListVersions => "list the versions of",
            Operation::ReadVersion => "read versions of",
            Operation::DeleteVersion => "delete versions of",
        })
    }
}

/// How `put` treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with `AlreadyExists` if the key exists (S3 `If-None-Match: *`).
    Create,
    /// Replace whatever is there.
    Overwrite,
}

/// What an object holds, which decides where a store keeps it. Backends
/// learn it from [`PutOptions`], never from key names, so that only the
/// placement module (`crate::placement`) knows which keys hold chunk data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ObjectClass {
    /// Small objects read by every operation (config, nodes, manifests,
    /// leases, markers, records): always in the store's hot class.
    #[default]
    Metadata,
    /// Chunk data: read back only by restores and `verify --read-data`, so
    /// it may go to a cheaper, colder class (S3 `--s3-storage-class-chunks`).
    Data,
}

/// How to store one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOptions {
    pub mode: PutMode,
    pub class: ObjectClass,
    /// Object lock retention to put the object with (S3 Object Lock);
    /// set by `crate::lock::store` for the objects points depend on.
    pub retention: Option<Retention>,
    /// A protocol write others wait on (a lease, a sweep's marker): an
    /// upload budget charges its bytes but does not hold it back behind
    /// the data uploads before it, as it does not a retry. Held back, a
    /// heartbeat could come too late (a sweep stops itself after half
    /// its TTL of silence), and a Ctrl-C would wait for it.
    pub urgent: bool,
}

impl PutOptions {
    /// A metadata object with this mode.
    pub fn new(mode: PutMode) -> Self {
        PutOptions {
            mode,
            class: ObjectClass::Metadata,
            retention: None,
            urgent: false,
        }
    }

    /// The same options for an urgent write (see [`PutOptions::urgent`]).
    pub fn urgent(self) -> Self {
        PutOptions {
            urgent: true,
            ..self
        }
    }

    /// A chunk-data object with this mode.
    pub fn data(mode: PutMode) -> Self {
        PutOptions {
            mode,
            class: ObjectClass::Data,
            retention: None,
            urgent: false,
        }
    }
}

/// What a listing or `head` says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// As the store reports it (the server's clock, not ours).
    pub last_modified: DateTime<Utc>,
    /// The storage class a listing reports (S3's `StorageClass`: where a
    /// lifecycle rule moved the object, whatever it was put with); `None`
    /// where the store has no classes or did not say (a HEAD).
    pub storage_class: Option<String>,
}

/// What [`Backend::retention`] saw of an object.
#[derive(Clone, Debug)]
pub struct Retained {
    pub meta: ObjectMeta,
    /// Its retention, if it shows one.
    pub retention: Option<Retention>,
    /// The version seen (S3 with versioning): the one to extend.
    pub version: Option<String>,
}

/// One version of an object in a versioned store (S3 with versioning,
/// which object lock requires): what `list_versions` gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub version_id: String,
    /// A delete marker: the version a plain DELETE adds, hiding the ones
    /// under it.
    pub delete_marker: bool,
    /// The current version (what a plain GET reads).
    pub latest: bool,
    pub last_modified: DateTime<Utc>,
    pub size: u64,
}

/// A key-value object store.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Where the store is, for messages: a path or `s3://bucket/prefix`.
    fn location(&self) -> String;

    /// Stores `data` under `key` as `opts` says (mode, storage class).
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError>;

    /// A metadata object: `put_opts` with [`ObjectClass::Metadata`].
    /// Provided, so that wrappers implement `put_opts` only and never
    /// drop the class on the way to the store they wrap.
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<(), BackendError> {
        self.put_opts(key, data, PutOptions::new(mode)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError>;

    /// The object under `key` if it is at most `max` bytes; a larger one
    /// is damage naming it ([`BackendError::Corrupt`]), refused before its
    /// bytes are read. Readers of metadata use this with the most their
    /// kind of object can be, so that a planted object of gigabytes (a
    /// sparse file, a lying server) cannot exhaust a reader's memory.
    /// Provided as a `get` then the check, which bounds nothing: it keeps
    /// the GETs of wrappers made for tests (fault injection, counting) as
    /// they are. Every store (local, S3, memory) and every wrapper used
    /// outside tests (`lock::Locking`) overrides it to refuse before it
    /// reads.
    async fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        let bytes = self.get(key).await?;
        check_size(&self.location(), key, bytes.len() as u64, max)?;
        Ok(bytes)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError>;

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError>;

    /// Whether `key` is stored: a HEAD, "not found" answering `false` and
    /// any other failure an error.
    async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Streams the objects under `prefix`; memory stays bounded however
    /// many there are.
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>>;

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError>;

    /// Removes what interrupted writers left outside the key space (a
    /// local directory's staging files) if older than `before`; returns
    /// how many. Stores whose writes are atomic have nothing to remove.
    async fn remove_incomplete(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let _ = before;
        Ok(0)
    }

    /// Bytes of chunk data ([`ObjectClass::Data`] puts) the store can
    /// still take, where it has a limit: a local file system keeps part of
    /// its free space for metadata, so that gc and prune, which free
    /// space, still run when backups have filled the rest (a full disk
    /// used to stop gc at its first marker). `None`: no limit known (S3).
    /// gc plans no more rewrites than fit.
    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        Ok(None)
    }

    /// Requests sent so far, by kind, for stores that bill by request.
    fn request_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        std::collections::BTreeMap::new()
    }

    /// The object and where it stands in an archive class (see
    /// `crate::archive`); stores without archive classes say `Hot` for
    /// any object that exists.
    async fn archive_state(&self, key: &str) -> Result<(ObjectMeta, ArchiveState), BackendError> {
        Ok((self.head(key).await?, ArchiveState::Hot))
    }

    /// Asks for a readable copy of an archived object for `days` days at
    /// `tier` (S3 RestoreObject); `None` for a class that takes no days
    /// (Intelligent-Tiering: [`crate::archive::thaw_keeps_days`]). Stores
    /// without archive classes have nothing to thaw.
    async fn thaw(
        &self,
        key: &str,
        days: Option<u32>,
        tier: ThawTier,
    ) -> Result<ThawAnswer, BackendError> {
        let _ = (days, tier);
        self.head(key).await?;
        Ok(ThawAnswer::NotArchived)
    }

    /// Whether the store can lock objects (an S3 bucket with Object Lock
    /// enabled). Stores without object lock say no.
    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        Ok(false)
    }

    /// The object and its retention, if it has one (S3: a HEAD).
    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        Ok(Retained {
            meta: self.head(key).await?,
            retention: None,
            version: None,
        })
    }

    /// Every version of every object under `prefix`: all versions of a key
    /// together, newest first, keys in order (S3 ListObjectVersions).
    /// Stores without versions say so in the stream's only item.
    fn list_versions(&self, prefix: &str) -> BoxStream<'_, Result<Version, BackendError>> {
        let _ = prefix;
        Box::pin(futures::stream::once(futures::future::ready(Err(
            self.unversioned()
        ))))
    }

    /// The retention of one version of `key`, if it has one (S3: a HEAD
    /// with the version id).
    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, BackendError> {
        let _ = (key, version_id);
        Err(self.unversioned())
    }

    /// Deletes these versions for good (S3 DeleteObjects with version
    /// ids): a delete marker so deleted uncovers the version under it; a
    /// locked version is refused by the store.
    async fn delete_versions(&self, versions: &[(String, String)]) -> Result<(), BackendError> {
        let _ = versions;
        Err(self.unversioned())
    }

    /// The error of the version methods on a store without versions.
    fn unversioned(&self) -> BackendError {
        BackendError::Other {
            location: self.location(),
            message: "this store keeps no versions of objects (only an S3 bucket with \
                      versioning does)"
                .into(),
        }
    }

    /// Sets the object's retention to `retention` (S3
    /// PutObjectRetention): of `version` when given (the one
    /// [`Backend::retention`] saw), else of the current one. Naming the
    /// version keeps one put between the two requests from being the one
    /// locked (review, stop 56). Callers only ever lengthen it; a store in
    /// compliance mode refuses to shorten it anyway.
    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: Retention,
    ) -> Result<(), BackendError> {
        let _ = (version, retention);
        Err(BackendError::Other {
            location: self.location(),
            message: format!("cannot lock {key}: this store has no object lock"),
        })
    }
}
