//! Turning `--repo` (a location or a `@profile`) into a backend.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::backend::Backend;
use xfull_core::config::StoreSettings;
use xfull_core::crypto::SeenEncrypted;
use xfull_core::lock::seen::SeenLocked;
use xfull_core::repo::{Opening, Repository};
use xfull_local::{CreateError, LocalBackend, parse_location};
use xfull_s3::{OpenError, S3Backend, S3Options};

use crate::cli::{Cli, OtherSecret, S3Args};

/// A repository's store, and what opening reads (its config and key
/// slot listing) when that was read to set the store up (S3: its store
/// settings), so that opening the repository does not read it again.
struct Store {
    backend: Arc<dyn Backend>,
    opening: Option<Opening>,
}

impl From<Arc<dyn Backend>> for Store {
    fn from(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            opening: None,
        }
    }
}

/// The backend for a repository location; `create` makes a local
/// directory. On S3, the repository's store settings (`stored`: those
/// `init` is writing, else the ones in the config) fill in what `s3`
/// leaves unset.
async fn backend(
    repo: &str,
    s3: &S3Args,
    create: bool,
    stored: Option<&StoreSettings>,
) -> Result<Store> {
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
            // Empty means "not set" (`profile::resolve_location` drops it).
            endpoint: s3.s3_endpoint.clone().filter(|e| !e.is_empty()),
            region: s3.s3_region.clone(),
            no_conditional_put: s3.s3_no_conditional_put,
            chunk_storage_class: s3.s3_storage_class_chunks.clone(),
            sse: s3.s3_sse.clone(),
            static_credentials: None,
            limits: s3.limits(),
        };
        let mut b = S3Backend::new(opts).await.map_err(|e| match e {
            OpenError::Invalid(e) => anyhow::Error::new(Error::InvalidArgument(e.to_string())),
            OpenError::NoRegion { .. } => anyhow::anyhow!("{e}, or pass --s3-region"),
            e => e.into(),
        })?;
        if let Some(budget) = b.budget() {
            BUDGETS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((b.location(), budget));
        }
        // Read before the repository is opened, because the backend must
        // know its store settings before its first write (the opening
        // uses the same bytes). A missing config is left for the opening
        // to report (not a repository); a store that cannot be reached
        // fails here, at once: asking again to open would double the time
        // a dead endpoint takes to fail (two minutes for a silent one).
        let opening = match stored {
            Some(_) => None,
            None => Opening::read(&b).await?,
        };
        // An undecodable config is left for the opening to report (damage).
        let peeked = opening
            .as_ref()
            .and_then(|o| xfull_core::config::RepoConfig::decode(o.config()).ok())
            .map(|c| c.store);
        if let Some(settings) = stored.or(peeked.as_ref()) {
            // A value this build does not know, in a plain config anyone
            // with write access could have written: damage naming it.
            b.use_repository_settings(settings)
                .map_err(|e| Error::Corrupt {
                    key: xfull_core::keys::CONFIG.into(),
                    reason: e.to_string(),
                })?;
        }
        if create && !s3.s3_no_conditional_put && !b.probe_conditional_put().await? {
            return Err(Error::InvalidArgument(format!(
                "{} ignores If-None-Match on PUT, so concurrent writers could overwrite each \
                 other's objects; use a server that honours it, or pass \
                 --s3-no-conditional-put (slower HEAD-then-PUT, see the README)",
                b.location()
            ))
            .into());
        }
        return Ok(Store {
            backend: Arc::new(b),
            opening,
        });
    }
    if s3.limits().is_set() {
        return Err(Error::InvalidArgument(format!(
            "--max-requests-per-second and --max-upload-bytes-per-second apply to S3 \
             repositories; {repo:?} is a local directory"
        ))
        .into());
    }
    let Some(dir) = parse_location(repo) else {
        return Err(Error::InvalidArgument(format!(
            "repository {repo:?}: expected a directory, file:///dir or s3://bucket/prefix"
        ))
        .into());
    };
    if create {
        return match LocalBackend::create(&dir) {
            Ok(b) => Ok(Store::from(Arc::new(b) as Arc<dyn Backend>)),
            // A directory with someone's files in it is the wrong argument.
            // Only what `init` itself writes: another init racing this
            // one is making the repository there.
            Err(CreateError::NotEmpty { .. }) if holds_only_init_files(&dir) => {
                Err(Error::RepositoryExists {
                    location: format!("{} (or another init is making it)", dir.display()),
                }
                .into())
            }
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
    Ok(Store::from(
        Arc::new(LocalBackend::open(&dir)?) as Arc<dyn Backend>
    ))
}

/// The request budgets of the S3 repositories this process opened (two
/// for `copy`), where one was asked for: `main` says what they cost.
pub static BUDGETS: std::sync::Mutex<Vec<(String, Arc<xfull_s3::Budget>)>> =
    std::sync::Mutex::new(Vec::new());

/// Whether `dir` holds nothing but what `init` writes (`keys/`, `config`
/// and its staging file): a directory someone else's files are in is a
/// wrong argument, one another init is filling is an existing repository.
fn holds_only_init_files(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut any = false;
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name == "keys" || name == "config" || name.starts_with("config#")) {
            return false;
        }
        any = true;
    }
    any
}

/// Opens the repository; an encrypted one is unlocked with the secret
/// the command was given (asked for only then). An unencrypted one is
/// named as such on a terminal, every time.
pub async fn open(cli: &Cli) -> Result<Repository> {
    let (repo, s3) = crate::profile::resolve(cli)?;
    let backend = backend(&repo, &s3, false, None).await?;
    finish_open(cli, &repo, backend, || crate::secrets::current(cli)).await
}

/// The store of `--repo` alone, without reading its config (`undelete`:
/// the config may be the object hidden or replaced). An S3 bucket only:
/// a local directory keeps no versions.
pub async fn store_only(cli: &Cli) -> Result<Arc<dyn Backend>> {
    let (repo, s3) = crate::profile::resolve(cli)?;
    if !repo.starts_with("s3://") {
        return Err(Error::InvalidArgument(format!(
            "repository {repo}: undelete works on an S3 bucket with versioning (which object \
             lock requires); a local directory keeps no versions of its files"
        ))
        .into());
    }
    Ok(backend(&repo, &s3, false, Some(&StoreSettings::default()))
        .await?
        .backend)
}

/// Opens `--repo` for a command that uses two repositories (`copy`): the
/// request budget applies to whichever of them is on S3, so a local one
/// ignores it rather than refusing it.
pub async fn open_of_two(cli: &Cli) -> Result<Repository> {
    let (repo, s3) = crate::profile::resolve(cli)?;
    let backend = backend(&repo, &limits_for(&repo, s3), false, None).await?;
    finish_open(cli, &repo, backend, || crate::secrets::current(cli)).await
}

/// Opens the second repository a command names (`copy --to`, `init
/// --like`): a location or `@profile`, with the command line's S3 flags
/// (a profile fills in what they leave unset) and its own secret flags
/// (else its profile's).
pub async fn open_other(cli: &Cli, location: &str, secret: &OtherSecret) -> Result<Repository> {
    let (repo, s3, profile) = crate::profile::resolve_location(cli, location)?;
    let backend = backend(&repo, &limits_for(&repo, s3), false, None).await?;
    finish_open(cli, &repo, backend, || {
        crate::secrets::other(secret, profile, location)
    })
    .await
}

/// `s3` without the request budget if `repo` is a local directory.
fn limits_for(repo: &str, s3: S3Args) -> S3Args {
    if repo.starts_with("s3://") {
        return s3;
    }
    S3Args {
        max_requests_per_second: None,
        max_upload_bytes_per_second: None,
        ..s3
    }
}

/// Unlocks (if encrypted) and checks against the records of repositories
/// seen encrypted or locked; names an unencrypted one on a terminal.
async fn finish_open(
    cli: &Cli,
    repo: &str,
    store: Store,
    secret: impl FnOnce() -> xfull_core::Result<xfull_core::crypto::Secret>,
) -> Result<Repository> {
    let place = record_location(repo, store.backend.as_ref());
    let repo = match store.opening {
        Some(opening) => Repository::open_config(store.backend, opening, secret).await?,
        None => Repository::open_with(store.backend, secret).await?,
    };
    let env = |n: &str| std::env::var_os(n);
    let guarded = repo.codec().is_encrypted() || repo.config().object_lock.is_some();
    if guarded && xfull_core::client_record::state_dir(env).is_none() && !cli.quiet {
        say!(
            "xfull: warning: neither XDG_STATE_HOME nor HOME is set, so this client keeps no \
             record of the repositories it has seen encrypted or locked and cannot refuse a \
             config rewritten to turn either off (a systemd service: set StateDirectory= and \
             XDG_STATE_HOME, as the units in contrib/ do)"
        );
    }
    if let Some(seen) = SeenEncrypted::from_env(env) {
        seen.check(&place, repo.config())?;
    }
    if let Some(seen) = SeenLocked::from_env(env) {
        seen.check(&place, repo.config())?;
    }
    remember(&place, &repo);
    if !repo.codec().is_encrypted() && !cli.quiet && std::io::stderr().is_terminal() {
        say!(
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
    init_as(cli, config, encrypted, params, None).await
}

/// Creates a repository like `source` (`init --like`): its constants and,
/// if it is encrypted, its keys in a slot for this command's secret.
pub async fn init_like(
    cli: &Cli,
    config: xfull_core::config::RepoConfig,
    source: &Repository,
    params: xfull_core::crypto::Argon2Params,
) -> Result<Repository> {
    let encrypted = source.codec().is_encrypted();
    init_as(cli, config, encrypted, params, Some(source)).await
}

async fn init_as(
    cli: &Cli,
    config: xfull_core::config::RepoConfig,
    encrypted: bool,
    params: xfull_core::crypto::Argon2Params,
    like: Option<&Repository>,
) -> Result<Repository> {
    let (repo, s3) = crate::profile::resolve(cli)?;
    // With --like, the budget may be meant for the source on S3.
    let s3 = match like {
        Some(_) => limits_for(&repo, s3),
        None => s3,
    };
    if !config.store.is_empty() && parse_location(&repo).is_some() {
        return Err(Error::InvalidArgument(format!(
            "repository {repo}: --data-storage-class, --sse and --min-storage-days are \
             settings of an S3 repository; a local directory has no storage classes or \
             server-side encryption"
        ))
        .into());
    }
    if config.object_lock.is_some() && parse_location(&repo).is_some() {
        return Err(Error::InvalidArgument(format!(
            "repository {repo}: --object-lock needs an S3 bucket made with object lock; \
             a local directory cannot lock files against their owner"
        ))
        .into());
    }
    let stored = config.store.clone();
    if !encrypted {
        let backend = backend(&repo, &s3, true, Some(&stored)).await?.backend;
        check_lock(&repo, &config, backend.as_ref()).await?;
        let place = record_location(&repo, backend.as_ref());
        let made = match like {
            Some(source) => Repository::init_like(backend, config, source, None, params).await?,
            None => Repository::init(backend, config).await?,
        };
        forget_earlier(&place, &made);
        remember(&place, &made);
        return Ok(made);
    }
    // The secret first: a bad source leaves no directory behind.
    let (secret, made_key_file) = crate::secrets::for_init(cli)?;
    let result = async {
        let backend = backend(&repo, &s3, true, Some(&stored)).await?.backend;
        check_lock(&repo, &config, backend.as_ref()).await?;
        let place = record_location(&repo, backend.as_ref());
        let made = match like {
            Some(source) => {
                Repository::init_like(backend, config, source, Some(&secret), params).await?
            }
            None => Repository::init_encrypted(backend, config, &secret, params).await?,
        };
        anyhow::Ok((made, place))
    }
    .await;
    let (made, place) = match result {
        Ok(r) => r,
        Err(e) => return Err(crate::secrets::after_failed_init(e, made_key_file, &secret)),
    };
    forget_earlier(&place, &made);
    remember(&place, &made);
    Ok(made)
}

/// `init --object-lock` on a bucket without object lock would write
/// every object unlocked (or fail at the first put): refused up front.
async fn check_lock(
    repo: &str,
    config: &xfull_core::config::RepoConfig,
    backend: &dyn Backend,
) -> Result<()> {
    if config.object_lock.is_some() && !backend.lock_enabled().await.map_err(Error::Backend)? {
        return Err(Error::InvalidArgument(format!(
            "repository {repo}: the bucket does not have object lock enabled, so \
             --object-lock cannot lock anything; create the bucket with object lock \
             (e.g. `aws s3api create-bucket --object-lock-enabled-for-bucket`) or enable \
             it on a versioned bucket (`aws s3api put-object-lock-configuration`)"
        ))
        .into());
    }
    Ok(())
}

/// The repository's place, as the record of repositories seen encrypted
/// keys it: a local directory by its canonical path (so `./repo` and
/// `/srv/repo` are one place), else the backend's location.
fn record_location(repo: &str, backend: &dyn Backend) -> String {
    match parse_location(repo) {
        Some(dir) => std::fs::canonicalize(&dir)
            .unwrap_or(dir)
            .display()
            .to_string(),
        None => backend.location(),
    }
}

/// Records an encrypted or locked repository as such. A record that cannot
/// be written does not stop the command (the repository is fine), but the
/// user is told that the downgrade check will not know it.
fn remember(place: &str, repo: &Repository) {
    let env = |n: &str| std::env::var_os(n);
    let recorded = [
        SeenEncrypted::from_env(env).map(|s| (s.record(place, repo.config()), "unencrypted")),
        SeenLocked::from_env(env).map(|s| (s.record(place, repo.config()), "without object lock")),
    ];
    for (result, what) in recorded.into_iter().flatten() {
        if let Err(e) = result {
            say!(
                "xfull: warning: {}; a later rewrite of this repository's config to \
                 \"{what}\" would not be noticed from this record",
                crate::output::printable(&e.to_string())
            );
        }
    }
}

/// `init` made a repository at `place` on purpose: the records of an
/// earlier one there (encrypted, or locked) must not refuse it. The
/// repository is made by now, so a record that cannot be removed is a
/// warning, not a failed `init` (a retry would find the repository).
fn forget_earlier(place: &str, made: &Repository) {
    let env = |n: &str| std::env::var_os(n);
    let forgot = [
        SeenEncrypted::from_env(env)
            .filter(|_| !made.codec().is_encrypted())
            .map(|s| s.forget_location(place)),
        SeenLocked::from_env(env).map(|s| s.forget_location(place)),
    ];
    for e in forgot.into_iter().flatten().filter_map(|r| r.err()) {
        say!(
            "xfull: warning: {}; commands may refuse the new repository at {} until that \
             record is removed",
            crate::output::printable(&e.to_string()),
            crate::output::printable(place)
        );
    }
}
