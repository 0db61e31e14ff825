//! The file-system layer: the repository directory opened once, and every
//! key resolved beneath it without following a symbolic link.
//!
//! A repository directory can hold what anyone with write access planted:
//! a symlink in place of a fan directory (`chunks/ff -> /home/me`), a FIFO
//! in place of `config`. Resolving keys with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` relative to the root's fd means no path of ours
//! ever leaves the directory, whatever is in it or changes in it meanwhile
//! (a check-then-open on path strings would race with a swap).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use xfull_core::backend::{BackendError, Operation};

/// A repository directory, opened once.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// The directory as the operator named it, for messages.
    pub(crate) location: String,
}

/// Set once `openat2` answered ENOSYS (Linux < 5.6): then keys are walked
/// component by component instead, with the same result.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Flags for a directory we list, create in or sync.
pub(crate) const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Opens `path`, the repository directory. The operator named it, so a
    /// symlink given as `path` itself (or on the way to it) is followed;
    /// nothing below it ever is.
    pub(crate) fn open(path: &Path) -> Result<Root, BackendError> {
        let location = path.display().to_string();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(Root { fd, location }),
            Err(e) if e == Errno::ACCESS || e == Errno::PERM => {
                Err(BackendError::Unauthenticated {
                    message: format!("cannot open the directory: {}", io(e)),
                    location,
                })
            }
            Err(e) => Err(BackendError::Other {
                message: format!("cannot open the directory: {}", io(e)),
                location,
            }),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `path` (a key, or a directory of keys; "" is the root itself)
    /// beneath the root, refusing any symlink on the way or at its end.
    pub(crate) fn open_beneath(&self, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        open_beneath(
            self.fd(),
            if path.is_empty() { "." } else { path },
            flags,
            true,
        )
    }

    /// The error for a failed open of `key` (or of a directory on its
    /// way): not found, denied, or, when something other than a directory
    /// or regular file is in the way, damage naming what it is.
    pub(crate) fn open_error(&self, key: &str, e: Errno) -> BackendError {
        let location = self.location.clone();
        if e == Errno::NOENT {
            return BackendError::NotFound {
                location,
                key: key.to_string(),
            };
        }
        if e == Errno::ACCESS || e == Errno::PERM {
            return BackendError::Unauthenticated {
                location,
                message: format!("{key}: {}", io(e)),
            };
        }
        match describe(self.fd(), key) {
            Some(message) => BackendError::Corrupt {
                location,
                key: key.to_string(),
                message,
            },
            None => self.other(key, e),
        }
    }

    /// Any other failure of a system call on `key`.
    pub(crate) fn other(&self, key: &str, e: Errno) -> BackendError {
        if let Some(full) = self.no_space(key, e) {
            return full;
        }
        if e == Errno::ACCESS || e == Errno::PERM {
            return BackendError::Unauthenticated {
                location: self.location.clone(),
                message: format!("{key}: {}", io(e)),
            };
        }
        BackendError::Other {
            location: self.location.clone(),
            message: format!("{key}: {}", io(e)),
        }
    }

    /// A failure of a system call that would `operation` `key`: EACCES
    /// and EPERM (file modes, an immutable or append-only file) are the
    /// file system refusing this user that operation, named as such
    /// (`BackendError::PermissionDenied`); anything else as [`Self::other`].
    pub(crate) fn refused(&self, key: &str, operation: Operation, e: Errno) -> BackendError {
        if e == Errno::ACCESS || e == Errno::PERM {
            return BackendError::PermissionDenied {
                location: self.location.clone(),
                key: key.to_string(),
                operation,
                message: io(e).to_string(),
            };
        }
        self.other(key, e)
    }

    pub(crate) fn corrupt(&self, key: &str, message: String) -> BackendError {
        BackendError::Corrupt {
            location: self.location.clone(),
            key: key.to_string(),
            message,
        }
    }

    /// Refuses a key that is not `component/component/...` (see
    /// [`is_component`]): no `..`, no empty or absolute path, no staging
    /// name, so that every valid key is a plain path beneath the root.
    pub(crate) fn check_key(&self, key: &str) -> Result<(), BackendError> {
        if is_key(key) {
            return Ok(());
        }
        Err(BackendError::Other {
            location: self.location.clone(),
            message: format!(
                "invalid key {key:?}: keys are names of [A-Za-z0-9._-] separated by '/'"
            ),
        })
    }
}

/// The longest name between slashes: its staging file's `NAME#<u64>`
/// must fit in a file name (255 bytes).
const MAX_COMPONENT: usize = 255 - "#18446744073709551615".len();

/// A name a key may have between slashes: what the key space uses (VM
/// names, point ids, hex ids, sequence numbers), never `.` or `..`, and
/// never a staging file's `KEY#N`.
pub(crate) fn is_component(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT
        && name != b"."
        && name != b".."
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn is_key(key: &str) -> bool {
    key.split('/').all(|c| is_component(c.as_bytes()))
}

/// `openat2` beneath `dir` without symlinks, or, where the kernel lacks it
/// (or `use_openat2` is false, for tests), the same by walking `path`'s
/// components with `O_NOFOLLOW`. `path` holds only valid components or is
/// `.`, so no `..` can climb out either way.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    use_openat2: bool,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if use_openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
        // EAGAIN: the kernel could not rule out a race with a rename;
        // asking again (or walking) is the documented answer.
        for _ in 0..3 {
            match rustix::fs::openat2(dir, path, flags, Mode::empty(), BENEATH) {
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r,
            }
        }
    }
    let mut parts = path.split('/');
    let last = parts.next_back().unwrap_or(".");
    let mut cur: Option<OwnedFd> = None;
    for part in parts {
        let at = cur.as_ref().map_or(dir, AsFd::as_fd);
        let path_only = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        cur = Some(rustix::fs::openat(at, part, path_only, Mode::empty())?);
    }
    let at = cur.as_ref().map_or(dir, AsFd::as_fd);
    rustix::fs::openat(at, last, flags, Mode::empty())
}

/// What is in the way of `key` beneath `dir`, for a message: the first
/// symlink, the first non-directory where a directory should be, or the
/// key itself if it is not a regular file. `None` if nothing is (or the
/// key is missing). Only for messages: the decision was taken on fds.
pub(crate) fn describe(dir: BorrowedFd<'_>, key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut cur: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let at = cur.as_ref().map_or(dir, AsFd::as_fd);
        let st = rustix::fs::statat(at, *part, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let last = i + 1 == parts.len();
        // The key itself is named by the error; a directory on its way is
        // named here.
        let who = if last {
            String::new()
        } else {
            format!("{} is ", parts[..=i].join("/"))
        };
        match kind {
            FileType::Symlink => return Some(format!("{who}a symbolic link (never followed)")),
            FileType::RegularFile if last => return None,
            FileType::Directory if !last => {}
            _ if last => return Some(format!("{who}{}, not a regular file", kind_name(kind))),
            _ => return Some(format!("{who}{}, not a directory", kind_name(kind))),
        }
        let path_only = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        cur = Some(rustix::fs::openat(at, *part, path_only, Mode::empty()).ok()?);
    }
    None
}

pub(crate) fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of unknown type",
    }
}

pub(crate) fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

pub(crate) fn size_of(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

// `st_mtime` is a C long: i64 here, narrower on some targets.
#[allow(clippy::useless_conversion)]
pub(crate) fn mtime_of(st: &Stat) -> DateTime<Utc> {
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    DateTime::from_timestamp(i64::from(st.st_mtime), nanos).unwrap_or_default()
}

/// An errno as the standard library prints it ("No space left on device
/// (os error 28)").
pub(crate) fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/f"), b"in").unwrap();
        std::fs::write(outside.path().join("f"), b"out").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/link")).unwrap();
        std::os::unix::fs::symlink(root.path().join("a/b/f"), root.path().join("a/b/l")).unwrap();
        (root, outside)
    }

    /// openat2 and the component walk agree: plain paths open, a symlink
    /// anywhere is refused.
    #[test]
    fn both_resolvers_refuse_symlinks_anywhere() {
        let (root, _outside) = tree();
        let r = Root::open(root.path()).unwrap();
        for openat2 in [true, false] {
            let open = |p: &str| open_beneath(r.fd(), p, OFlags::RDONLY, openat2);
            assert!(open("a/b/f").is_ok(), "openat2={openat2}");
            assert!(open(".").is_ok());
            assert_eq!(open("a/missing").unwrap_err(), Errno::NOENT);
            for p in ["a/link/f", "a/b/l", "a/link"] {
                let e = open(p).unwrap_err();
                assert!(
                    e == Errno::LOOP || e == Errno::NOTDIR,
                    "{p} (openat2={openat2}): {e:?}"
                );
            }
            assert_eq!(open("a/b/f/x").unwrap_err(), Errno::NOTDIR);
        }
    }

    #[test]
    fn describe_names_what_is_in_the_way() {
        let (root, _outside) = tree();
        let fd = Root::open(root.path()).unwrap();
        let d = |k: &str| describe(fd.fd(), k);
        assert_eq!(d("a/b/f"), None);
        assert_eq!(d("a/missing"), None);
        assert_eq!(
            d("a/link/f").unwrap(),
            "a/link is a symbolic link (never followed)"
        );
        assert_eq!(d("a/b/l").unwrap(), "a symbolic link (never followed)");
        assert_eq!(d("a/b").unwrap(), "a directory, not a regular file");
        assert_eq!(
            d("a/b/f/x").unwrap(),
            "a/b/f is a regular file, not a directory"
        );
    }

    #[test]
    fn keys_are_plain_relative_paths() {
        for ok in [
            "config",
            "chunks/ab/ab01",
            "points/vm.1/20261125T194155Z-3fa2",
        ] {
            assert!(is_key(ok), "{ok}");
        }
        for bad in [
            "", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a/.", "k#1", "sp ace", "nul\0",
            "\u{e9}",
        ] {
            assert!(!is_key(bad), "{bad:?}");
        }
        assert!(!is_component(&[b'a'; 256]));
    }
}
