//! The client's record of repositories it has seen with object lock, so
//! that one whose config later says "no lock", a weaker mode or a shorter
//! lock period is refused instead of receiving backups that anyone with
//! delete rights could remove. The lock is a repository constant (no
//! command changes it), so for the same repository id *any* change is
//! refused, a stronger one too: a config rewritten to lock for a century
//! would make every later backup undeletable for as long. A different
//! repository at a place seen locked (made there by another host) must
//! lock at least as strongly. The config is plain and unauthenticated,
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

/// What a record keeps: the lock's mode, period and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    mode: LockMode,
    retain_secs: u64,
    generation_secs: u64,
}

impl Seen {
    fn of(lock: &ObjectLock) -> Self {
        Seen {
            mode: lock.mode,
            retain_secs: lock.retain_secs,
            generation_secs: lock.generation_secs,
        }
    }

    /// Whether `now` is this very lock.
    fn same_as(&self, now: Option<&ObjectLock>) -> bool {
        now.is_some_and(|l| Seen::of(l) == *self)
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
            "repo_id {:?}\nlocation {location:?}\nmode {}\nretain_secs {}\ngeneration_secs {}\n",
            config.repo_id, self.mode, self.retain_secs, self.generation_secs
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
            generation_secs: field("generation_secs")?.parse().ok()?,
        })
    }

    fn describe(&self) -> String {
        describe(self.mode, self.retain_secs, self.generation_secs)
    }
}

fn describe(mode: LockMode, secs: u64, generation_secs: u64) -> String {
    format!(
        "{mode} lock of {} (generation {})",
        span(secs),
        span(generation_secs)
    )
}

fn span(secs: u64) -> String {
    match secs {
        86_400 => "1 day".into(),
        s if s.is_multiple_of(86_400) => format!("{} days", s / 86_400),
        s => format!("{s} s"),
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
    /// repository with another lock (by id: any other; by location: a
    /// weaker one): damage naming the config. Any record that cannot be
    /// read is an error.
    pub fn check(&self, location: &str, config: &RepoConfig) -> Result<()> {
        let now = config.object_lock.as_ref();
        let [by_id, by_location] = self.paths(location, config);
        for (path, strict) in [(by_id, true), (by_location, false)] {
            let Some(seen) = self.read(&path)? else {
                continue;
            };
            if seen.same_as(now) || (!strict && seen.kept_by(now)) {
                continue;
            }
            let now = match now {
                None => "no object lock".to_string(),
                Some(l) => format!("a {}", describe(l.mode, l.retain_secs, l.generation_secs)),
            };
            return Err(Error::corrupt(
                keys::CONFIG,
                format!(
                    "the config of the repository at {location} says it has {now}, but this \
                     client has seen it with a {} (record {}): the config may have been \
                     replaced to change how new backups are locked; if the repository was made \
                     again this way on purpose, remove that record",
                    seen.describe(),
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Records the lock of the repository of `config` at `location`
    /// (nothing to do for one without); call after [`Self::check`], so a
    /// record by id is never replaced and one by location only by an
    /// equal or stronger lock.
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
            assert!(
                e.to_string()
                    .contains("compliance lock of 30 days (generation 1 day)"),
                "{e}"
            );
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
        // The same repository with a longer period (or another
        // generation): no command changes the lock, so refused too (a
        // century of lock would make every new backup undeletable).
        let longer = config("aa", Some((LockMode::Compliance, DAYS_30 * 2)));
        assert!(is_downgrade(&seen.check("s3://b/a", &longer).unwrap_err()));
        let mut regenerated = locked.clone();
        regenerated.object_lock.as_mut().unwrap().generation_secs *= 2;
        assert!(is_downgrade(
            &seen.check("s3://b/a", &regenerated).unwrap_err()
        ));
        // Another repository at the place: at least as strong will do, and
        // is recorded from then on.
        let other = config("zz", Some((LockMode::Compliance, DAYS_30 * 2)));
        seen.check("s3://b/a", &other).unwrap();
        seen.record("s3://b/a", &other).unwrap();
        assert!(
            seen.check(
                "s3://b/a",
                &config("yy", Some((LockMode::Compliance, DAYS_30)))
            )
            .is_err()
        );
        // Other repositories are not concerned.
        seen.check("s3://b/other", &config("cc", None)).unwrap();
        // `init` without lock at the place: the location is free.
        seen.forget_location("s3://b/a").unwrap();
        seen.check("s3://b/a", &config("dd", None)).unwrap();
        assert!(seen.check("s3://b/a", &config("aa", None)).is_err());
    }

    #[test]
    fn a_new_repository_at_the_place_may_lock_more_strongly() {
        let d = tempfile::tempdir().unwrap();
        let seen = SeenLocked::at(d.path());
        seen.record(
            "s3://b/a",
            &config("aa", Some((LockMode::Governance, DAYS_30))),
        )
        .unwrap();
        // Another repository made at the place.
        seen.check(
            "s3://b/a",
            &config("bb", Some((LockMode::Compliance, DAYS_30))),
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
