//! Deleting objects: `unlinkat` in the key's directory, opened beneath
//! the root without following a link. Only files are deleted: a directory
//! or a symbolic link under a key was put there by someone else, and
//! deleting through it could reach anything.
//!
//! A delete returns once it is durable, as a put does: each directory a
//! batch deleted a key in (or found one missing) is fsynced before the
//! batch returns. Without it, a
//! crash could bring back a deleted object after a later one's delete
//! reached the disk (POSIX orders neither), such as a forgotten point's
//! manifest after gc deleted the packs only it used: a point that
//! restores no more. One fsync per directory per batch.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;
use xfull_core::backend::{BackendError, Operation};

use crate::fs::{DIR, Root, kind_name, kind_of};

impl Root {
    /// Deletes the objects `keys`. Missing keys are already deleted; a
    /// directory or a symbolic link under a key is no object of ours: it is
    /// left alone (never followed) and reported after the other keys are
    /// deleted.
    pub(crate) fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        // Every key first: a bad one found half way left unlinks unsynced.
        for key in keys {
            self.check_key(key)?;
        }
        let mut not_ours = None;
        // Batches come in key order: reuse the directory of the last key,
        // with the key of its last delete, if any, to fsync it by.
        let mut open_dir: Option<(&str, OwnedFd)> = None;
        let mut deleted: Option<&str> = None;
        for key in keys {
            let (dir_path, name) = key.rsplit_once('/').unwrap_or(("", key));
            if open_dir.as_ref().is_none_or(|(p, _)| *p != dir_path) {
                self.sync_deletes(&open_dir, deleted.take())?;
                open_dir = None;
                match self.open_beneath(dir_path, DIR) {
                    Ok(fd) => open_dir = Some((dir_path, fd)),
                    Err(Errno::NOENT) => continue,
                    Err(e) => match self.open_error(key, e) {
                        e @ BackendError::Corrupt { .. } => {
                            not_ours.get_or_insert(e);
                            continue;
                        }
                        e => return Err(e),
                    },
                }
            }
            let Some((_, dir)) = &open_dir else { continue };
            match self.delete_one(key, dir.as_fd(), name) {
                Ok(()) => deleted = Some(key),
                Err(e @ BackendError::Corrupt { .. }) => {
                    not_ours.get_or_insert(e);
                }
                Err(e) => {
                    // The refusal is the error to tell (gc takes some
                    // for a policy's); the sync is still tried.
                    let _ = self.sync_deletes(&open_dir, deleted);
                    return Err(e);
                }
            }
        }
        self.sync_deletes(&open_dir, deleted)?;
        not_ours.map_or(Ok(()), Err)
    }

    /// Fsyncs the directory `open_dir` if `deleted` names a key of the
    /// batch deleted in it: by this call, or found missing, as another
    /// delete's may not be durable yet (a retry after an fsync failed, or
    /// a second deleter). The deletes in it are then durable.
    fn sync_deletes(
        &self,
        open_dir: &Option<(&str, OwnedFd)>,
        deleted: Option<&str>,
    ) -> Result<(), BackendError> {
        match (open_dir, deleted) {
            (Some((_, dir)), Some(key)) => rustix::fs::fsync(dir).map_err(|e| self.other(key, e)),
            _ => Ok(()),
        }
    }

    fn delete_one(&self, key: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), BackendError> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.other(key, e)),
        };
        let kind = kind_of(&st);
        if matches!(kind, FileType::Directory | FileType::Symlink) {
            return Err(self.corrupt(
                key,
                format!("{}, not an object: not deleted", kind_name(kind)),
            ));
        }
        // If the name was swapped for a directory meanwhile, unlinkat
        // fails (EISDIR); for a link, it removes the link, not its target.
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.refused(key, Operation::Delete, e)),
        }
    }
}
