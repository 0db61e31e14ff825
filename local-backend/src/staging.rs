//! Writing objects: a staging file, then an atomic publish.
//!
//! `put` writes `NAME#<random digits>` next to the key (created with
//! `O_EXCL`, so it is ours alone), syncs it, and publishes it: a create
//! with `linkat`, which fails if the key exists (so a create never
//! overwrites, and of racing creates exactly one wins), an overwrite with
//! `renameat`. Then the directory is synced. Readers therefore see the
//! whole old object or the whole new one, never part of one, and a
//! returned put survives a crash. A killed writer leaves its staging file
//! (never a partial object under the key); gc removes it later
//! (`cleanup.rs`). Directories are created component by component beneath
//! the root, never through a symbolic link.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use xfull_core::backend::{BackendError, Operation, PutMode};

use crate::fs::{DIR, Root, kind_name, kind_of};

/// The staging file of `name`: `name#digits`. `#` is in no key, so a
/// staging file is never taken for an object.
pub(crate) fn staging_name(name: &str) -> String {
    format!("{name}#{}", rand::random::<u64>())
}

/// The name a staging file stands for: `Some("x")` for `x#123`.
pub(crate) fn staged_name(file: &str) -> Option<&str> {
    let (name, digits) = file.rsplit_once('#')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

impl Root {
    pub(crate) fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), BackendError> {
        self.check_key(key)?;
        let (dir_path, name) = key.rsplit_once('/').unwrap_or(("", key));
        let dir = self.make_dirs(key, dir_path)?;
        let (staging, file) = self.create_staging(key, &dir, name)?;
        let published = self
            .write_all(key, &file, data)
            .and_then(|()| self.publish(key, &dir, &staging, name, mode));
        // After a create the staging name is a second link to the object;
        // after a failure it is all there is. Either way it goes.
        if mode == PutMode::Create || published.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &staging, AtFlags::empty());
        }
        published?;
        rustix::fs::fsync(&dir).map_err(|e| self.other(key, e))
    }

    /// Opens the directory of `key`, creating what is missing of
    /// `dir_path` one component at a time, each opened without following
    /// a link. A new directory's entry is synced, so that a published
    /// object's path survives a crash.
    fn make_dirs(&self, key: &str, dir_path: &str) -> Result<OwnedFd, BackendError> {
        match self.open_beneath(dir_path, DIR) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.open_error(key, e)),
        }
        let mut cur = self
            .open_beneath("", DIR)
            .map_err(|e| self.open_error(key, e))?;
        for part in dir_path.split('/') {
            let next = match rustix::fs::openat(&cur, part, DIR, Mode::empty()) {
                Err(Errno::NOENT) => {
                    // Owner only, as objects are (below). Made by another
                    // writer a moment ago, the entry may not be durable
                    // yet either: synced the same.
                    match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {
                            rustix::fs::fsync(&cur).map_err(|e| self.other(key, e))?
                        }
                        Err(e) => return Err(self.other(key, e)),
                    }
                    rustix::fs::openat(&cur, part, DIR, Mode::empty())
                }
                r => r,
            };
            cur = next.map_err(|e| self.open_error(key, e))?;
        }
        Ok(cur)
    }

    fn create_staging(
        &self,
        key: &str,
        dir: &OwnedFd,
        name: &str,
    ) -> Result<(String, OwnedFd), BackendError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        loop {
            let staging = staging_name(name);
            // Owner only, whatever the umask: key slots (open to offline
            // guessing) and, unencrypted, every disk's data were readable
            // by every local user under umask 022 (review, stop 50), as
            // xfull's other files holding them never were.
            match rustix::fs::openat(dir, &staging, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((staging, fd)),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(self.refused(key, Operation::Write, e)),
            }
        }
    }

    fn write_all(&self, key: &str, file: &OwnedFd, mut data: &[u8]) -> Result<(), BackendError> {
        while !data.is_empty() {
            match rustix::io::write(file, data) {
                Ok(0) => return Err(self.other(key, Errno::NOSPC)),
                Ok(n) => data = &data[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(self.other(key, e)),
            }
        }
        rustix::fs::fsync(file).map_err(|e| self.other(key, e))
    }

    fn publish(
        &self,
        key: &str,
        dir: &OwnedFd,
        staging: &str,
        name: &str,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        let r = match mode {
            PutMode::Create => rustix::fs::linkat(dir, staging, dir, name, AtFlags::empty()),
            PutMode::Overwrite => rustix::fs::renameat(dir, staging, dir, name),
        };
        match r {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if mode == PutMode::Create => Err(self.existing(key, dir, name)),
            // link(2)'s EPERM is mostly a file system without hard links
            // (vfat, exFAT, some FUSE and CIFS mounts), not a refusal to
            // this user: saying "permission" would send the operator to
            // the wrong fix.
            Err(Errno::PERM) if mode == PutMode::Create => Err(BackendError::Other {
                location: self.location.clone(),
                message: format!(
                    "{key}: the file system refused a hard link (EPERM), which create-only \
                     writes need: a repository directory must be on a file system with hard \
                     links (ext4, xfs, btrfs, zfs, NFS)"
                ),
            }),
            Err(e) => Err(self.in_the_way(key, dir, name).unwrap_or_else(|| {
                let op = match mode {
                    PutMode::Create => Operation::Write,
                    PutMode::Overwrite => Operation::Overwrite,
                };
                self.refused(key, op, e)
            })),
        }
    }

    /// A create found something under the key: an object, or something
    /// planted there that is none (and is not taken for one).
    fn existing(&self, key: &str, dir: &OwnedFd, name: &str) -> BackendError {
        self.in_the_way(key, dir, name)
            .unwrap_or_else(|| BackendError::AlreadyExists {
                location: self.location.clone(),
                key: key.to_string(),
            })
    }

    /// Damage if what is at `name` in `dir` is not a regular file.
    fn in_the_way(&self, key: &str, dir: &OwnedFd, name: &str) -> Option<BackendError> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let kind = kind_of(&st);
        let what = match kind {
            FileType::RegularFile => return None,
            FileType::Symlink => "a symbolic link (never followed)".to_string(),
            _ => format!("{}, not a regular file", kind_name(kind)),
        };
        Some(self.corrupt(key, what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_name_hash_digits() {
        let s = staging_name("abc");
        assert_eq!(staged_name(&s), Some("abc"));
        assert_eq!(staged_name("abc#"), None);
        assert_eq!(staged_name("abc#12x"), None);
        assert_eq!(staged_name("abc"), None);
        assert_eq!(staged_name("a#b#7"), Some("a#b"));
    }
}
