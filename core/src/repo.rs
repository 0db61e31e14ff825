//! An opened repository: the backend plus its constants, and typed access
//! to config, nodes (in `nodes`) and manifests (in `points`). Nothing is
//! trusted unverified: every object read here is checked against its id
//! or checksum.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, BackendError, ObjectClass, ObjectMeta, PutMode, PutOptions};
use crate::codec::Codec;
use crate::config::{Encryption, OLD_FORMAT_VERSION, RepoConfig};
use crate::crypto::{self, Argon2Params, Secret};
use crate::error::{Error, Result};
use crate::keys;
use crate::placement::Placement;

#[cfg(test)]
mod init_tests;
mod nodes;
mod points;
pub use points::{Summaries, Unreadable};

/// What opening a repository reads before it can decide anything: the
/// config, and the listing of `keys/` (needed either way: to unlock an
/// encrypted repository, or to refuse an unencrypted config beside key
/// slots). Read at once, one round trip for both.
#[derive(Debug, Clone)]
pub struct Opening {
    config: Bytes,
    /// Only from [`Opening::read`]: the downgrade check trusts it.
    slots: Vec<ObjectMeta>,
}

impl Opening {
    /// Both reads; `None` if there is no config (no repository). The
    /// config's answer comes first: its absence or failure is what the
    /// caller hears (not the listing's), as soon as it is known, and the
    /// listing is then dropped.
    pub async fn read(backend: &dyn Backend) -> Result<Option<Opening>> {
        let config = backend.get_at_most(keys::CONFIG, crate::config::max_stored());
        let listing = crypto::manage::list_slots_stored(backend);
        tokio::pin!(config, listing);
        let mut listed = None;
        let config = loop {
            tokio::select! {
                c = &mut config => break c,
                l = &mut listing, if listed.is_none() => listed = Some(l),
            }
        };
        let config = match config {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let slots = match listed {
            Some(l) => l?,
            None => listing.await?,
        };
        Ok(Some(Opening { config, slots }))
    }

    /// The config's stored bytes.
    pub fn config(&self) -> &[u8] {
        &self.config
    }
}

#[derive(Debug, Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    codec: Arc<Codec>,
}

/// How a create-only upload went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// This call wrote the object.
    New,
    /// It was already there (same key, so the same content).
    Existed,
}

impl Repository {
    /// Creates an unencrypted repository (`--encryption none`): writes
    /// `config` create-only, so two racing `init`s cannot both succeed and
    /// an existing repository is untouched.
    pub async fn init(backend: Arc<dyn Backend>, config: RepoConfig) -> Result<Self> {
        let config = RepoConfig {
            encryption: None,
            // Nothing in an unencrypted repository differs between formats
            // 2 and 4 (chunk data is not sealed): format 2, which builds of
            // formats 2 and 3 read too.
            format: config.format.min(OLD_FORMAT_VERSION),
            ..config
        };
        // Slots without a config are an encrypted init that failed or is
        // running: a plain config beside them made every later command
        // report tampering (an unencrypted config beside key slots;
        // review, 2026-12-07).
        if backend.exists(keys::CONFIG).await? {
            return Err(Error::RepositoryExists {
                location: backend.location(),
            });
        }
        if crypto::manage::has_slots(backend.as_ref()).await? {
            return Err(Error::KeysExist {
                location: backend.location(),
            });
        }
        let backend = locking(backend, &config);
        write_config(backend.as_ref(), &config).await?;
        Ok(Repository {
            backend,
            config,
            codec: Arc::new(Codec::plain()),
        })
    }

    /// Creates an encrypted repository: new master keys and their first
    /// (full-access) slot for `secret`, then the config, create-only,
    /// recording the keys' check value. The loser of two racing `init`s
    /// removes the slot it wrote.
    pub async fn init_encrypted(
        backend: Arc<dyn Backend>,
        config: RepoConfig,
        secret: &Secret,
        params: Argon2Params,
    ) -> Result<Self> {
        Self::init_encrypted_with(backend, config, secret, params, None).await
    }

    /// Creates a repository that names and seals content as `source`
    /// does (`init --like`, see docs/design.md, "Copying a repository"):
    /// `source`'s segment size, chunking and zstd level, and, if it is
    /// encrypted, its master keys in a first slot for `secret` (needed
    /// then). Everything else in `config` (the protocol's times, the store
    /// settings) is the new repository's own, and so is its repo id.
    pub async fn init_like(
        backend: Arc<dyn Backend>,
        config: RepoConfig,
        source: &Repository,
        secret: Option<&Secret>,
        params: Argon2Params,
    ) -> Result<Self> {
        let s = source.config();
        let config = RepoConfig {
            segment_size: s.segment_size,
            chunking: s.chunking,
            zstd_level: s.zstd_level,
            // Its format too: a copy of a format 2 repository stays
            // readable by the builds that read the source.
            format: s.format,
            ..config
        };
        config.validate().map_err(Error::InvalidArgument)?;
        match (source.codec().master_keys(), secret) {
            (None, _) => Self::init(backend, config).await,
            (Some(keys), Some(secret)) => {
                Self::init_encrypted_with(backend, config, secret, params, Some(keys)).await
            }
            (Some(_), None) => Err(Error::InvalidArgument(format!(
                "{} is encrypted: a repository made like it is encrypted too, and needs a \
                 password or key file of its own",
                source.location()
            ))),
        }
    }

    /// [`Repository::init_encrypted`] with new master keys, or with
    /// `like`'s (a copy target's).
    pub(crate) async fn init_encrypted_with(
        backend: Arc<dyn Backend>,
        config: RepoConfig,
        secret: &Secret,
        params: Argon2Params,
        like: Option<&crypto::MasterKeys>,
    ) -> Result<Self> {
        // Only "not found" says there is none: any failure (a timeout, a
        // denied HEAD) was taken for it, and a slot written into what may
        // be a repository (review, 2026-12-07).
        if backend.exists(keys::CONFIG).await? {
            return Err(Error::RepositoryExists {
                location: backend.location(),
            });
        }
        let backend = locking(backend, &config);
        let created = match like {
            None => crypto::create_keys(backend.as_ref(), secret, params).await,
            Some(keys) => crypto::create_keys_like(backend.as_ref(), keys, secret, params).await,
        };
        let master = match created {
            Ok(m) => m,
            // Another `init` wrote its slot first: it made the repository
            // (its config is there now), or is making it, or failed
            // before its config; the message says which it can tell.
            Err(Error::KeysExist { location }) => {
                if backend.exists(keys::CONFIG).await? {
                    return Err(Error::RepositoryExists { location });
                }
                return Err(Error::KeysExist { location });
            }
            Err(e) => return Err(e),
        };
        let config = RepoConfig {
            encryption: Some(Encryption {
                check: master.check_value(),
            }),
            ..config
        };
        if let Err(e) = write_config(backend.as_ref(), &config).await {
            // A put whose reply was lost may have stored it: then this
            // init succeeded, and deleting the slot left a config nobody
            // could open or init over (review, stop 50). A config known
            // absent, or another init's (a race this one lost), frees the
            // slot (best effort); not knowing, the slot stays (a retry
            // then says the repository exists), and so must the secret
            // that opens it: a plain failure made the CLI delete the key
            // file it had made for this init (review, 2026-12-07).
            let ours = match backend
                .get_at_most(keys::CONFIG, crate::config::max_stored())
                .await
            {
                Ok(stored) => Some(RepoConfig::decode(&stored).is_ok_and(|c| c == config)),
                Err(g) if g.is_not_found() => Some(false),
                Err(_) => None,
            };
            match ours {
                Some(true) => {}
                Some(false) => {
                    let _ = backend
                        .delete_many(&[crypto::slot::slot_key(master.slot())])
                        .await;
                    return Err(e);
                }
                None => {
                    return Err(Error::InitOutcomeUnknown {
                        location: backend.location(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        let codec = Arc::new(Codec::encrypted(master, config.data_cipher()));
        Ok(Repository {
            backend,
            config,
            codec,
        })
    }

    /// Opens an unencrypted repository; an encrypted one needs
    /// [`Repository::open_with`].
    pub async fn open(backend: Arc<dyn Backend>) -> Result<Self> {
        Self::open_with(backend, || {
            Err(Error::SecretSource {
                secret: "password".into(),
                reason: "the repository is encrypted and no password or key file was given".into(),
            })
        })
        .await
    }

    /// Opens an existing repository, refusing unknown format versions. If
    /// it is encrypted, `secret` is asked for (only then: an unencrypted
    /// repository never prompts) and must unlock a slot whose keys match
    /// the config's check value. A wrong secret writes nothing.
    pub async fn open_with(
        backend: Arc<dyn Backend>,
        secret: impl FnOnce() -> Result<Secret>,
    ) -> Result<Self> {
        let Some(opening) = Opening::read(backend.as_ref()).await? else {
            return Err(Error::NotARepository {
                location: backend.location(),
            });
        };
        Self::open_config(backend, opening, secret).await
    }

    /// [`Repository::open_with`] from what [`Opening::read`] read of
    /// `backend` (the CLI reads it before opening an S3 repository, for
    /// the store settings its backend needs): no second read, and both
    /// uses see the same config.
    pub async fn open_config(
        backend: Arc<dyn Backend>,
        opening: Opening,
        secret: impl FnOnce() -> Result<Secret>,
    ) -> Result<Self> {
        let config = RepoConfig::decode(&opening.config)?;
        let backend = locking(backend, &config);
        let codec = match &config.encryption {
            None => {
                // A config rewritten to say "unencrypted" must not make
                // this client write in the clear (crypto/downgrade.rs).
                crypto::downgrade::check_listed(&opening.slots, &config)?;
                Codec::plain()
            }
            Some(enc) => {
                let secret = secret()?;
                let b = backend.as_ref();
                let ours = |m: &crypto::MasterKeys| m.check_value() == enc.check;
                let listed = opening.slots.clone();
                let master = match crypto::unlock_listed(b, listed, &secret, ours).await {
                    Ok(m) => m,
                    // The listing was taken with the config, before the
                    // secret was asked for (a prompt can wait minutes): if
                    // the slots changed meanwhile (`key passwd`), look
                    // again, once. A wrong secret costs one LIST more.
                    Err(e) => {
                        let fresh = crypto::manage::list_slots_stored(b).await?;
                        let names =
                            |l: &[ObjectMeta]| l.iter().map(|m| m.key.clone()).collect::<Vec<_>>();
                        if names(&fresh) == names(&opening.slots) {
                            return Err(e);
                        }
                        crypto::unlock_listed(b, fresh, &secret, ours).await?
                    }
                };
                Codec::encrypted(master, config.data_cipher())
            }
        };
        Ok(Repository {
            backend,
            config,
            codec: Arc::new(codec),
        })
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// How this repository names content and seals objects: the only
    /// thing that knows whether it is encrypted.
    pub fn codec(&self) -> &Arc<Codec> {
        &self.codec
    }

    /// Where chunk bytes live: the only way to them.
    pub fn chunks(&self) -> Placement {
        let cache = crate::placement::lookup::default_cache_dir(&self.config.repo_id);
        let max_chunk = self.config.chunking.max;
        Placement::new(self.backend.clone(), self.codec.clone(), cache, max_chunk)
    }

    /// Create-only put of a metadata object; "already exists" is success
    /// (same key, same bytes).
    pub async fn put_once(&self, key: &str, data: Bytes) -> Result<Stored> {
        put_once(self.backend.as_ref(), key, data).await
    }
}

/// Writes the config create-only: "already exists" is
/// [`Error::RepositoryExists`].
async fn write_config(backend: &dyn Backend, config: &RepoConfig) -> Result<()> {
    let bytes = config.encode()?;
    match backend
        .put(keys::CONFIG, Bytes::from(bytes), PutMode::Create)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_already_exists() => Err(Error::RepositoryExists {
            location: backend.location(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Create-only put; "already exists" is success: keys of content-addressed
/// objects fix their bytes, and other keys are never rewritten.
pub(crate) async fn put_once(backend: &dyn Backend, key: &str, data: Bytes) -> Result<Stored> {
    put_once_as(backend, key, data, ObjectClass::Metadata).await
}

/// [`put_once`] of an object of the given class.
pub(crate) async fn put_once_as(
    backend: &dyn Backend,
    key: &str,
    data: Bytes,
    class: ObjectClass,
) -> Result<Stored> {
    let opts = PutOptions {
        class,
        ..PutOptions::new(PutMode::Create)
    };
    match backend.put_opts(key, data, opts).await {
        Ok(()) => Ok(Stored::New),
        Err(e) if e.is_already_exists() => Ok(Stored::Existed),
        Err(e) => Err(e.into()),
    }
}

/// A referenced object that is gone is damage, not a plain "not found".
pub(crate) fn missing(e: BackendError, key: &str) -> Error {
    if e.is_not_found() {
        Error::corrupt(key, "missing from the repository")
    } else {
        e.into()
    }
}

/// The backend as a repository with this config writes to it: with
/// object lock, through the decorator that locks what points rely on.
fn locking(backend: Arc<dyn Backend>, config: &RepoConfig) -> Arc<dyn Backend> {
    match config.object_lock {
        Some(lock) => Arc::new(crate::lock::store::Locking::new(
            backend,
            lock,
            config.protocol.margin(),
        )),
        None => backend,
    }
}
