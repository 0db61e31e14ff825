//! Room on the repository's file system, and the part of it kept back.
//!
//! A backup that fills the disk stops there, leaving its packs behind as
//! garbage; the command that removes garbage, gc (and prune, which runs
//! it), must write before it deletes (a permission check, its marker,
//! replacement index objects), so on a full disk it failed at its first
//! write and the repository stayed full (seen on a 60 MB file system).
//! So writes of chunk data (packs: `ObjectClass::Data`) leave a reserve
//! free, which metadata writes (markers, leases, nodes, manifests, index
//! objects) may use: a backup fails with a clear error while gc and prune
//! can still run and free space.

use rustix::fs::StatVfs;
use rustix::io::Errno;
use xfull_core::backend::BackendError;

use crate::fs::{Root, io};

/// The smallest and largest reserve: 64 MiB holds gc's markers and the
/// index objects a sweep over some 800 k chunks rewrites (80 bytes an
/// entry); 1 GiB covers ten times that.
const RESERVE_MIN: u64 = 64 << 20;
const RESERVE_MAX: u64 = 1 << 30;

/// The reserve on a file system of `total` bytes: 1%, within
/// [`RESERVE_MIN`] and [`RESERVE_MAX`], and never more than a tenth of a
/// small file system.
pub(crate) fn reserve_for(total: u64) -> u64 {
    (total / 100)
        .clamp(RESERVE_MIN, RESERVE_MAX)
        .min(total / 10)
}

/// Free space as an unprivileged writer sees it, and the reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Room {
    pub(crate) free: u64,
    pub(crate) reserve: u64,
}

impl Room {
    fn of(st: &StatVfs) -> Room {
        let unit = st.f_frsize.max(1);
        let total = st.f_blocks.saturating_mul(unit);
        Room {
            free: st.f_bavail.saturating_mul(unit),
            reserve: reserve_for(total),
        }
    }

    /// Bytes chunk data may still take.
    pub(crate) fn for_data(self) -> u64 {
        self.free.saturating_sub(self.reserve)
    }
}

impl Root {
    /// The room on the repository's file system now.
    pub(crate) fn room(&self) -> Result<Room, BackendError> {
        let st = rustix::fs::fstatvfs(self.fd()).map_err(|e| BackendError::Other {
            location: self.location.clone(),
            message: format!("cannot read the free space: {}", io(e)),
        })?;
        Ok(Room::of(&st))
    }

    /// Refuses a write of `len` bytes of chunk data under `key` that would
    /// leave less than the reserve free.
    pub(crate) fn check_data_room(&self, key: &str, len: u64) -> Result<(), BackendError> {
        let room = self.room()?;
        if len <= room.for_data() {
            return Ok(());
        }
        Err(BackendError::NoSpace {
            location: self.location.clone(),
            key: key.to_string(),
            message: format!(
                "{} free, of which {} stays free for gc and prune; run `xfull prune` or \
                 `xfull gc` to free space, or give the file system more",
                mib(room.free),
                mib(room.reserve)
            ),
        })
    }

    /// A write that failed for lack of space (ENOSPC, or a quota's
    /// EDQUOT) as [`BackendError::NoSpace`]; `None` for other errors.
    pub(crate) fn no_space(&self, key: &str, e: Errno) -> Option<BackendError> {
        (e == Errno::NOSPC || e == Errno::DQUOT).then(|| BackendError::NoSpace {
            location: self.location.clone(),
            key: key.to_string(),
            message: format!(
                "{}: the file system is full (free some space; `xfull gc` then removes what \
                 failed backups left)",
                io(e)
            ),
        })
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_percent_within_bounds_and_small_disks_keep_most() {
        assert_eq!(reserve_for(60 << 20), 6 << 20);
        assert_eq!(reserve_for(1 << 30), RESERVE_MIN);
        assert_eq!(reserve_for(10 << 30), (10u64 << 30) / 100);
        assert_eq!(reserve_for(4 << 40), RESERVE_MAX);
        assert_eq!(reserve_for(0), 0);
    }

    /// The repository's own file system answers, and a write larger than
    /// any disk is refused as no space, naming the key and the reserve.
    #[test]
    fn a_write_larger_than_the_room_is_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let room = root.room().unwrap();
        assert!(room.free > 0 && room.reserve > 0, "{room:?}");
        root.check_data_room("packs/ab/cd", 1).unwrap();
        let e = root.check_data_room("packs/ab/cd", u64::MAX).unwrap_err();
        assert!(e.is_no_space(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("packs/ab/cd") && msg.contains("stays free for gc"),
            "{msg}"
        );
    }
}
