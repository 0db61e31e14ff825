//! xfull's backend for a local directory, on `object_store`'s
//! `LocalFileSystem` with fsync on: every create-only put is written to a
//! staging file, synced, and published with a hard link (which fails if the
//! key exists), and the directory is synced, so no reader ever sees a
//! partially written object under its final key and a returned put
//! survives a crash. `in_memory()` gives the same contract without a disk,
//! for tests.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use xfull_core::backend::{Backend, BackendError, ObjectMeta, PutMode};

#[derive(Debug)]
pub struct LocalBackend {
    store: Arc<dyn ObjectStore>,
    location: String,
    /// The directory, for cleaning staging files (none in memory).
    root: Option<PathBuf>,
}

impl LocalBackend {
    /// A backend on the directory `root`, which must exist.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        let location = root.display().to_string();
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| BackendError::Other {
                location: location.clone(),
                message: e.to_string(),
            })?
            .with_fsync(true);
        Ok(LocalBackend {
            store: Arc::new(store),
            location,
            root: Some(root.to_path_buf()),
        })
    }

    /// Creates `root` (and its parents) if needed, then opens it.
    pub fn create(root: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(root).map_err(|e| BackendError::Other {
            location: root.display().to_string(),
            message: format!("cannot create the directory: {e}"),
        })?;
        Self::open(root)
    }

    /// A store that lives in memory, for tests.
    pub fn in_memory() -> Self {
        LocalBackend {
            store: Arc::new(InMemory::new()),
            location: "memory://".into(),
            root: None,
        }
    }

    fn map(&self, e: object_store::Error) -> BackendError {
        let location = self.location.clone();
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
            object_store::Error::PermissionDenied { path, source }
            | object_store::Error::Unauthenticated { path, source } => {
                BackendError::Unauthenticated {
                    location,
                    message: format!("{path}: {source}"),
                }
            }
            other => BackendError::Other {
                location,
                message: other.to_string(),
            },
        }
    }

    fn path(&self, key: &str) -> Result<StorePath, BackendError> {
        StorePath::parse(key).map_err(|e| BackendError::Other {
            location: self.location.clone(),
            message: format!("invalid key {key:?}: {e}"),
        })
    }
}

/// Resolves a repository argument (`/path` or `file:///path`) to a directory.
pub fn parse_location(repo: &str) -> Option<PathBuf> {
    if let Some(rest) = repo.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if repo.contains("://") {
        return None;
    }
    Some(PathBuf::from(repo))
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<(), BackendError> {
        let path = self.path(key)?;
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
            .map_err(|e| self.map(e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        let path = self.path(key)?;
        let r = self.store.get(&path).await.map_err(|e| self.map(e))?;
        r.bytes().await.map_err(|e| self.map(e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let path = self.path(key)?;
        self.store
            .get_range(&path, range)
            .await
            .map_err(|e| self.map(e))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        let path = self.path(key)?;
        let m = self.store.head(&path).await.map_err(|e| self.map(e))?;
        Ok(ObjectMeta {
            key: m.location.to_string(),
            size: m.size,
            last_modified: m.last_modified,
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        // object_store lists by path segments; list the parent directory
        // and keep the keys that start with the prefix, so that "ls/" and
        // "points/vm1/" both work.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let dir = match self.path(dir) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let prefix = prefix.to_string();
        self.store
            .list(Some(&dir))
            .map_err(|e| self.map(e))
            .try_filter_map(move |m| {
                let key = m.location.to_string();
                let keep = key.starts_with(&prefix);
                async move {
                    Ok(keep.then_some(ObjectMeta {
                        key,
                        size: m.size,
                        last_modified: m.last_modified,
                    }))
                }
            })
            .boxed()
    }

    /// object_store stages a put in `KEY#N` next to the key; a killed
    /// writer leaves it there (never under the key itself).
    async fn remove_incomplete(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let Some(root) = self.root.clone() else {
            return Ok(0);
        };
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || remove_staging(&root, before.into()))
            .await
            .map_err(|e| BackendError::Other {
                location: location.clone(),
                message: format!("cleanup task failed: {e}"),
            })?
            .map_err(|e| BackendError::Other {
                location,
                message: format!("removing staging files: {e}"),
            })
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        for key in keys {
            let path = self.path(key)?;
            match self.store.delete(&path).await {
                Ok(()) => {}
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.map(e)),
            }
        }
        Ok(())
    }
}

/// Removes `*#N` staging files modified before `before`, under `dir`.
/// Writers run meanwhile: a file or directory that vanished between the
/// listing and the look at it is skipped.
fn remove_staging(dir: &Path, before: std::time::SystemTime) -> std::io::Result<u64> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut n = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if gone(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            n += remove_staging(&path, before)?;
        } else if is_staging(&path) && meta.modified()? < before {
            match std::fs::remove_file(&path) {
                Ok(()) => n += 1,
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

fn is_staging(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_local_fs() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(dir.path()).unwrap();
        xfull_core::conformance::run_all(&b).await;
        // No staging file is left behind under a final key's directory.
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains('#'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_in_memory() {
        xfull_core::conformance::run_all(&LocalBackend::in_memory()).await;
    }

    #[test]
    fn locations() {
        assert_eq!(parse_location("/srv/b"), Some(PathBuf::from("/srv/b")));
        assert_eq!(
            parse_location("file:///srv/b"),
            Some(PathBuf::from("/srv/b"))
        );
        assert_eq!(parse_location("s3://bucket/x"), None);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
