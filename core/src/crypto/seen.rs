//! The client's record of repositories it has seen encrypted, so that one
//! whose config later says "unencrypted" is refused instead of receiving
//! backups in the clear (crypto/downgrade.rs has the other checks).
//!
//! One small file per repository id and one per location, under
//! `$XDG_STATE_HOME/xfull/encrypted/` (else `~/.local/state/...`): the id
//! alone would not do, since whoever rewrites the config can change the
//! id too; the location alone would miss the same repository reached
//! under another name. File names are hashes, so neither a hostile
//! repository id nor a location can name a path. A record is written
//! under a temporary name and renamed into place, so a reader never sees
//! half of one. A record that exists but cannot be read is an error,
//! never a silent pass: the check must not be switched off by breaking
//! the file.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::keys;

const HEADER: &str = "xfull: a repository seen encrypted (record v1)\n";

/// The records of one user (one state directory).
#[derive(Clone, Debug)]
pub struct SeenEncrypted {
    dir: PathBuf,
}

impl SeenEncrypted {
    /// Records kept in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        SeenEncrypted { dir: dir.into() }
    }

    /// The user's records: `$XDG_STATE_HOME/xfull/encrypted`, else
    /// `$HOME/.local/state/xfull/encrypted`; `None` when neither is set
    /// (the check is then not made: docs/design.md says so).
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<Self> {
        let set = |n: &str| var(n).filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = set("XDG_STATE_HOME").or_else(|| set("HOME").map(|h| h.join(".local/state")))?;
        Some(Self::at(base.join("xfull").join("encrypted")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn by_location(&self, location: &str) -> PathBuf {
        self.dir.join(name("location", location))
    }

    fn by_id(&self, repo_id: &str) -> PathBuf {
        self.dir.join(name("repo-id", repo_id))
    }

    /// Refuses an unencrypted `config` at `location` when this client has
    /// seen the repository (by id or by location) encrypted: damage naming
    /// the config. Any record that cannot be read is an error.
    pub fn check(&self, location: &str, config: &RepoConfig) -> Result<()> {
        for path in [self.by_id(&config.repo_id), self.by_location(location)] {
            if read(&path)? && config.encryption.is_none() {
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
        let text = format!(
            "{HEADER}repo_id {:?}\nlocation {location:?}\n",
            config.repo_id
        );
        for path in [self.by_id(&config.repo_id), self.by_location(location)] {
            if !read(&path)? {
                write_atomically(&self.dir, &path, text.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Forgets the location's record: `init --encryption none` made a new
    /// repository there on purpose.
    pub fn forget_location(&self, location: &str) -> Result<()> {
        let path = self.by_location(location);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unreadable(&path, e.to_string())),
        }
    }
}

fn name(what: &str, value: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(what.as_bytes());
    h.update(b"\0");
    h.update(value.as_bytes());
    hex::encode(&h.finalize().as_bytes()[..16])
}

fn unreadable(path: &Path, reason: String) -> Error {
    Error::ClientRecord {
        path: path.to_path_buf(),
        reason,
    }
}

/// Whether the record exists; one that exists but is not a record is an
/// error.
fn read(path: &Path) -> Result<bool> {
    match std::fs::read(path) {
        Ok(b) if b.starts_with(HEADER.as_bytes()) => Ok(true),
        Ok(_) => Err(unreadable(path, "not a record xfull wrote".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(unreadable(path, e.to_string())),
    }
}

/// Writes under a temporary name, syncs, renames into place: a reader
/// sees the whole record or none.
fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| unreadable(path, format!("cannot write it: {e}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
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

    #[test]
    fn the_state_directory_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let at = |s: Option<SeenEncrypted>| s.map(|s| s.dir);
        assert_eq!(
            at(SeenEncrypted::from_env(env(&[
                ("XDG_STATE_HOME", "/s"),
                ("HOME", "/h")
            ]))),
            Some(PathBuf::from("/s/xfull/encrypted"))
        );
        assert_eq!(
            at(SeenEncrypted::from_env(env(&[
                ("XDG_STATE_HOME", ""),
                ("HOME", "/h")
            ]))),
            Some(PathBuf::from("/h/.local/state/xfull/encrypted"))
        );
        assert_eq!(at(SeenEncrypted::from_env(env(&[]))), None);
    }
}
