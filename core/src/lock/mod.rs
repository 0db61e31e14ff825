//! Object lock (S3 Object Lock, WORM retention): every object a point
//! depends on carries a retention date at least the repository's lock
//! period after the backup that wrote the point began, so that nobody, not
//! even credentials allowed to delete, can remove it before then (see
//! docs/design.md, "Object lock").
//!
//! Retention is given in *generations* (Veeam's "block generation"): time
//! is cut into periods of `generation_secs` from the Unix epoch, and every
//! object written or relied on in generation `g` is retained until the end
//! of `g` plus the lock period, [`ObjectLock::until_of`]. A backup in the
//! same generation as its parent finds everything it inherits already
//! retained long enough, so objects are extended once per generation, not
//! once per backup; the price is that an object may stay locked up to one
//! generation longer than asked.
//!
//! - [`store`]: the decorating backend that puts every locked object with
//!   its retention;
//! - [`extend`]: checking and extending the retention of what a point
//!   relies on;
//! - [`seen`]: the client's record of repositories seen locked, against a
//!   config rewritten to stop locking;
//! - [`undelete`]: taking away delete markers and unlocked versions that
//!   hide locked ones on a versioned bucket.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub mod extend;
pub mod seen;
pub mod store;
pub mod undelete;

/// S3's two retention modes. In `Compliance` nobody can shorten the
/// retention or delete the object before it ends; in `Governance`
/// credentials with `s3:BypassGovernanceRetention` can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Compliance,
    Governance,
}

impl LockMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "compliance" => Some(LockMode::Compliance),
            "governance" => Some(LockMode::Governance),
            _ => None,
        }
    }

    /// As S3 spells it in headers.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        })
    }
}

/// One object's retention, as it is put or read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until: DateTime<Utc>,
}

/// The repository's object lock (`init --object-lock MODE --lock-days N`),
/// a repository constant in `config`: every writer must honour it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    pub mode: LockMode,
    /// How long every object of a point stays locked, at least, from the
    /// start of the backup that wrote the point.
    pub retain_secs: u64,
    /// Length of a generation: retention is extended once per generation.
    pub generation_secs: u64,
}

/// Longest lock period accepted: 100 years (S3 allows longer, but a
/// mistyped number of days should not make a repository undeletable for
/// ever).
pub const MAX_RETAIN_SECS: u64 = 100 * 365 * 86_400;
/// Default generation: 10 days (Veeam's for S3). Objects stay locked up
/// to this much longer than the lock period; extension requests are sent
/// once per generation.
pub const DEFAULT_GENERATION_SECS: u64 = 10 * 86_400;

impl ObjectLock {
    /// Checks the numbers are usable; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RETAIN_SECS).contains(&self.retain_secs) {
            return Err(format!(
                "lock period of {} s must be from 1 s to 100 years",
                self.retain_secs
            ));
        }
        if !(1..=MAX_RETAIN_SECS).contains(&self.generation_secs) {
            return Err(format!(
                "lock generation of {} s must be from 1 s to 100 years",
                self.generation_secs
            ));
        }
        Ok(())
    }

    /// The generation `t` falls in (0 before the epoch: no clock is).
    pub fn generation_of(&self, t: DateTime<Utc>) -> u64 {
        (t.timestamp().max(0) as u64) / self.generation_secs
    }

    /// The retention every object relied on in generation `g` must have:
    /// the generation's end plus the lock period.
    pub fn until_of(&self, g: u64) -> DateTime<Utc> {
        let end = g.saturating_add(1).saturating_mul(self.generation_secs);
        let secs = end
            .saturating_add(self.retain_secs)
            .min(i64::MAX as u64 / 2) as i64;
        DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The retention of generation `g`, with this lock's mode.
    pub fn retention_of(&self, g: u64) -> Retention {
        Retention {
            mode: self.mode,
            until: self.until_of(g),
        }
    }

    /// The generation a writer starting now is in. The local clock is
    /// taken `margin` ahead: retention is judged on the store's clock,
    /// and a writer whose clock is behind must not pick a generation that
    /// has already ended there.
    pub fn current(&self, margin: Duration) -> u64 {
        self.generation_of(Utc::now() + margin)
    }
}

/// Refuses a writer (backup, copy into a locked repository) whose clock is
/// behind the store's by more than the clock margin. Generations are
/// taken on this machine's clock plus the margin, retentions judged on the
/// store's: a clock further behind would lock for less than the lock
/// period. `store` is the store's time at the writer's start (its lease's
/// `last_modified`); nothing is checked without object lock.
pub fn check_writer_clock(
    repo: &crate::repo::Repository,
    store: Option<DateTime<Utc>>,
) -> crate::error::Result<()> {
    let config = repo.config();
    let (Some(_), Some(store)) = (config.object_lock, store) else {
        return Ok(());
    };
    let behind_secs = (store - Utc::now()).num_seconds();
    let margin_secs = config.protocol.clock_margin_secs;
    if behind_secs > margin_secs as i64 {
        return Err(crate::error::Error::ClockBehind {
            location: repo.location(),
            behind_secs,
            margin_secs,
        });
    }
    Ok(())
}

/// When `key`'s retention ends, if it has not ended yet. The store's clock
/// decides, so it counts as ended only `margin` after its date on ours
/// (the store's clock may be behind). An object that shows no retention
/// is an error, never "unlocked": every object of a locked repository a
/// caller asks about was put with one, so the store hides it from these
/// credentials (S3 shows retention on HEAD only with
/// `s3:GetObjectRetention`), or someone replaced the object; deleting on
/// that reading could hide locked data behind a delete marker.
pub async fn locked_until(
    backend: &dyn crate::backend::Backend,
    key: &str,
    margin: Duration,
) -> crate::error::Result<Option<DateTime<Utc>>> {
    let Some(r) = backend.retention(key).await?.retention else {
        return Err(no_retention(backend, key));
    };
    Ok(Some(r.until).filter(|until| *until > Utc::now() - margin))
}

/// An object of a locked repository that shows no retention: the store
/// hides it from these credentials, or someone put a version above the
/// locked one. Neither deleted nor extended on that reading: a delete
/// would hide the locked version behind a marker, an extension would lock
/// the other version, which `undelete` then takes for xfull's and keeps
/// above the repository's own.
pub(crate) fn no_retention(
    backend: &dyn crate::backend::Backend,
    key: &str,
) -> crate::error::Error {
    use crate::backend::{BackendError, Operation};
    crate::error::Error::Backend(BackendError::PermissionDenied {
        location: backend.location(),
        key: key.to_string(),
        operation: Operation::ReadLock,
        message: "the store shows no retention for an object of a repository with object lock: \
                  these credentials may lack s3:GetObjectRetention, or the object was replaced \
                  (`xfull undelete` takes away a version put above a locked one)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(retain: u64, generation: u64) -> ObjectLock {
        ObjectLock {
            mode: LockMode::Compliance,
            retain_secs: retain,
            generation_secs: generation,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_generation_covers_every_moment_in_it_for_the_whole_period() {
        let l = lock(30 * 86_400, 10 * 86_400);
        for t in [0, 1, 863_999, 864_000, 1_700_000_000, 1_700_863_999] {
            let g = l.generation_of(at(t));
            let until = l.until_of(g);
            // Retained at least the lock period from any moment of the
            // generation, and at most one generation longer.
            assert!(until >= at(t) + Duration::seconds(30 * 86_400), "t={t}");
            assert!(until <= at(t) + Duration::seconds(40 * 86_400), "t={t}");
        }
        // The boundary: the last second of generation 0 and the first of 1.
        assert_eq!(l.generation_of(at(863_999)), 0);
        assert_eq!(l.generation_of(at(864_000)), 1);
        assert_eq!(l.until_of(0), at(864_000 + 30 * 86_400));
    }

    #[test]
    fn later_generations_retain_longer() {
        let l = lock(5, 2);
        assert!(l.until_of(1) > l.until_of(0));
        assert_eq!(l.until_of(7) - l.until_of(6), Duration::seconds(2));
    }

    #[test]
    fn absurd_values_are_refused_and_extremes_do_not_overflow() {
        assert!(lock(0, 1).validate().unwrap_err().contains("lock period"));
        assert!(lock(1, 0).validate().unwrap_err().contains("generation"));
        assert!(lock(MAX_RETAIN_SECS + 1, 1).validate().is_err());
        assert!(lock(MAX_RETAIN_SECS, MAX_RETAIN_SECS).validate().is_ok());
        let l = lock(MAX_RETAIN_SECS, 1);
        assert!(l.until_of(u64::MAX) > Utc::now());
        assert_eq!(l.generation_of(at(-5)), 0);
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!(LockMode::parse("COMPLIANCE"), Some(LockMode::Compliance));
        assert_eq!(LockMode::parse("governance"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("legal-hold"), None);
        assert_eq!(LockMode::Governance.as_s3(), "GOVERNANCE");
        assert_eq!(LockMode::Compliance.to_string(), "compliance");
    }
}
