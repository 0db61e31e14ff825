//! The partial image of a file restore, and its publication.
//!
//! The image is written to a new file with a unique name in the target's
//! directory, created exclusively and never through a link
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`), mode 0600 while it is incomplete; every
//! later step works relative to that directory's descriptor. When the
//! image is complete it gets the usual mode (0666 less the umask) and is
//! renamed to the target's name with `RENAME_NOREPLACE`, so a file that
//! appeared there meanwhile (another restore, another program) is left
//! alone and this restore fails instead; file systems without that flag
//! get a hard link (which never replaces either) and an unlink. With
//! `--overwrite`, a plain rename replaces an existing regular file
//! atomically; anything else found there is refused. A name is only ever
//! replaced as a directory entry: nothing is written through a link.
//!
//! A partial image that is not published is removed (its own name only,
//! and only while that name still holds this restore's file).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::stale;
use super::target::{refused, target_err};
use crate::error::{Error, Result};

/// A partial image being written; removed when dropped unless published.
#[derive(Debug)]
pub(super) struct Partial {
    /// The directory that holds the target, opened once.
    dir: OwnedFd,
    dir_path: PathBuf,
    /// This restore's temporary name in `dir`.
    name: String,
    /// The target's name in `dir`.
    target: OsString,
    /// The target as the user named it, for messages.
    path: PathBuf,
    file: File,
    /// `name` still holds this restore's file (so it is ours to remove).
    live: bool,
}

impl Partial {
    /// Creates the partial image of `path`, `size` bytes of holes.
    pub(super) fn create(path: &Path, size: u64) -> Result<Partial> {
        let target = path
            .file_name()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{} is not a file name", path.display()))
            })?
            .to_os_string();
        let dir_path = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = rustix::fs::open(
            &dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| target_err(&dir_path, e.into()))?;
        // A short name: it must fit wherever the target's name fits.
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..16 {
            let name = format!(".xfull-{:016x}.partial", rand::random::<u64>());
            let fd = match rustix::fs::openat(
                &dir,
                &name,
                flags | OFlags::WRONLY,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(target_err(&dir_path.join(&name), e.into())),
            };
            // Held until this process ends, however it ends: it tells
            // the next restore here that this file is not abandoned
            // (`stale.rs`, which removes nothing where locks may not be
            // seen by every writer). Held by someone else this instant
            // (another restore's clean-up, which has just been judging
            // the file): that name is theirs to decide on; take another.
            if let Err(Errno::WOULDBLOCK) = stale::lock(&fd) {
                if rustix::fs::fstat(&fd).is_ok_and(|mine| stale::names_file(&dir, &name, &mine)) {
                    let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
                }
                continue;
            }
            let p = Partial {
                dir,
                dir_path,
                name,
                target,
                path: path.to_path_buf(),
                file: File::from(fd),
                live: true,
            };
            // Zero runs are never written: they stay holes.
            p.file.set_len(size).map_err(|e| target_err(&p.path(), e))?;
            return Ok(p);
        }
        Err(refused(
            &dir_path,
            std::io::ErrorKind::AlreadyExists,
            "no free temporary name for the partial image".into(),
        ))
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// The partial image's path, for messages.
    pub(super) fn path(&self) -> PathBuf {
        self.dir_path.join(&self.name)
    }

    /// A failed write of the image (a full disk, most often), named by
    /// the target the user gave: the partial file is removed when the
    /// restore fails, so its name alone pointed at nothing.
    pub(super) fn write_error(&self, e: std::io::Error) -> Error {
        let why = format!("{e} (writing its partial image {})", self.path().display());
        target_err(&self.path, std::io::Error::new(e.kind(), why))
    }

    /// The target as the user named it.
    pub(super) fn target(&self) -> &Path {
        &self.path
    }

    /// Gives the image its final mode and name; with `sync`, makes both
    /// durable first and after. On failure the partial image is removed.
    pub(super) fn publish(mut self, overwrite: bool, sync: bool) -> Result<()> {
        if sync {
            self.file
                .sync_all()
                .map_err(|e| target_err(&self.path(), e))?;
        }
        let mode = Mode::from_raw_mode(0o666 & !umask());
        rustix::fs::fchmod(&self.file, mode).map_err(|e| target_err(&self.path(), e.into()))?;
        self.check_still_ours()?;
        if overwrite {
            self.replace()?;
        } else {
            self.rename_noreplace()?;
        }
        self.live = false;
        if sync {
            // Make the rename itself durable.
            rustix::fs::fsync(&self.dir).map_err(|e| target_err(&self.dir_path, e.into()))?;
        }
        Ok(())
    }

    /// Removes the partial image now; returns its path if it was removed.
    pub(super) fn discard(mut self) -> Option<PathBuf> {
        self.remove().then(|| self.path())
    }

    /// As if the process were killed: the file closed (its lock gone),
    /// and left where it is.
    #[cfg(test)]
    pub(super) fn die(mut self) {
        self.live = false;
    }

    fn remove(&mut self) -> bool {
        let live = std::mem::replace(&mut self.live, false);
        live && rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty()).is_ok()
    }

    /// Someone who may write the directory could have put another file
    /// under our temporary name; publishing that would publish theirs.
    fn check_still_ours(&mut self) -> Result<()> {
        let mine = rustix::fs::fstat(&self.file).map_err(|e| target_err(&self.path(), e.into()))?;
        if stale::names_file(&self.dir, &self.name, &mine) {
            return Ok(());
        }
        self.live = false;
        Err(refused(
            &self.path(),
            std::io::ErrorKind::Other,
            "the partial image was removed or replaced by someone else during the restore; \
             nothing was published"
                .into(),
        ))
    }

    /// `--overwrite`: replaces a regular file (or takes a free name).
    fn replace(&self) -> Result<()> {
        match rustix::fs::statat(&self.dir, &self.target, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => self.rename_noreplace(),
            Err(e) => Err(target_err(&self.path, e.into())),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                rustix::fs::renameat(&self.dir, &self.name, &self.dir, &self.target)
                    .map_err(|e| target_err(&self.path, e.into()))
            }
            Ok(_) => Err(refused(
                &self.path,
                std::io::ErrorKind::AlreadyExists,
                "is no longer a regular file (it was replaced during the restore); left alone, \
                 and this restore's image was discarded"
                    .into(),
            )),
        }
    }

    fn rename_noreplace(&self) -> Result<()> {
        let appeared = || {
            refused(
                &self.path,
                std::io::ErrorKind::AlreadyExists,
                "already exists: it appeared while this restore ran (another restore or \
                 program created it); it was left alone and this restore's image discarded"
                    .into(),
            )
        };
        let (dir, name, target) = (&self.dir, &self.name, &self.target);
        match rustix::fs::renameat_with(dir, name, dir, target, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => Err(appeared()),
            // The file system cannot rename without replacing: a hard
            // link never replaces either.
            Err(Errno::INVAL | Errno::NOSYS) => {
                match rustix::fs::linkat(dir, name, dir, target, AtFlags::empty()) {
                    Ok(()) => {
                        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
                        Ok(())
                    }
                    Err(Errno::EXIST) => Err(appeared()),
                    Err(e) => Err(target_err(&self.path, e.into())),
                }
            }
            Err(e) => Err(target_err(&self.path, e.into())),
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The process's umask, read without changing it (`umask(2)` can only be
/// read by setting it, which would race with other threads creating
/// files); the usual 022 if `/proc` is not there.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
        & 0o777
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// The names in `dir`, sorted (also for `stale`'s tests).
    pub(in crate::restore) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publishing_never_replaces_a_file_that_appeared_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("out.img");
        let p = Partial::create(&to, 4).unwrap();
        p.file().write_all_at(b"mine", 0).unwrap();
        assert!(p.name.len() < 32, "short name: {}", p.name);
        std::fs::write(&to, b"theirs").unwrap();
        let err = p.publish(false, true).unwrap_err().to_string();
        assert!(err.contains("appeared while this restore ran"), "{err}");
        assert_eq!(std::fs::read(&to).unwrap(), b"theirs");
        assert_eq!(names(dir.path()), ["out.img"], "partial image removed");
    }

    #[test]
    fn overwrite_replaces_a_regular_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("out.img");
        std::fs::write(&to, b"old").unwrap();
        let p = Partial::create(&to, 4).unwrap();
        p.file().write_all_at(b"mine", 0).unwrap();
        p.publish(true, false).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"mine");

        // A link swapped in during the restore is neither followed nor
        // replaced.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = Partial::create(&to, 4).unwrap();
        std::fs::remove_file(&to).unwrap();
        std::os::unix::fs::symlink(&victim, &to).unwrap();
        assert!(p.publish(true, false).is_err());
        assert!(std::fs::symlink_metadata(&to).unwrap().is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(names(dir.path()), ["out.img", "victim"]);
    }

    #[test]
    fn a_partial_image_replaced_by_someone_else_is_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("out.img");
        let p = Partial::create(&to, 4).unwrap();
        let planted = p.path();
        std::fs::remove_file(&planted).unwrap();
        std::fs::write(&planted, b"planted").unwrap();
        assert!(p.publish(false, false).is_err());
        assert!(!to.exists());
        // Not ours any more: left for its owner to deal with.
        assert_eq!(std::fs::read(&planted).unwrap(), b"planted");
    }
}
