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
//! drops it with the process, however it ends). That holds only where
//! every writer's lock is seen: on a local file system. On a network or
//! FUSE file system a lock may be local to one host (NFS `local_lock`,
//! CIFS `nobrl`, sshfs), and another host's live restore would look
//! abandoned, so nothing is removed there ([`LOCAL`]). One is removed
//! only if all of these hold: the directory is on a local file system;
//! the name is exactly that pattern; it is a regular file (looked at
//! without following links, before it is opened), mode 0600, one link,
//! owned by this user; nobody holds its flock, nor a POSIX lock (what
//! a restore on an NFS client of an exported directory holds here), both
//! taken here without waiting; it was last modified more than [`QUIET`]
//! ago (sftp/sshfs writers of an exported directory lock nothing: only
//! this protects them); and the name
//! still holds the file locked here when it is removed. [`QUIET`] covers
//! the moment between a restore creating its file and locking it, and
//! builds from before the lock, which never lock and may leave their
//! partial unmodified for minutes while they restore a sparse disk
//! (zeros are not written).

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, Stat};

/// How long a partial image must have gone unmodified to be judged
/// abandoned (with its lock free).
pub const QUIET: Duration = Duration::from_secs(10 * 60);

/// File systems (`statfs` magic numbers) on which a lock is seen by every
/// process that can reach the file, all on this host: ext2/3/4, XFS,
/// Btrfs, tmpfs, ramfs, ZFS, F2FS, bcachefs, overlayfs (containers).
const LOCAL: [i64; 9] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x8584_58F6,
    0x2FC1_2FC1,
    0xF2F5_2010,
    0xCA45_1A4E,
    0x794C_7630,
];

/// Whether restores into `dir` remove abandoned partial images there:
/// only on a local file system (see the module).
pub fn removes_leftovers_in(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|f| is_local(&f))
}

/// Compared as the 32 bits the kernel's magic numbers are: `f_type` is
/// an i64 on 64-bit Linux and an i32 on some 32-bit targets, where the
/// larger magics are negative.
#[allow(clippy::unnecessary_cast)]
fn is_local(f: &rustix::fs::StatFs) -> bool {
    LOCAL.contains(&((f.f_type as u32) as i64))
}

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

/// Takes the lock every live restore holds on its partial image, without
/// waiting (`WOULDBLOCK`: another process holds it).
pub(super) fn lock(fd: impl AsFd) -> rustix::io::Result<()> {
    rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive)
}

/// Whether `name` in `dir` is, as a directory entry (no link followed),
/// the file whose status is `file`.
pub(super) fn names_file(dir: impl AsFd, name: impl rustix::path::Arg, file: &Stat) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| (s.st_dev, s.st_ino) == (file.st_dev, file.st_ino))
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
    if !rustix::fs::fstatfs(&fd).is_ok_and(|f| is_local(&f)) {
        return removed;
    }
    let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
        return removed;
    };
    let me = rustix::process::geteuid().as_raw();
    let looks_abandoned = |st: &Stat| {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_mode & 0o7777 == 0o600
            && st.st_nlink == 1
            && st.st_uid == me
            && modified.elapsed().is_ok_and(|d| d > QUIET)
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_partial_name(name.to_bytes()) {
            continue;
        }
        // Looked at before it is opened: a device or fifo is never opened.
        let seen = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW);
        if !seen.is_ok_and(|st| looks_abandoned(&st)) {
            continue;
        }
        // Open for writing only to test a POSIX write lock (below); it
        // writes nothing.
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(file) = rustix::fs::openat(&fd, name, flags, Mode::empty()) else {
            continue;
        };
        let Ok(st) = rustix::fs::fstat(&file) else {
            continue;
        };
        // The flock of a restore on this host, and a POSIX lock, which is
        // what a restore on an NFS client of this directory (exported)
        // holds here: its flock reaches the server as one.
        if !looks_abandoned(&st)
            || lock(&file).is_err()
            || rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
        {
            continue;
        }
        if !names_file(&fd, name, &st) {
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
