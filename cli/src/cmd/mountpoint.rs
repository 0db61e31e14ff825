//! The directory `xfull mount` mounts on: checked through a file
//! descriptor opened without following a link, and, for root, the mount
//! checked afterwards to have landed on that very directory.
//!
//! Why afterwards rather than mounting on the descriptor: root's mounts
//! go through fusermount3 for its auto_unmount watcher (see
//! `cmd/mount.rs`), and fusermount3 takes a path. fuser canonicalizes
//! the path it is given (a `/proc/self/fd/N` becomes the directory's
//! name again), and fusermount3 3.14 refuses such a path anyway: it
//! lstat()s the magic link, takes it for a symbolic link and mounts with
//! `rootmode=120000` (EINVAL). So the path is resolved again between the
//! check and mount(2); a directory along it replaced by a link in that
//! window (by whoever may write its parent) would send the mount
//! elsewhere. [`Mountpoint::landed`] looks in /proc/self/mountinfo for
//! a new `fuse.xfull` mount of root's (`user_id=0`: no other user can
//! make one) on the directory checked (the same parent mount, the
//! directory's current name); if none, `mount` refuses and the
//! mount, left dead as xfull exits, is removed by the watcher. What
//! remains is that moment: root's read-only file system over another
//! directory until xfull has looked.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use xfull_core::Error;

/// A directory checked to be a mountpoint: empty, not a link.
#[derive(Debug)]
pub struct Mountpoint {
    /// The directory checked, held to name it again once mounted.
    dir: OwnedFd,
    /// Its path as the kernel names it (links along the path resolved).
    pub path: PathBuf,
    /// Its owner (uid, gid): the mounted tree is shown as theirs.
    pub owner: (u32, u32),
    /// The mount the directory is on (`STATX_MNT_ID`, Linux 5.8), if
    /// the kernel says.
    parent: Option<u64>,
}

/// A line of /proc/self/mountinfo, as much of it as tells mounts apart.
#[derive(Debug, Clone)]
pub struct MountLine {
    id: u64,
    parent: u64,
    /// The mountpoint as mountinfo writes it (octal escapes kept).
    at: Vec<u8>,
    fstype: Vec<u8>,
    /// FUSE's `user_id=` super option: who mounted it. Only root can
    /// make a FUSE mount of user 0 (fusermount3 sets the caller's).
    user: Option<u32>,
}

impl Mountpoint {
    /// Opens `given` without following a final link and checks it is an
    /// empty directory: mounting over files would hide them.
    pub fn check(given: &Path) -> Result<Mountpoint> {
        let refuse = |why: &str| -> anyhow::Error {
            Error::InvalidArgument(format!(
                "mountpoint {}: {why}; give an empty directory",
                given.display()
            ))
            .into()
        };
        let io = |e: Errno| refuse(&std::io::Error::from(e).to_string());
        let link = "a symbolic link (give the directory itself: a link could be \
                    pointed elsewhere between the check and the mount)";
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::open(given, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP => refuse(link),
            Errno::NOTDIR if is_link(given) => refuse(link),
            Errno::NOTDIR => refuse("not a directory"),
            // A FUSE mount whose server is gone: what a killed `xfull
            // mount` of a user other than root leaves (root's are taken
            // away by fusermount3's watcher).
            Errno::NOTCONN => Error::InvalidArgument(format!(
                "mountpoint {0}: a dead FUSE mount is there (a mount whose xfull was killed?); \
                 unmount it with `fusermount3 -u {0}` (as root: `umount {0}`), then mount again",
                given.display()
            ))
            .into(),
            e => io(e),
        })?;
        let st = rustix::fs::fstat(&dir).map_err(io)?;
        for entry in rustix::fs::Dir::read_from(&dir).map_err(io)? {
            let name = entry.map_err(io)?;
            if !matches!(name.file_name().to_bytes(), b"." | b"..") {
                return Err(refuse("not empty"));
            }
        }
        let path = name(&dir)?;
        let parent = rustix::fs::statx(&dir, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
            .ok()
            .filter(|s| StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::MNT_ID))
            .map(|s| s.stx_mnt_id);
        Ok(Mountpoint {
            dir,
            path,
            owner: (st.st_uid, st.st_gid),
            parent,
        })
    }

    /// Ok if a `fuse.xfull` mount of this user that appeared since
    /// `before` is on the directory checked; else an error naming where
    /// the new ones are.
    pub fn landed(&self, before: &[MountLine]) -> Result<()> {
        // The directory's name now, not at the check: renamed since, it
        // is no longer what the path given to fusermount3 led to.
        let here = escaped(&name(&self.dir)?);
        let user = rustix::process::geteuid().as_raw();
        landed(before, &mounts()?, &here, self.parent, user).map_err(|at| {
            anyhow::anyhow!(
                "mountpoint {}: the mount did not land on the directory checked \
                 (new xfull mounts: {at}; was a directory of the path replaced \
                 by a link while mounting?); it is removed as xfull exits",
                self.path.display(),
            )
        })
    }
}

/// Whether a `fuse.xfull` mount of `user` in `after` and not in
/// `before` is at `here` (escaped as mountinfo writes it) on the mount
/// `parent`; else where the new ones are. Another root `xfull mount`
/// may have mounted elsewhere meanwhile (so not "the one new mount");
/// a mount of another user at `here` (theirs, through fusermount3) is
/// not taken for ours.
fn landed(
    before: &[MountLine],
    after: &[MountLine],
    here: &[u8],
    parent: Option<u64>,
    user: u32,
) -> Result<(), String> {
    let new: Vec<&MountLine> = after
        .iter()
        .filter(|m| m.fstype == b"fuse.xfull" && m.user == Some(user))
        .filter(|m| {
            !before
                .iter()
                .any(|b| (b.id, b.parent, &b.at) == (m.id, m.parent, &m.at))
        })
        .collect();
    let on_dir = |m: &&MountLine| m.at == here && parent.is_none_or(|p| p == m.parent);
    match new.as_slice() {
        _ if new.iter().any(on_dir) => Ok(()),
        [] => Err("none".into()),
        _ => Err(new
            .iter()
            .map(|m| String::from_utf8_lossy(&m.at).into_owned())
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// The path of the directory open as `dir`, as the kernel names it.
fn name(dir: &OwnedFd) -> Result<PathBuf> {
    let fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
    std::fs::read_link(&fd).map_err(|e| anyhow::anyhow!("naming the mountpoint by {fd}: {e}"))
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The mounts of this process's namespace now.
pub fn mounts() -> Result<Vec<MountLine>> {
    let text = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| anyhow::anyhow!("reading /proc/self/mountinfo: {e}"))?;
    Ok(text.split(|&b| b == b'\n').filter_map(parse).collect())
}

/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE ...`
fn parse(line: &[u8]) -> Option<MountLine> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse().ok();
    let dash = fields.iter().position(|f| *f == b"-")?;
    Some(MountLine {
        id: num(fields.first()?)?,
        parent: num(fields.get(1)?)?,
        at: fields.get(4)?.to_vec(),
        fstype: fields.get(dash + 1)?.to_vec(),
        user: fields
            .get(dash + 3)
            .and_then(|o| {
                o.split(|&b| b == b',')
                    .find_map(|o| o.strip_prefix(b"user_id="))
            })
            .and_then(|u| std::str::from_utf8(u).ok()?.parse().ok()),
    })
}

/// A path as mountinfo writes it: space, tab, newline and backslash as
/// octal escapes.
fn escaped(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend(format!("\\{b:03o}").bytes()),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_and_escapes() {
        let line = b"45 27 0:40 / /tmp/a\\040b rw,nosuid shared:1 - fuse.xfull xfull rw";
        let m = parse(line).unwrap();
        assert_eq!((m.id, m.parent), (45, 27));
        assert_eq!(m.at, escaped(Path::new("/tmp/a b")));
        assert_eq!(m.fstype, b"fuse.xfull");
        assert!(parse(b"").is_none());
    }

    fn line(id: u64, parent: u64, at: &str, fstype: &str, user: u32) -> MountLine {
        let text = format!("{id} {parent} 0:{id} / {at} rw - {fstype} xfull rw,user_id={user}");
        parse(text.as_bytes()).unwrap()
    }

    /// The check xfull makes after root's mount: a new root xfull mount
    /// must be on the directory checked. A mount sent elsewhere (a link
    /// swapped in while mounting) is named; this cannot be raced
    /// deterministically end to end, so the decision is tested here.
    #[test]
    fn a_mount_is_accepted_only_on_the_directory_checked() {
        let before = [
            line(1, 0, "/", "ext4", 0),
            line(30, 1, "/srv/old", "fuse.xfull", 0),
        ];
        let mut after = before.to_vec();
        after.push(line(31, 1, "/home/u/mnt", "fuse.xfull", 0));
        assert_eq!(landed(&before, &after, b"/home/u/mnt", Some(1), 0), Ok(()));
        assert_eq!(landed(&before, &after, b"/home/u/mnt", None, 0), Ok(()));
        // Same path, another parent mount: not the directory checked.
        assert!(landed(&before, &after, b"/home/u/mnt", Some(7), 0).is_err());
        assert_eq!(
            landed(&before, &after, b"/home/u/other", Some(1), 0),
            Err("/home/u/mnt".into())
        );
        // Another root xfull mount at the same time, elsewhere.
        after.push(line(32, 1, "/srv/b", "fuse.xfull", 0));
        assert_eq!(landed(&before, &after, b"/home/u/mnt", Some(1), 0), Ok(()));
        // Ours sent to /etc; user 1000's own xfull-named mount on the
        // directory checked is not ours.
        let after = [
            line(1, 0, "/", "ext4", 0),
            line(33, 1, "/etc", "fuse.xfull", 0),
            line(34, 1, "/home/u/mnt", "fuse.xfull", 1000),
        ];
        assert_eq!(
            landed(&before, &after, b"/home/u/mnt", Some(1), 0),
            Err("/etc".into())
        );
        assert_eq!(
            landed(&before, &before, b"/srv/old", Some(1), 0),
            Err("none".into())
        );
    }
}
