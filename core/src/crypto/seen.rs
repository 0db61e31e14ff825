//! The client's record of repositories it has seen encrypted, so that one
//! whose config later says "unencrypted" is refused instead of receiving
//! backups in the clear (crypto/downgrade.rs has the other checks; the
//! records themselves are `client_record`'s).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::client_record::{Records, state_dir};
use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::keys;

const HEADER: &str = "xfull: a repository seen encrypted (record v1)\n";

/// The records of one user (one state directory).
#[derive(Clone, Debug)]
pub struct SeenEncrypted {
    records: Records,
}

impl SeenEncrypted {
    /// Records kept in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        SeenEncrypted {
            records: Records::new(dir, HEADER),
        }
    }

    /// The user's records: `encrypted/` in the state directory
    /// ([`state_dir`]); `None` when there is none.
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<Self> {
        Some(Self::at(state_dir(var)?.join("encrypted")))
    }

    pub fn dir(&self) -> &Path {
        self.records.dir()
    }

    fn by_location(&self, location: &str) -> PathBuf {
        self.records.by_location(location)
    }

    fn by_id(&self, repo_id: &str) -> PathBuf {
        self.records.by_id(repo_id)
    }

    /// Refuses an unencrypted `config` at `location` when this client has
    /// seen the repository (by id or by location) encrypted: damage naming
    /// the config. Any record that cannot be read is an error.
    pub fn check(&self, location: &str, config: &RepoConfig) -> Result<()> {
        for path in [self.by_id(&config.repo_id), self.by_location(location)] {
            if self.records.read(&path)?.is_some() && config.encryption.is_none() {
                return Err(Error::corrupt(
                    keys::CONFIG,
                    format!(
                        "the config of the repository at {location} says it is unencrypted, but \
                         this client has seen it encrypted (record {}): the config may have \
                         been replaced; if the repository was made again without encryption \
                         on purpose, remove that record",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Records that the repository of `config`, at `location`, is
    /// encrypted (nothing to do for an unencrypted one).
    pub fn record(&self, location: &str, config: &RepoConfig) -> Result<()> {
        if config.encryption.is_none() {
            return Ok(());
        }
        let text = format!("repo_id {:?}\nlocation {location:?}\n", config.repo_id);
        for path in [self.by_id(&config.repo_id), self.by_location(location)] {
            if self.records.read(&path)?.is_none() {
                self.records.write(&path, &text)?;
            }
        }
        Ok(())
    }

    /// Forgets the location's record: `init --encryption none` made a new
    /// repository there on purpose.
    pub fn forget_location(&self, location: &str) -> Result<()> {
        self.records.remove(&self.by_location(location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::config::{DEFAULT_SEGMENT_SIZE, Encryption};

    fn config(id: &str, encrypted: bool) -> RepoConfig {
        let mut c = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
        c.repo_id = id.into();
        c.encryption = encrypted.then_some(Encryption { check: [1; 32] });
        c
    }

    fn is_downgrade(e: &Error) -> bool {
        matches!(e, Error::Corrupt { key, reason } if key == keys::CONFIG
            && reason.contains("seen it encrypted"))
    }

    #[test]
    fn a_repository_seen_encrypted_is_refused_when_it_turns_unencrypted() {
        let d = tempfile::tempdir().unwrap();
        let seen = SeenEncrypted::at(d.path().join("state/xfull/encrypted"));
        // Nothing recorded: nothing refused, and nothing written.
        seen.check("/srv/a", &config("aa", false)).unwrap();
        seen.record("/srv/a", &config("aa", false)).unwrap();
        assert!(!seen.dir().exists());

        seen.record("/srv/a", &config("aa", true)).unwrap();
        seen.check("/srv/a", &config("aa", true)).unwrap();
        // The same id elsewhere, or another id at the same place.
        assert!(is_downgrade(
            &seen.check("/mnt/copy", &config("aa", false)).unwrap_err()
        ));
        let e = seen.check("/srv/a", &config("bb", false)).unwrap_err();
        assert!(is_downgrade(&e) && e.is_damage(), "{e}");
        // Other repositories are not concerned.
        seen.check("/srv/b", &config("bb", false)).unwrap();
        // `init --encryption none` at the place: the location is free.
        seen.forget_location("/srv/a").unwrap();
        seen.check("/srv/a", &config("bb", false)).unwrap();
        assert!(seen.check("/srv/a", &config("aa", false)).is_err());
    }

    #[test]
    fn a_record_that_cannot_be_read_is_an_error_not_a_pass() {
        let d = tempfile::tempdir().unwrap();
        let seen = SeenEncrypted::at(d.path());
        seen.record("/srv/a", &config("aa", true)).unwrap();
        let files: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        for f in &files {
            std::fs::write(f, b"junk").unwrap();
        }
        for encrypted in [false, true] {
            let e = seen.check("/srv/a", &config("aa", encrypted)).unwrap_err();
            assert!(matches!(&e, Error::ClientRecord { .. }), "{e}");
            assert!(!e.is_damage() && !e.is_usage());
        }
        // A directory where a record should be.
        let seen = SeenEncrypted::at(d.path().join("x"));
        std::fs::create_dir_all(seen.by_id("cc")).unwrap();
        assert!(seen.check("/srv/c", &config("cc", false)).is_err());
        assert!(seen.record("/srv/c", &config("cc", true)).is_err());
    }
}
