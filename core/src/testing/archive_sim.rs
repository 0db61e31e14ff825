//! A decorator that plays an S3 archive class: every chunk-data object
//! (`ObjectClass::Data`) is stored "in DEEP_ARCHIVE" (or another class,
//! [`ArchiveSim::in_class`]) and answers reads
//! with `Archived` (S3's 403 InvalidObjectState) until it is thawed and the
//! test says the thaw finished; metadata stays hot. Thaw requests are
//! counted, and can be made to fail after a number of them (an
//! interrupted thaw).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::archive::{ArchiveState, ThawAnswer, ThawTier};
use crate::backend::{Backend, BackendError, ObjectClass, ObjectMeta, PutOptions, Retained};

pub const CLASS: &str = "DEEP_ARCHIVE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Archived,
    Thawing,
    Thawed,
}

#[derive(Debug)]
pub struct ArchiveSim {
    inner: Arc<dyn Backend>,
    archived: Mutex<BTreeMap<String, Stage>>,
    thaws: AtomicU64,
    /// Thaw requests after this many fail.
    fail_after: Mutex<Option<u64>>,
    /// The archive class the data objects are in.
    class: &'static str,
    /// The days each thaw request asked for.
    days: Mutex<Vec<Option<u32>>>,
}

impl ArchiveSim {
    pub fn new(inner: Arc<dyn Backend>) -> ArchiveSim {
        ArchiveSim {
            inner,
            archived: Mutex::default(),
            thaws: AtomicU64::new(0),
            fail_after: Mutex::default(),
            class: CLASS,
            days: Mutex::default(),
        }
    }

    /// Data objects in `class` instead (e.g.
    /// [`crate::archive::IT_DEEP_ARCHIVE`]).
    pub fn in_class(inner: Arc<dyn Backend>, class: &'static str) -> ArchiveSim {
        ArchiveSim {
            class,
            ..ArchiveSim::new(inner)
        }
    }

    /// The days each thaw request asked for, in order.
    pub fn thaw_days(&self) -> Vec<Option<u32>> {
        self.days.lock().unwrap().clone()
    }

    /// Thaw requests received so far (failed ones included).
    pub fn thaw_requests(&self) -> u64 {
        self.thaws.load(Ordering::SeqCst)
    }

    /// Thaw requests after `n` more fail (`None`: none fails).
    pub fn fail_thaws_after(&self, n: Option<u64>) {
        *self.fail_after.lock().unwrap() = n.map(|n| n + self.thaw_requests());
    }

    /// Every running thaw completes.
    pub fn finish_thaws(&self) {
        for s in self.archived.lock().unwrap().values_mut() {
            if *s == Stage::Thawing {
                *s = Stage::Thawed;
            }
        }
    }

    /// An object stored before (e.g. through the backend this wraps) goes
    /// to the archive class, as an S3 lifecycle transition moves it.
    pub fn archive(&self, key: &str) {
        self.archived
            .lock()
            .unwrap()
            .insert(key.to_string(), Stage::Archived);
    }

    /// Keys in the archive class.
    pub fn archived_keys(&self) -> Vec<String> {
        self.archived.lock().unwrap().keys().cloned().collect()
    }

    fn stage(&self, key: &str) -> Option<Stage> {
        self.archived.lock().unwrap().get(key).copied()
    }

    fn readable(&self, key: &str) -> Result<(), BackendError> {
        match self.stage(key) {
            Some(Stage::Archived | Stage::Thawing) => Err(BackendError::Archived {
                location: self.location(),
                key: key.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Backend for ArchiveSim {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, opts).await?;
        if opts.class == ObjectClass::Data {
            self.archived
                .lock()
                .unwrap()
                .insert(key.to_string(), Stage::Archived);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.readable(key)?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        self.readable(key)?;
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }

    /// Listings report the class of archived objects, as S3's do: the
    /// class itself, or plain INTELLIGENT_TIERING for its archive tiers
    /// (only a HEAD tells those apart).
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let listed = match self.class.starts_with("INTELLIGENT_TIERING") {
            true => "INTELLIGENT_TIERING",
            false => self.class,
        };
        Box::pin(self.inner.list(prefix).map(move |m| {
            m.map(|mut m| {
                if self.stage(&m.key).is_some() {
                    m.storage_class = Some(listed.to_string());
                }
                m
            })
        }))
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await?;
        let mut a = self.archived.lock().unwrap();
        for k in keys {
            a.remove(k);
        }
        Ok(())
    }

    async fn archive_state(&self, key: &str) -> Result<(ObjectMeta, ArchiveState), BackendError> {
        let meta = self.inner.head(key).await?;
        let class = self.class.to_string();
        let state = match self.stage(key) {
            None => ArchiveState::Hot,
            Some(Stage::Archived) => ArchiveState::Archived { class },
            Some(Stage::Thawing) => ArchiveState::Thawing { class },
            Some(Stage::Thawed) => ArchiveState::Thawed { class, until: None },
        };
        Ok((meta, state))
    }

    async fn thaw(
        &self,
        key: &str,
        days: Option<u32>,
        _tier: ThawTier,
    ) -> Result<ThawAnswer, BackendError> {
        let n = self.thaws.fetch_add(1, Ordering::SeqCst) + 1;
        self.days.lock().unwrap().push(days);
        if self.fail_after.lock().unwrap().is_some_and(|f| n > f) {
            return Err(BackendError::Transient {
                location: self.location(),
                message: format!("injected failure of the thaw of {key}"),
            });
        }
        self.inner.head(key).await?;
        let mut a = self.archived.lock().unwrap();
        Ok(match a.get_mut(key) {
            None => ThawAnswer::NotArchived,
            Some(s @ Stage::Archived) => {
                *s = Stage::Thawing;
                ThawAnswer::Requested
            }
            Some(Stage::Thawing) => ThawAnswer::InProgress,
            Some(Stage::Thawed) => ThawAnswer::Requested,
        })
    }
    async fn lock_enabled(&self) -> Result<bool, BackendError> {
        self.inner.lock_enabled().await
    }

    async fn retention(&self, key: &str) -> Result<Retained, BackendError> {
        self.inner.retention(key).await
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        retention: crate::lock::Retention,
    ) -> Result<(), BackendError> {
        self.inner.extend_retention(key, version, retention).await
    }
}
