//! Turning `--repo` (a location or a `@profile`) into a backend.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::backend::Backend;
use xfull_core::repo::Repository;
use xfull_local::{CreateError, LocalBackend, parse_location};
use xfull_s3::{OpenError, S3Backend, S3Options};

use crate::cli::{Cli, S3Args};

/// The backend for a repository location; `create` makes a local directory.
async fn backend(repo: &str, s3: &S3Args, create: bool) -> Result<Arc<dyn Backend>> {
    if repo.starts_with("s3://") {
        let Some((bucket, prefix)) = S3Options::parse_url(repo) else {
            return Err(Error::InvalidArgument(format!(
                "repository {repo:?}: expected s3://bucket/prefix"
            ))
            .into());
        };
        let opts = S3Options {
            bucket,
            prefix,
            // An exported but empty AWS_ENDPOINT_URL means "not set".
            endpoint: s3.s3_endpoint.clone().filter(|e| !e.is_empty()),
            region: s3.s3_region.clone(),
            no_conditional_put: s3.s3_no_conditional_put,
            chunk_storage_class: s3.s3_storage_class_chunks.clone(),
            sse: s3.s3_sse.clone(),
            static_credentials: None,
        };
        let b = S3Backend::new(opts).await.map_err(|e| match e {
            OpenError::Invalid(e) => anyhow::Error::new(Error::InvalidArgument(e.to_string())),
            OpenError::NoRegion { .. } => anyhow::anyhow!("{e}, or pass --s3-region"),
            e => e.into(),
        })?;
        if create && !s3.s3_no_conditional_put && !b.probe_conditional_put().await? {
            return Err(Error::InvalidArgument(format!(
                "{} ignores If-None-Match on PUT, so concurrent writers could overwrite each \
                 other's objects; use a server that honours it, or pass \
                 --s3-no-conditional-put (slower HEAD-then-PUT, see the README)",
                b.location()
            ))
            .into());
        }
        return Ok(Arc::new(b));
    }
    let Some(dir) = parse_location(repo) else {
        return Err(Error::InvalidArgument(format!(
            "repository {repo:?}: expected a directory, file:///dir or s3://bucket/prefix"
        ))
        .into());
    };
    if create {
        return match LocalBackend::create(&dir) {
            Ok(b) => Ok(Arc::new(b)),
            // A directory with someone's files in it is the wrong argument.
            Err(e @ CreateError::NotEmpty { .. }) => {
                Err(Error::InvalidArgument(e.to_string()).into())
            }
            Err(CreateError::RepositoryExists { dir }) => Err(Error::RepositoryExists {
                location: dir.display().to_string(),
            }
            .into()),
            // Through the engine's error, so that damage (a FIFO as
            // `config`) exits 3.
            Err(CreateError::Backend(e)) => Err(Error::Backend(e).into()),
            Err(e) => Err(e.into()),
        };
    }
    if !dir.is_dir() {
        return Err(Error::NotARepository {
            location: dir.display().to_string(),
        }
        .into());
    }
    Ok(Arc::new(LocalBackend::open(&dir)?))
}

/// Opens the repository; an encrypted one is unlocked with the secret
/// the command was given (asked for only then). An unencrypted one is
/// named as such on a terminal, every time.
pub async fn open(cli: &Cli) -> Result<Repository> {
    let (repo, s3) = crate::profile::resolve(cli)?;
    let backend = backend(&repo, &s3, false).await?;
    let repo = Repository::open_with(backend, || crate::secrets::current(cli)).await?;
    if !repo.codec().is_encrypted() && !cli.quiet && std::io::stderr().is_terminal() {
        eprintln!(
            "xfull: note: the repository at {} is not encrypted (made with --encryption none)",
            repo.location()
        );
    }
    Ok(repo)
}

/// Creates a repository: encrypted (with the command's secret, a new
/// key file if `--key-file` names none yet) unless `encrypted` is false.
pub async fn init(
    cli: &Cli,
    config: xfull_core::config::RepoConfig,
    encrypted: bool,
    params: xfull_core::crypto::Argon2Params,
) -> Result<Repository> {
    let (repo, s3) = crate::profile::resolve(cli)?;
    if !encrypted {
        return Ok(Repository::init(backend(&repo, &s3, true).await?, config).await?);
    }
    // The secret first: a bad source leaves no directory behind.
    let secret = crate::secrets::for_init(cli)?;
    let backend = backend(&repo, &s3, true).await?;
    Ok(Repository::init_encrypted(backend, config, &secret, params).await?)
}
