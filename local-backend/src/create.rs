//! `xfull init` on a local directory: a new or empty directory only.
//!
//! A repository's directory belongs to xfull: gc deletes unreferenced
//! objects and stale staging files in it. Initialising one inside a
//! directory that already holds someone's files would put those files at
//! the mercy of that cleanup, and mix them with objects, so a directory
//! that is not empty is refused before anything is written to it. A
//! directory holding an xfull `config` is an existing repository and says
//! so; `init` never resumes or adopts anything.

use std::path::{Path, PathBuf};

use rustix::fs::Dir;
use xfull_core::backend::BackendError;

use crate::fs::{DIR, Root};

/// How many names a "not empty" message shows.
const SHOWN: usize = 5;

/// Why a directory cannot become a new repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The directory holds files (of someone else, or of another program).
    #[error(
        "{} is not empty (holds {holds}); xfull init needs a new or empty directory",
        dir.display()
    )]
    NotEmpty { dir: PathBuf, holds: String },

    /// The directory is already an xfull repository.
    #[error("a repository already exists at {}; refusing to overwrite it", dir.display())]
    RepositoryExists { dir: PathBuf },

    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The first bytes of an xfull `config` object (its frame's magic: "XF",
/// kind `R`; see `xfull_core::frame`).
const CONFIG_MAGIC: &[u8] = b"XFR";

impl Root {
    /// Refuses a directory with anything in it.
    pub(crate) fn check_empty(&self, dir: &Path) -> Result<(), CreateError> {
        let fd = self.open_beneath("", DIR).map_err(|e| self.other("", e))?;
        let mut names = Vec::new();
        for entry in Dir::new(fd).map_err(|e| self.other("", e))? {
            let entry = entry.map_err(|e| self.other("", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        if names.iter().any(|n| n == xfull_core::keys::CONFIG) && self.holds_config()? {
            return Err(CreateError::RepositoryExists {
                dir: dir.to_path_buf(),
            });
        }
        names.sort();
        let more = names.len().saturating_sub(SHOWN);
        names.truncate(SHOWN);
        let mut holds = names.join(", ");
        if more > 0 {
            holds.push_str(&format!(" and {more} more"));
        }
        Err(CreateError::NotEmpty {
            dir: dir.to_path_buf(),
            holds,
        })
    }

    /// Whether `config` is an xfull config. Read like any object, so a
    /// FIFO or a link there is reported as damage, not waited on.
    fn holds_config(&self) -> Result<bool, BackendError> {
        let key = xfull_core::keys::CONFIG;
        let st = self.head(key)?;
        if st.size < CONFIG_MAGIC.len() as u64 {
            return Ok(false);
        }
        let head = self.get_range(key, 0..CONFIG_MAGIC.len() as u64)?;
        Ok(head.as_ref() == CONFIG_MAGIC)
    }
}
