//! Turning `--repo` into a backend.

use std::sync::Arc;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::backend::Backend;
use xfull_core::repo::Repository;
use xfull_local::{LocalBackend, parse_location};

/// The backend for an existing repository location.
fn backend(repo: &str, create: bool) -> Result<Arc<dyn Backend>> {
    let Some(dir) = parse_location(repo) else {
        return Err(Error::InvalidArgument(format!(
            "repository {repo:?}: this build reads local directories and file:// only \
             (the S3 backend is not part of it yet)"
        ))
        .into());
    };
    if create {
        return Ok(Arc::new(LocalBackend::create(&dir)?));
    }
    if !dir.is_dir() {
        return Err(Error::NotARepository {
            location: dir.display().to_string(),
        }
        .into());
    }
    Ok(Arc::new(LocalBackend::open(&dir)?))
}

pub async fn open(repo: &str) -> Result<Repository> {
    Ok(Repository::open(backend(repo, false)?).await?)
}

pub async fn init(repo: &str, config: xfull_core::config::RepoConfig) -> Result<Repository> {
    Ok(Repository::init(backend(repo, true)?, config).await?)
}
