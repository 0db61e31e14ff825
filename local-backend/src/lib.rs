//! xfull's backend for a local directory (and an in-memory store for
//! tests).
//!
//! The directory is opened once; every key is resolved beneath it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (`fs.rs`), so nothing a
//! user or an attacker plants in it (a symbolic link out of the
//! repository, a FIFO under a key, files named like staging files) makes
//! xfull read, write or delete outside it, or block:
//!
//! - reads open objects non-blocking and `fstat` them: anything but a
//!   regular file is damage naming the key (`read.rs`);
//! - puts write a staging file, sync it and publish it atomically, a
//!   create with `linkat` (never overwriting), an overwrite with
//!   `renameat`, then sync the directory (`staging.rs`);
//! - deletes unlink files only, never a directory or a link (`delete.rs`);
//! - listings walk directory fds and skip links (`list.rs`);
//! - gc's cleanup removes only stale staging files of the key space
//!   (`cleanup.rs`);
//! - `init` takes only a new or empty directory (`create.rs`).
//!
//! object_store's `LocalFileSystem`, used before, follows symbolic links
//! everywhere and blocks on a FIFO; see docs/design.md, "Storage backends".

mod cleanup;
mod create;
mod delete;
mod fs;
mod list;
mod memory;
mod read;
mod space;
mod staging;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use xfull_core::backend::{Backend, BackendError, ObjectClass, ObjectMeta, PutOptions};

pub use create::CreateError;

use crate::fs::Root;
use crate::memory::Memory;

#[derive(Debug)]
pub struct LocalBackend {
    store: Store,
}

#[derive(Debug)]
enum Store {
    Dir(Arc<Root>),
    Memory(Memory),
}

impl LocalBackend {
    /// A backend on the directory `root`, which must exist. A symbolic
    /// link named as `root` is followed (the operator chose it); none
    /// inside it ever is.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        Ok(LocalBackend {
            store: Store::Dir(Arc::new(Root::open(root)?)),
        })
    }

    /// For `xfull init`: creates `root` (and its parents) if needed and
    /// opens it, refusing a directory that is not empty. A `root` made
    /// here is the owner's only (0700), as everything in it is (see
    /// `staging.rs`); one that exists keeps the mode it was given.
    pub fn create(root: &Path) -> Result<Self, CreateError> {
        let made = match root.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent),
            _ => Ok(()),
        }
        .and_then(|()| {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(root) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                r => r,
            }
        });
        made.map_err(|e| BackendError::Other {
            location: root.display().to_string(),
            message: format!("cannot create the directory: {e}"),
        })?;
        let dir = Root::open(root)?;
        dir.check_empty(root)?;
        Ok(LocalBackend {
            store: Store::Dir(Arc::new(dir)),
        })
    }

    /// A store that lives in memory, for tests.
    pub fn in_memory() -> Self {
        LocalBackend {
            store: Store::Memory(Memory::default()),
        }
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

/// Runs a file-system call on a blocking thread (file I/O blocks).
async fn blocking<T: Send + 'static>(
    root: &Arc<Root>,
    f: impl FnOnce(&Root) -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    let r = root.clone();
    tokio::task::spawn_blocking(move || f(&r))
        .await
        .map_err(|e| BackendError::Other {
            location: root.location.clone(),
            message: format!("file-system task failed: {e}"),
        })?
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        match &self.store {
            Store::Dir(root) => root.location.clone(),
            Store::Memory(m) => m.location(),
        }
    }

    /// A directory has one storage class: the class is ignored.
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        if opts.retention.is_some() {
            // A directory cannot lock a file against its owner: refuse
            // rather than store an object unlocked that should be locked.
            return Err(BackendError::Other {
                location: self.location(),
                message: format!("cannot lock {key}: a local directory has no object lock"),
            });
        }
        let (mode, data_class) = (opts.mode, opts.class == ObjectClass::Data);
        match &self.store {
            Store::Dir(root) => {
                let key = key.to_string();
                blocking(root, move |r| {
                    if data_class {
                        r.check_data_room(&key, data.len() as u64)?;
                    }
                    r.put(&key, &data, mode)
                })
                .await
            }
            Store::Memory(m) => m.put(key, data, mode).await,
        }
    }

    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        match &self.store {
            Store::Dir(root) => blocking(root, |r| Ok(Some(r.room()?.for_data()))).await,
            Store::Memory(_) => Ok(None),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        match &self.store {
            Store::Dir(root) => {
                let key = key.to_string();
                blocking(root, move |r| r.get(&key)).await
            }
            Store::Memory(m) => m.get(key).await,
        }
    }

    async fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        match &self.store {
            Store::Dir(root) => {
                let key = key.to_string();
                blocking(root, move |r| r.get_at_most(&key, max)).await
            }
            Store::Memory(m) => m.get_at_most(key, max).await,
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        match &self.store {
            Store::Dir(root) => {
                let key = key.to_string();
                blocking(root, move |r| r.get_range(&key, range)).await
            }
            Store::Memory(m) => m.get_range(key, range).await,
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        match &self.store {
            Store::Dir(root) => {
                let key = key.to_string();
                blocking(root, move |r| r.head(&key)).await
            }
            Store::Memory(m) => m.head(key).await,
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        match &self.store {
            Store::Dir(root) => list::list(root.clone(), prefix),
            Store::Memory(m) => m.list(prefix),
        }
    }

    /// Removes the staging files killed writers left (see `cleanup.rs`).
    async fn remove_incomplete(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        match &self.store {
            Store::Dir(root) => blocking(root, move |r| r.remove_incomplete(before)).await,
            Store::Memory(_) => Ok(0),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        match &self.store {
            Store::Dir(root) => {
                let keys = keys.to_vec();
                blocking(root, move |r| r.delete_many(&keys)).await
            }
            Store::Memory(m) => m.delete_many(keys).await,
        }
    }
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
