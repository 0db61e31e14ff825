//! Records a client keeps of what it has seen of repositories, so that a
//! repository whose config later claims less protection (unencrypted:
//! `crypto::seen`; without object lock or with a shorter one:
//! `lock::seen`) is refused instead of being written to with less.
//!
//! One small file per repository id and one per location, in a directory
//! per kind under `$XDG_STATE_HOME/xfull/` (else `~/.local/state/xfull/`):
//! the id alone would not do, since whoever rewrites the config can change
//! the id too; the location alone would miss the same repository reached
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

use crate::error::{Error, Result};

/// The user's state directory for xfull: `$XDG_STATE_HOME/xfull`, else
/// `$HOME/.local/state/xfull`; `None` when neither is set (the checks are
/// then not made: docs/design.md says so).
pub fn state_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |n: &str| var(n).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = set("XDG_STATE_HOME").or_else(|| set("HOME").map(|h| h.join(".local/state")))?;
    Some(base.join("xfull"))
}

/// The records of one kind (one directory), each starting with `header`.
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
    header: &'static str,
}

impl Records {
    pub fn new(dir: impl Into<PathBuf>, header: &'static str) -> Self {
        Records {
            dir: dir.into(),
            header,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record of the repository with this id.
    pub fn by_id(&self, repo_id: &str) -> PathBuf {
        self.dir.join(name("repo-id", repo_id))
    }

    /// The record of the repository at this location.
    pub fn by_location(&self, location: &str) -> PathBuf {
        self.dir.join(name("location", location))
    }

    /// The record's text after its header, `None` if there is no record;
    /// a file that is not a record of this kind is an error.
    pub fn read(&self, path: &Path) -> Result<Option<String>> {
        match std::fs::read(path) {
            Ok(b) => match std::str::from_utf8(&b) {
                Ok(text) if text.starts_with(self.header) => {
                    Ok(Some(text[self.header.len()..].to_string()))
                }
                _ => Err(unreadable(path, "not a record xfull wrote".into())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(path, e.to_string())),
        }
    }

    /// Writes `body` under the header, under a temporary name, synced,
    /// then renamed into place: a reader sees the whole record or none.
    pub fn write(&self, path: &Path, body: &str) -> Result<()> {
        let fail = |e: std::io::Error| unreadable(path, format!("cannot write it: {e}"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(fail)?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(self.header.as_bytes())?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(fail)
    }

    /// Removes the record at `path`, if there is one.
    pub fn remove(&self, path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unreadable(path, e.to_string())),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            state_dir(env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            Some(PathBuf::from("/s/xfull"))
        );
        assert_eq!(
            state_dir(env(&[("XDG_STATE_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/xfull"))
        );
        assert_eq!(state_dir(env(&[])), None);
    }

    #[test]
    fn records_round_trip_and_foreign_files_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let r = Records::new(d.path().join("kind"), "xfull: test record v1\n");
        let p = r.by_id("aa");
        assert_eq!(r.read(&p).unwrap(), None);
        r.write(&p, "body 1\n").unwrap();
        assert_eq!(r.read(&p).unwrap().as_deref(), Some("body 1\n"));
        // Another kind's header is not this kind's record.
        let other = Records::new(d.path().join("kind"), "xfull: other v1\n");
        assert!(matches!(other.read(&p), Err(Error::ClientRecord { .. })));
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(r.read(&p), Err(Error::ClientRecord { .. })));
        r.remove(&p).unwrap();
        r.remove(&p).unwrap();
        assert_eq!(r.read(&p).unwrap(), None);
        // Ids and locations never share a name.
        assert_ne!(r.by_id("x"), r.by_location("x"));
    }
}
