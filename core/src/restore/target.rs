//! Where a restore may write, decided before anything is fetched.
//!
//! A restore usually runs as root, in directories other users may write,
//! so the target is judged by what is at the path itself, never by what
//! a link there points to: a symbolic link is refused (except one that
//! leads to a block device, as `/dev/vg/lv` names do, and only with
//! `--force`), an existing regular file needs `--overwrite`, a block
//! device `--force`, and character devices, fifos, sockets and
//! directories are refused. These checks give early, clear errors; the
//! race-free guarantees come from how the target is opened and published
//! (`partial.rs`, [`open_device`]).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output: open, writable, and neither a terminal nor
    /// `/dev/null`.
    Stdout,
    /// A regular file, written under a unique temporary name in its
    /// directory and published under its name once complete. With
    /// `overwrite`, an existing regular file there is replaced.
    File { path: PathBuf, overwrite: bool },
    /// A block device, written in place (`--force`).
    Device(PathBuf),
}

/// What the caller allows beyond creating a new file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// Replace an existing regular file (`--overwrite`).
    pub overwrite: bool,
    /// Write onto a block device (`--force`).
    pub force: bool,
}

impl Target {
    /// Interprets `-` or a path, allowing only a new file.
    pub fn parse(to: &str) -> Result<Target> {
        Target::parse_allowing(to, Allow::default())
    }

    /// Interprets `-` or a path under `allow`.
    pub fn parse_allowing(to: &str, allow: Allow) -> Result<Target> {
        if to == "-" {
            check_stdout()?;
            return Ok(Target::Stdout);
        }
        let path = PathBuf::from(to);
        if to.is_empty() || to.ends_with('/') || path.file_name().is_none() {
            return Err(Error::InvalidArgument(format!(
                "restore target {to:?} is not a file name: give the path of a new image file"
            )));
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) => existing(path, m.file_type(), allow),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !dir.is_dir() {
                    return Err(refused(
                        &path,
                        std::io::ErrorKind::NotFound,
                        format!("directory {} does not exist", dir.display()),
                    ));
                }
                Ok(Target::File {
                    path,
                    overwrite: allow.overwrite,
                })
            }
            Err(e) => Err(target_err(&path, e)),
        }
    }
}

/// Judges what already exists at `path` (not following a link there).
fn existing(path: PathBuf, ft: std::fs::FileType, allow: Allow) -> Result<Target> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        return linked(path, allow);
    }
    if ft.is_block_device() {
        return device(path, allow);
    }
    if ft.is_file() {
        if allow.overwrite {
            return Ok(Target::File {
                path,
                overwrite: true,
            });
        }
        return Err(refused(
            &path,
            std::io::ErrorKind::AlreadyExists,
            "already exists; refusing to overwrite it (add --overwrite to replace it)".into(),
        ));
    }
    if ft.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "restore target {} is a directory: give the path of an image file in it",
            path.display()
        )));
    }
    let what = if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a fifo (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(Error::InvalidArgument(format!(
        "restore target {} is {what}, not an image file or a block device; to check that \
         a point restores, use `xfull verify --read-data POINT`; to stream the image, \
         use --to -",
        path.display()
    )))
}

/// A symbolic link at the target: followed only to a block device, with
/// `--force` (volume managers name devices by links); the device it
/// leads to is what gets written, and named in messages.
fn linked(path: PathBuf, allow: Allow) -> Result<Target> {
    use std::os::unix::fs::FileTypeExt;
    let resolved = std::fs::canonicalize(&path).ok();
    let dev = resolved
        .filter(|r| std::fs::symlink_metadata(r).is_ok_and(|m| m.file_type().is_block_device()));
    match dev {
        Some(dev) => device(dev, allow),
        None => Err(refused(
            &path,
            std::io::ErrorKind::AlreadyExists,
            "is a symbolic link; a restore never writes through or replaces one \
             (give the path of a new file, or remove the link)"
                .into(),
        )),
    }
}

fn device(path: PathBuf, allow: Allow) -> Result<Target> {
    if allow.force {
        return Ok(Target::Device(path));
    }
    Err(Error::InvalidArgument(format!(
        "restore target {} is a block device: restoring onto it destroys what it holds; \
         add --force to write it",
        path.display()
    )))
}

/// Refuses a stdout nobody reads: closed (the Rust runtime then puts
/// `/dev/null` there), `/dev/null` itself, read-only, or a terminal.
fn check_stdout() -> Result<()> {
    let stdout = std::io::stdout();
    let fd = stdout.as_fd();
    let bad = |why: &str| refused(Path::new("-"), std::io::ErrorKind::InvalidInput, why.into());
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|_| bad("stdout is closed"))?;
    if (flags & (OFlags::WRONLY | OFlags::RDWR)).is_empty() {
        return Err(bad("stdout is open for reading only"));
    }
    let st = rustix::fs::fstat(fd).map_err(|e| target_err(Path::new("-"), e.into()))?;
    let rdev = st.st_rdev;
    if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
        && (rustix::fs::major(rdev), rustix::fs::minor(rdev)) == (1, 3)
    {
        return Err(bad(
            "stdout is closed or /dev/null: nothing would receive the image (to check \
             that a point restores, use `xfull verify --read-data POINT`)",
        ));
    }
    if std::io::IsTerminal::is_terminal(&stdout) {
        return Err(bad(
            "stdout is a terminal: pipe the image into a command or redirect it to a file",
        ));
    }
    Ok(())
}

/// Opens a block device for writing, exclusively: the kernel refuses
/// while it is mounted or held by another exclusive user (and keeps it
/// from being mounted while the restore runs). Refuses a device smaller
/// than `size`.
pub(super) fn open_device(path: &Path, size: u64) -> Result<File> {
    // NOFOLLOW: the path was resolved when parsed; NONBLOCK: should it
    // have become a fifo since, opening it must not hang.
    let flags =
        OFlags::WRONLY | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        Errno::BUSY => refused(
            path,
            std::io::ErrorKind::ResourceBusy,
            "is in use (mounted, or held by another program); refusing to write it".into(),
        ),
        e => target_err(path, e.into()),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| target_err(path, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
        return Err(refused(
            path,
            std::io::ErrorKind::InvalidInput,
            "is no longer a block device; refusing to write it".into(),
        ));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::WRONLY).map_err(|e| target_err(path, e.into()))?;
    let mut file = File::from(fd);
    let dev_size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| target_err(path, e))?;
    if dev_size < size {
        return Err(Error::InvalidArgument(format!(
            "block device {} holds {dev_size} bytes, the disk needs {size}",
            path.display()
        )));
    }
    Ok(file)
}

/// A target refused for a reason of ours, worded for the user.
pub(super) fn refused(path: &Path, kind: std::io::ErrorKind, why: String) -> Error {
    target_err(path, std::io::Error::new(kind, why))
}

pub(super) fn target_err(path: &Path, error: std::io::Error) -> Error {
    Error::Target {
        path: path.to_path_buf(),
        error,
    }
}
