//! Creating the server's unix socket so that only its owner can ever
//! connect. bind(2) creates the socket with mode 0777 less the umask, and
//! a chmod after it leaves a moment in which another local user may
//! connect and read disks. The umask cannot be narrowed for the call: it
//! is the process's, and other threads create files meanwhile. So the
//! socket is bound in a fresh private directory (mode 0700, next to the
//! requested path so that a rename can move it), restricted to 0600
//! there, and only then renamed into place.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use rustix::fs::{CWD, RenameFlags, renameat_with};
use tokio::net::UnixListener;

/// The private directories' names start so (a crash between creating
/// one and removing it leaves it behind: a directory of ours holding a
/// dead socket, safe to remove).
pub(crate) const TEMP_PREFIX: &str = ".xfull-sock-";

/// Binds a listener at `path`, mode 0600 from the moment the path exists.
/// An existing file at `path` (a symlink too, even dangling) is never
/// replaced: the error is `AlreadyExists`. On any error nothing is left.
pub(crate) fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let name_missing = || io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
    path.file_name().ok_or_else(name_missing)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Refused early (with the same error the rename would give) so that
    // the common mistake, a stale socket, costs no directory.
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(exists());
    }
    let dir = PrivateDir::create(parent)?;
    let temp = dir.path.join("s");
    let listener = UnixListener::bind(&temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    move_into_place(&temp, path)?;
    Ok(listener)
}

fn exists() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "a file already exists there (remove a stale socket first)",
    )
}

/// Renames `from` to `to` unless `to` exists (never following a symlink
/// there). Filesystems without `RENAME_NOREPLACE` get a hard link instead,
/// which also fails on an existing name; `from` is then removed with the
/// private directory.
fn move_into_place(from: &Path, to: &Path) -> io::Result<()> {
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(exists()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => std::fs::hard_link(from, to)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => exists(),
                _ => e,
            }),
        Err(e) => Err(e.into()),
    }
}

/// A directory only we can enter, removed (with what is left in it) when
/// dropped, on success and on every error alike.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(parent: &Path) -> io::Result<PrivateDir> {
        let mut tries = 0;
        loop {
            let suffix: u32 = rand::rng().random();
            let path = parent.join(format!("{TEMP_PREFIX}{suffix:08x}"));
            // mkdir never follows a symlink at its last component: an
            // existing name, whatever it is, is AlreadyExists.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // Only what bind_private put there: the socket, if not moved.
        let _ = std::fs::remove_file(self.path.join("s"));
        let _ = std::fs::remove_dir(&self.path);
    }
}
