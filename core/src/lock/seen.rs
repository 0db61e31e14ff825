//! The client's record of repositories it has seen with object lock, so
//! that one whose config later says "no lock", a weaker mode or a shorter
//! lock period is refused instead of receiving backups that anyone with
//! delete rights could remove. The config is plain and unauthenticated,
//! and on a versioned bucket a PUT of `config` adds a version above the
//! locked one, so the store alone cannot refuse such a rewrite; a bucket
//! policy that makes `config` create-only for every role
//! (docs/least-privilege.md) and this record are the defences.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::client_record::{Records, state_dir};
use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::keys;
use crate::lock::{LockMode, ObjectLock};

const HEADER: &str = "xfull: a repository seen with object lock (record v1)\n";

/// What a record keeps: the lock's mode and period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    mode: LockMode,
    retain_secs: u64,
}

impl Seen {
    fn of(lock: &ObjectLock) -> Self {
        Seen {
            mode: lock.mode,
            retain_secs: lock.retain_secs,
        }
    }

    /// Whether `now` protects at least as much as this: compliance is
    /// stronger than governance (which some credentials may bypass), and
    /// a longer period than a shorter one. The generation length is not
    /// compared: it only decides how much longer than the period objects
    /// stay locked.
    fn kept_by(&self, now: Option<&ObjectLock>) -> bool {
        let Some(now) = now else { return false };
        let mode_kept = self.mode == LockMode::Governance || now.mode == LockMode::Compliance;
        mode_kept && now.retain_secs >= self.retain_secs
    }

    fn body(&self, config: &RepoConfig, location: &str) -> String {
        format!(
            "repo_id {:?}\nlocation {location:?}\nmode {}\nretain_secs {}\n",
            config.repo_id, self.mode, self.retain_secs
        )
    }

    fn parse(body: &str) -> Option<Self> {
        let field = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        };
        Some(Seen {
            mode: LockMode::parse(field("mode")?)?,
            retain_secs: field("retain_secs")?.parse().ok()?,
        })
    }

    fn describe(&self) -> String {
        describe(self.mode, self.retain_secs)
    }
}

fn describe(mode: LockMode, secs: u64) -> String {
    if secs.is_multiple_of(86_400) {
        format!("{mode} lock of {} days", secs / 86_400)
    } else {
        format!("{mode} lock of {secs} s")
    }
}

/// The records of one user (one state directory).
#[derive(Clone, Debug)]
pub struct SeenLocked {
    records: Records,
}

impl SeenLocked {
    /// Records kept in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        SeenLocked {
            records: Records::new(dir, HEADER),
        }
    }

    /// The user's records: `locked/` in the state directory; `None` when
    /// there is none.
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<Self> {
        Some(Self::at(state_dir(var)?.join("locked")))
    }

    pub fn dir(&self) -> &Path {
        self.records.dir()
    }

    fn paths(&self, location: &str, config: &RepoConfig) -> [PathBuf; 2] {
        [
            self.records.by_id(&config.repo_id),
            self.records.by_location(location),
        ]
    }

    fn read(&self, path: &Path) -> Result<Option<Seen>> {
        let Some(body) = self.records.read(path)? else {
            return Ok(None);
        };
        Seen::parse(&body)
            .map(Some)
            .ok_or_else(|| Error::ClientRecord {
                path: path.to_path_buf(),
                reason: "its mode or lock period cannot be read".into(),
            })
    }

    /// Refuses `config` at `location` when this client has seen the
    /// repository (by id or by location) with a lock it no longer has, or
    /// a stronger one: damage naming the config. Any record that cannot be
    /// read is an error.
    pub fn check(&self, location: &str, config: &RepoConfig) -> Result<()> {
        for path in self.paths(location, config) {
            let Some(seen) = self.read(&path)? else {
                continue;
            };
            if seen.kept_by(config.object_lock.as_ref()) {
                continue;
            }
            let now = match &config.object_lock {
                None => "no object lock".to_string(),
                Some(l) => format!("a {}", describe(l.mode, l.retain_secs)),
            };
            return Err(Error::corrupt(
                keys::CONFIG,
                format!(
                    "the config of the repository at {location} says it has {now}, but this \
                     client has seen it with a {} (record {}): the config may have been \
                     replaced to stop locking new backups; if the repository was made again \
                     this way on purpose, remove that record",
                    seen.describe(),
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Records the lock of the repository of `config` at `location`
    /// (nothing to do for one without); call after [`Self::check`], so a
    /// record is only ever replaced by an equal or stronger lock.
    pub fn record(&self, location: &str, config: &RepoConfig) -> Result<()> {
        let Some(lock) = &config.object_lock else {
            return Ok(());
        };
        let seen = Seen::of(lock);
        for path in self.paths(location, config) {
            if self.read(&path)? != Some(seen) {
                self.records.write(&path, &seen.body(config, location))?;
            }
        }
        Ok(())
    }

    /// Forgets the location's record: `init` made a new repository there,
    /// without object lock, on purpose.
    pub fn forget_location(&self, location: &str) -> Result<()> {
        self.records.remove(&self.records.by_location(location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::config::DEFAULT_SEGMENT_SIZE;

    fn config(id: &str, lock: Option<(LockMode, u64)>) -> RepoConfig {
        let mut c = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
        c.repo_id = id.into();
        c.object_lock = lock.map(|(mode, retain_secs)| ObjectLock {
            mode,
            retain_secs,
            generation_secs: 86_400,
        });
        c
    }

    fn is_downgrade(e: &Error) -> bool {
        matches!(e, Error::Corrupt { key, reason } if key == keys::CONFIG
            && reason.contains("seen it with a"))
    }

    const DAYS_30: u64 = 30 * 86_400;

    #[test]
    fn a_repository_seen_locked_is_refused_when_its_lock_is_weakened() {
        let d = tempfile::tempdir().unwrap();
        let seen = SeenLocked::at(d.path().join("locked"));
        let locked = config("aa", Some((LockMode::Compliance, DAYS_30)));
        // Nothing recorded: nothing refused, and nothing written.
        seen.check("s3://b/a", &config("aa", None)).unwrap();
        seen.record("s3://b/a", &config("aa", None)).unwrap();
        assert!(!seen.dir().exists());

        seen.record("s3://b/a", &locked).unwrap();
        seen.check("s3://b/a", &locked).unwrap();
        for weaker in [
            None,
            Some((LockMode::Governance, DAYS_30)),
            Some((LockMode::Compliance, DAYS_30 - 1)),
        ] {
            let e = seen.check("s3://b/a", &config("aa", weaker)).unwrap_err();
            assert!(is_downgrade(&e) && e.is_damage(), "{weaker:?}: {e}");
            assert!(e.to_string().contains("compliance lock of 30 days"), "{e}");
            // The same id elsewhere, or another id at the same place.
            assert!(is_downgrade(
                &seen
                    .check("s3://c/copy", &config("aa", weaker))
                    .unwrap_err()
            ));
            assert!(is_downgrade(
                &seen.check("s3://b/a", &config("bb", weaker)).unwrap_err()
            ));
        }
        // A longer period is not a downgrade; it is recorded from then on.
        let longer = config("aa", Some((LockMode::Compliance, DAYS_30 * 2)));
        seen.check("s3://b/a", &longer).unwrap();
        seen.record("s3://b/a", &longer).unwrap();
        assert!(seen.check("s3://b/a", &locked).is_err());
        // Other repositories are not concerned.
        seen.check("s3://b/other", &config("cc", None)).unwrap();
        // `init` without lock at the place: the location is free.
        seen.forget_location("s3://b/a").unwrap();
        seen.check("s3://b/a", &config("dd", None)).unwrap();
        assert!(seen.check("s3://b/a", &config("aa", None)).is_err());
    }

    #[test]
    fn governance_may_become_compliance() {
        let d = tempfile::tempdir().unwrap();
        let seen = SeenLocked::at(d.path());
        seen.record(
            "s3://b/a",
            &config("aa", Some((LockMode::Governance, DAYS_30))),
        )
        .unwrap();
        seen.check(
            "s3://b/a",
            &config("aa", Some((LockMode::Compliance, DAYS_30))),
        )
        .unwrap();
    }

    #[test]
    fn a_record_that_cannot_be_read_is_an_error_not_a_pass() {
        let d = tempfile::tempdir().unwrap();
        let seen = SeenLocked::at(d.path());
        let locked = config("aa", Some((LockMode::Compliance, DAYS_30)));
        seen.record("s3://b/a", &locked).unwrap();
        let files: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        for body in ["junk".to_string(), format!("{HEADER}mode forever\n")] {
            for f in &files {
                std::fs::write(f, &body).unwrap();
            }
            for c in [&locked, &config("aa", None)] {
                let e = seen.check("s3://b/a", c).unwrap_err();
                assert!(matches!(&e, Error::ClientRecord { .. }), "{e}");
                assert!(!e.is_damage() && !e.is_usage());
            }
        }
    }
}
