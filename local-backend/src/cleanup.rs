//! Removing the staging files of killed writers (gc's last step).
//!
//! A writer killed between creating its staging file and publishing it
//! leaves `NAME#<digits>` next to the key (`staging.rs`). Only those are
//! removed: in the repository's own directories, at the depth where its
//! objects live, named `<component>#<digits>` where the component makes a
//! key of the key space (`xfull_core::keys`), regular files older than the
//! cutoff. A user's `mydocs/meeting#1`, anything through a symbolic link,
//! and anything on another file system mounted inside are never touched.

use std::os::fd::OwnedFd;

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, Dir, FileType, Mode};
use rustix::io::Errno;
use xfull_core::backend::BackendError;
use xfull_core::crypto::slot::{SLOTS, parse_slot_key};
use xfull_core::keys;

use crate::fs::{DIR, Root, is_component, kind_of, mtime_of};
use crate::staging::staged_name;

/// The repository's directories where writers stage, each with the number
/// of directory levels between it and its objects (`chunks/<fan>/<id>`:
/// one).
fn places() -> [(String, usize); 14] {
    [
        (String::new(), 0),
        (SLOTS.into(), 0),
        (keys::GC.into(), 0),
        (format!("{}{}", keys::DAMAGE, keys::CHUNKS), 1),
        (format!("{}{}", keys::DAMAGE, keys::NODES), 1),
        (keys::CHUNKS.into(), 1),
        (keys::PACKS.into(), 1),
        (keys::INDEX.into(), 0),
        (keys::NODES.into(), 1),
        (keys::POINTS.into(), 1),
        (format!("{}{}", keys::TRASH, keys::POINTS), 1),
        (keys::LEASES.into(), 0),
        (keys::SWEEPS.into(), 0),
        (keys::DONE.into(), 0),
    ]
}

/// True for the keys xfull writes (so for the names its staging files
/// stand for).
fn is_object_key(key: &str) -> bool {
    key == keys::CONFIG
        || keys::parse_content(key).is_some()
        || keys::parse_pack(key).is_some()
        || keys::parse_index(key).is_some()
        || keys::parse_index_in(key).is_some()
        || parse_slot_key(key).is_some()
        || keys::parse_damage(key).is_some()
        || key == keys::GC_PROBE
        || keys::parse_point(key).is_some()
        || key
            .strip_prefix(keys::TRASH)
            .and_then(keys::parse_point)
            .is_some()
        || keys::parse_seq(key).is_some()
        || key
            .strip_prefix(keys::LEASES)
            .is_some_and(|s| is_component(s.as_bytes()))
}

impl Root {
    /// Removes staging files modified before `before`; returns how many.
    /// Writers run meanwhile: what vanishes between the listing and the
    /// look at it is skipped.
    pub(crate) fn remove_incomplete(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let dev = rustix::fs::fstat(self.fd())
            .map_err(|e| self.other("", e))?
            .st_dev;
        let mut n = 0;
        for (base, levels) in places() {
            let path = base.trim_end_matches('/');
            let fd = match self.open_beneath(path, DIR) {
                Ok(fd) => fd,
                // Missing, or not a directory of ours: nothing staged there.
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                Err(e) => return Err(self.other(path, e)),
            };
            n += self.clean(fd, &base, levels, dev, before)?;
        }
        Ok(n)
    }

    /// Cleans the directory `fd` holding keys `base...`, `levels` above
    /// the objects.
    fn clean(
        &self,
        fd: OwnedFd,
        base: &str,
        levels: usize,
        dev: u64,
        before: DateTime<Utc>,
    ) -> Result<u64, BackendError> {
        let here = base.trim_end_matches('/');
        let st = rustix::fs::fstat(&fd).map_err(|e| self.other(here, e))?;
        if st.st_dev != dev {
            // Another file system mounted inside: not ours to clean.
            return Ok(0);
        }
        let mut dir = Dir::new(fd).map_err(|e| self.other(here, e))?;
        let mut n = 0;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| self.other(here, e))?;
            let Ok(name) = std::str::from_utf8(entry.file_name().to_bytes()) else {
                continue;
            };
            // Only names that can matter are looked at.
            let wanted = if levels > 0 {
                is_component(name.as_bytes())
            } else {
                staged_name(name).is_some_and(|staged| {
                    is_component(staged.as_bytes()) && is_object_key(&format!("{base}{staged}"))
                })
            };
            if !wanted {
                continue;
            }
            let at = dir.fd().map_err(|e| self.other(here, e))?;
            let st = match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.other(&format!("{base}{name}"), e)),
            };
            if levels > 0 {
                if kind_of(&st) != FileType::Directory {
                    continue;
                }
                let sub = match rustix::fs::openat(at, name, DIR, Mode::empty()) {
                    Ok(sub) => sub,
                    // Gone, or swapped for a link, since the stat.
                    Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                    Err(e) => return Err(self.other(&format!("{base}{name}"), e)),
                };
                n += self.clean(sub, &format!("{base}{name}/"), levels - 1, dev, before)?;
            } else if kind_of(&st) == FileType::RegularFile && mtime_of(&st) < before {
                match rustix::fs::unlinkat(at, name, AtFlags::empty()) {
                    Ok(()) => n += 1,
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(self.other(&format!("{base}{name}"), e)),
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_are_those_of_the_key_space() {
        let hex = format!("ab{}", "0".repeat(62));
        for k in [
            "config".to_string(),
            format!("chunks/ab/{hex}"),
            format!("nodes/ab/{hex}"),
            "points/vm1/20261125T194155Z-3fa2".into(),
            "trash/points/vm1/20261125T194155Z-3fa2".into(),
            "leases/20261125T194155Z-0123456789abcdef".into(),
            "gc/sweeps/0000000000000001".into(),
            "gc/done/0000000000000001".into(),
        ] {
            assert!(is_object_key(&k), "{k}");
        }
        for k in [
            "notes".to_string(),
            "mydocs/meeting".into(),
            format!("chunks/cd/{hex}"),
            "chunks/ab/junk".into(),
            "points/vm1/junk".into(),
            "gc/sweeps/12".into(),
            "leases/a b".into(),
        ] {
            assert!(!is_object_key(&k), "{k}");
        }
    }
}
