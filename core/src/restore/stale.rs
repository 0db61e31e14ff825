//! Partial images that killed restores left behind. A restore to a file
//! writes `.xfull-<16 hex>.partial` next to its target and removes it on
//! any failure it lives through; SIGKILL (the OOM killer, a unit's stop
//! timeout, a reboot) leaves it, possibly as large as the disk, hidden
//! by its leading dot. The next restore into that directory removes such
//! files, and says which.
//!
//! A partial image is known to be abandoned, not being written by a
//! restore running now, because every restore holds an exclusive
//! `flock` on its partial image for as long as it lives (the kernel
//! drops it with the process, however it ends). One is removed only if
//! all of these hold: the name is exactly that pattern; it is a regular
//! file (opened without following links) owned by this user; nobody
//! holds its lock (taken here, without waiting); it was last modified
//! more than [`QUIET`] ago (a restore creates its file a moment before it
//! locks it, and builds before the lock existed never lock); and the
//! name still holds the file locked here when it is removed.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

/// How long a partial image must have gone unmodified to be judged
/// abandoned (with its lock free).
pub const QUIET: Duration = Duration::from_secs(60);

/// A partial image of a killed restore, removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub path: PathBuf,
    /// Its size (apparent: holes count).
    pub bytes: u64,
}

/// Whether `name` is a partial image's name (`Partial::create`).
pub(super) fn is_partial_name(name: &[u8]) -> bool {
    let Some(hex) = name
        .strip_prefix(b".xfull-")
        .and_then(|n| n.strip_suffix(b".partial"))
    else {
        return false;
    };
    hex.len() == 16
        && hex
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Takes the lock every live restore holds on its partial image; false
/// if another process holds it (or the file system has no locks).
pub(super) fn lock(fd: impl AsFd) -> bool {
    rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Removes the abandoned partial images next to `target` (a restore's
/// target file; see the module).
pub(super) fn remove_abandoned_next_to(target: &Path) -> Vec<Leftover> {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => remove_abandoned(d),
        _ => remove_abandoned(Path::new(".")),
    }
}

/// Removes the abandoned partial images in the directory `dir` (see the
/// module); best effort: what cannot be read or removed is left alone.
pub(super) fn remove_abandoned(dir: &Path) -> Vec<Leftover> {
    let mut removed = Vec::new();
    let Ok(fd) = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return removed;
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
        return removed;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_partial_name(name.to_bytes()) {
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(file) = rustix::fs::openat(&fd, name, flags, Mode::empty()) else {
            continue;
        };
        let Ok(st) = rustix::fs::fstat(&file) else {
            continue;
        };
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
        let quiet = modified.elapsed().is_ok_and(|d| d > QUIET);
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_uid != me
            || !quiet
            || !lock(&file)
        {
            continue;
        }
        let there = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW);
        if !there.is_ok_and(|s| (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino)) {
            continue;
        }
        if rustix::fs::unlinkat(&fd, name, AtFlags::empty()).is_ok() {
            removed.push(Leftover {
                path: dir.join(std::ffi::OsStr::from_bytes(name.to_bytes())),
                bytes: st.st_size.max(0) as u64,
            });
        }
    }
    removed
}

#[cfg(test)]
#[path = "stale_tests.rs"]
mod tests;
