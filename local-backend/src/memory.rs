//! The in-memory store for tests: object_store's `InMemory`, with its
//! errors mapped to the backend's.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use xfull_core::backend::{BackendError, ObjectMeta, PutMode, check_size};

const LOCATION: &str = "memory://";

#[derive(Debug, Default)]
pub(crate) struct Memory {
    store: InMemory,
}

impl Memory {
    pub(crate) fn location(&self) -> String {
        LOCATION.into()
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        data: Bytes,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        let path = path(key)?;
        let mode = match mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Overwrite => object_store::PutMode::Overwrite,
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path, PutPayload::from(data), opts)
            .await
            .map(|_| ())
            .map_err(map)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        let r = self.store.get(&path(key)?).await.map_err(map)?;
        r.bytes().await.map_err(map)
    }

    pub(crate) async fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        let r = self.store.get(&path(key)?).await.map_err(map)?;
        check_size(&self.location(), key, r.meta.size, max)?;
        r.bytes().await.map_err(map)
    }

    pub(crate) async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, BackendError> {
        self.store.get_range(&path(key)?, range).await.map_err(map)
    }

    pub(crate) async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        let m = self.store.head(&path(key)?).await.map_err(map)?;
        Ok(ObjectMeta {
            key: m.location.to_string(),
            size: m.size,
            last_modified: m.last_modified,
            storage_class: None,
        })
    }

    pub(crate) fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        // object_store lists by path segments; list the parent directory
        // and keep the keys that start with the prefix, so that "ls/" and
        // "points/vm1/" both work.
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let dir = match path(dir) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let prefix = prefix.to_string();
        self.store
            .list(Some(&dir))
            .map_err(map)
            .try_filter_map(move |m| {
                let key = m.location.to_string();
                let keep = key.starts_with(&prefix);
                async move {
                    Ok(keep.then_some(ObjectMeta {
                        key,
                        size: m.size,
                        last_modified: m.last_modified,
                        storage_class: None,
                    }))
                }
            })
            .boxed()
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        for key in keys {
            match self.store.delete(&path(key)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map(e)),
            }
        }
        Ok(())
    }
}

fn path(key: &str) -> Result<StorePath, BackendError> {
    StorePath::parse(key).map_err(|e| BackendError::Other {
        location: LOCATION.into(),
        message: format!("invalid key {key:?}: {e}"),
    })
}

fn map(e: object_store::Error) -> BackendError {
    let location = LOCATION.to_string();
    match e {
        object_store::Error::NotFound { path, .. } => BackendError::NotFound {
            location,
            key: path,
        },
        object_store::Error::AlreadyExists { path, .. } => BackendError::AlreadyExists {
            location,
            key: path,
        },
        object_store::Error::Precondition { path, source } => BackendError::Precondition {
            location,
            key: path,
            message: source.to_string(),
        },
        other => BackendError::Other {
            location,
            message: other.to_string(),
        },
    }
}
