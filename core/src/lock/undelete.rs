//! `xfull undelete`: on a versioned bucket, object lock keeps every locked
//! *version*, but anyone allowed `s3:DeleteObject` can still hide an
//! object behind a delete marker, and anyone allowed `s3:PutObject` can
//! put a new version above it. Either makes a repository look empty or
//! damaged while every byte is still there. This takes away what hides a
//! still-locked version, key by key.
//!
//! The rule needs no repository secret: xfull puts every object of the
//! locked kinds with a retention, so above a version still locked, a
//! delete marker or a version with *no* retention was not put by xfull:
//! both are removed (by version id, which a locked version would refuse
//! and these do not), and the locked version is current again. A version
//! that has a retention, even one that has ended, is xfull's and is never
//! removed: the newest one decides (still locked: bring it back; ended:
//! leave the key as it is, gc may have deleted it on purpose).
//!
//! What the rule alone would get wrong, and how it is kept from it:
//! - **Key slots** removed by `key remove` or `key passwd` are deleted
//!   while locked, on purpose (the slot of a leaked password): they are
//!   only listed, and brought back only when named (`key_slots`).
//! - **An earlier repository at the same place**: only versions written
//!   since the config that is current (after this run) are brought back;
//!   the config is looked at first, and without a locked version of it
//!   nothing is done.
//! - **Credentials without `s3:GetObjectRetention`** see no retention at
//!   all: refused, rather than reported as "nothing locked".
//! - **A retention about to end** is not relied on: it must last
//!   [`MARGIN`] beyond this machine's clock, which may be behind the
//!   store's.
//! - **Heaps of delete markers** on one key: more than [`MAX_VERSIONS`]
//!   versions and the key is left alone and named; memory stays bounded.
//!
//! Index objects are not locked and are not brought back: `xfull index
//! rebuild` makes them again from the packs.

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::{Backend, BackendError, ObjectClass, Operation, Version};
use crate::error::{Error, Result};
use crate::keys;
use crate::progress::Progress;

/// Keys decided at once, and versions held at once (bounds memory).
const BATCH_KEYS: usize = 256;
const BATCH_VERSIONS: usize = 100_000;
/// More versions of one key than a repository makes: left alone, named.
#[cfg(not(test))]
pub const MAX_VERSIONS: usize = 1_000_000;
#[cfg(test)]
pub const MAX_VERSIONS: usize = 50;
/// Retentions read at once.
const IN_FLIGHT: usize = 16;
/// Keys named in each list of the report.
const NAMED: usize = 20;
/// How long a retention must still run, on this machine's clock, to be
/// relied on (the store's clock may be ahead: gc deletes what ended on
/// its own clock minus the repository's margin).
pub const MARGIN: Duration = Duration::hours(1);

/// What to do.
#[derive(Clone, Debug, Default)]
pub struct UndeleteOptions {
    pub dry_run: bool,
    /// Key slots (their 16-hex ids) to bring back too; the others are
    /// only listed in [`UndeleteReport::hidden_key_slots`].
    pub key_slots: Vec<String>,
}

/// What `undelete` found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UndeleteReport {
    pub dry_run: bool,
    /// Keys of the locked kinds listed.
    pub keys: u64,
    /// Keys with a delete marker on top or more than one version: the
    /// ones whose retentions were read.
    pub examined: u64,
    /// Keys whose newest locked version is current again (or would be,
    /// with `--dry-run`).
    pub restored: u64,
    /// Delete markers removed from above a locked version.
    pub markers_removed: u64,
    /// Versions without a retention removed from above a locked version.
    pub versions_removed: u64,
    /// Keys hidden by a delete marker whose newest retention has ended:
    /// left alone.
    pub hidden_unlocked: u64,
    /// Hidden locked versions written before the current config: an
    /// earlier repository at this place; left alone.
    pub older_than_config: u64,
    /// Key slots hidden over a locked version and not asked for: `key
    /// remove` and `key passwd` hide slots on purpose.
    pub hidden_key_slots: Vec<String>,
    /// Keys with more than [`MAX_VERSIONS`] versions: left alone.
    pub skipped: Vec<String>,
    /// The first restored keys, for the operator to see.
    pub restored_keys: Vec<String>,
}

/// What to do about one key.
#[derive(Debug)]
enum Decision {
    /// The current version is locked: nothing hides it.
    Current { locked: Version },
    /// Nothing hides a locked version.
    Keep,
    /// `remove` (markers and versions without retention) hide `locked`.
    Restore {
        remove: Vec<Version>,
        locked: Version,
    },
    /// Hidden, and the newest retention found has ended (or none shows).
    HiddenUnlocked,
}

/// A key's decision.
struct Decided {
    key: String,
    decision: Decision,
}

/// The prefixes of the locked kinds, the config first (`config` is a key,
/// matched exactly).
fn locked_prefixes() -> [&'static str; 6] {
    [
        keys::CONFIG,
        crate::crypto::slot::SLOTS,
        keys::POINTS,
        keys::NODES,
        keys::PACKS,
        keys::CHUNKS,
    ]
}

fn is_locked_kind(key: &str) -> bool {
    let data = key.starts_with(keys::PACKS) || key.starts_with(keys::CHUNKS);
    data || super::store::is_locked(key, ObjectClass::Metadata)
}

/// Takes away what hides still-locked versions in `backend` (the store as
/// is, no repository opened); with `dry_run`, only says what it would do.
pub async fn undelete(
    backend: &dyn Backend,
    opts: &UndeleteOptions,
    progress: &Progress,
) -> Result<UndeleteReport> {
    let mut run = Run {
        backend,
        opts,
        cutoff: Utc::now() + MARGIN,
        since: None,
        report: UndeleteReport {
            dry_run: opts.dry_run,
            ..UndeleteReport::default()
        },
    };
    for prefix in locked_prefixes() {
        let mut listing = backend.list_versions(prefix);
        let mut group: Vec<Version> = Vec::new();
        let mut overflow = false;
        let mut batch: Vec<Vec<Version>> = Vec::new();
        let mut held = 0;
        while let Some(v) = listing.try_next().await? {
            if !is_locked_kind(&v.key) {
                continue;
            }
            if group.first().is_some_and(|g| g.key != v.key) {
                held += group.len();
                run.close(&mut group, &mut overflow, &mut batch);
                if batch.len() >= BATCH_KEYS || held >= BATCH_VERSIONS {
                    progress.add_done(batch.len() as u64);
                    run.settle(std::mem::take(&mut batch)).await?;
                    held = 0;
                }
            }
            if group.len() >= MAX_VERSIONS {
                overflow = true;
                group.truncate(1);
            }
            if !overflow {
                group.push(v);
            }
        }
        run.close(&mut group, &mut overflow, &mut batch);
        progress.add_done(batch.len() as u64);
        run.settle(batch).await?;
        if prefix == keys::CONFIG && run.since.is_none() {
            return Err(run.no_locked_config());
        }
    }
    Ok(run.report)
}

struct Run<'a> {
    backend: &'a dyn Backend,
    opts: &'a UndeleteOptions,
    /// A retention must end after this to be relied on.
    cutoff: DateTime<Utc>,
    /// When the config that is current (after this run) was written.
    since: Option<DateTime<Utc>>,
    report: UndeleteReport,
}

impl Run<'_> {
    /// Ends a key's group: into the batch, or named as skipped.
    fn close(
        &mut self,
        group: &mut Vec<Version>,
        overflow: &mut bool,
        batch: &mut Vec<Vec<Version>>,
    ) {
        let g = std::mem::take(group);
        if std::mem::take(overflow) {
            self.report.keys += 1;
            if let Some(v) = g.first()
                && self.report.skipped.len() < NAMED
            {
                self.report.skipped.push(v.key.clone());
            }
        } else if !g.is_empty() {
            batch.push(g);
        }
    }

    /// Decides each key of `batch` and, unless a dry run, removes what
    /// hides the locked versions it brings back.
    async fn settle(&mut self, batch: Vec<Vec<Version>>) -> Result<()> {
        self.report.keys += batch.len() as u64;
        let needs_look: Vec<Vec<Version>> = batch
            .into_iter()
            .filter(|g| {
                // The config always: its locked version dates the repository.
                g.len() > 1 || g[0].delete_marker || g[0].key == keys::CONFIG
            })
            .collect();
        self.report.examined += needs_look.len() as u64;
        let (backend, cutoff) = (self.backend, self.cutoff);
        let decided: Vec<Decided> = futures::stream::iter(needs_look)
            .map(|g| decide(backend, g, cutoff))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut remove = Vec::new();
        for d in decided {
            self.apply(d, &mut remove);
        }
        if !self.opts.dry_run && !remove.is_empty() {
            self.backend.delete_versions(&remove).await?;
        }
        Ok(())
    }

    fn apply(&mut self, d: Decided, remove: &mut Vec<(String, String)>) {
        let is_config = d.key == keys::CONFIG;
        let r = &mut self.report;
        match d.decision {
            Decision::Current { locked } => {
                if is_config {
                    self.since = Some(locked.last_modified);
                }
            }
            Decision::Keep => {}
            Decision::HiddenUnlocked => r.hidden_unlocked += 1,
            Decision::Restore {
                remove: above,
                locked,
            } => {
                if is_config {
                    self.since = Some(locked.last_modified);
                } else if self.since.is_none_or(|since| locked.last_modified < since) {
                    r.older_than_config += 1;
                    return;
                }
                if let Some(slot) = d.key.strip_prefix(crate::crypto::slot::SLOTS)
                    && !self.opts.key_slots.iter().any(|s| s == slot)
                {
                    if r.hidden_key_slots.len() < NAMED {
                        r.hidden_key_slots.push(slot.to_string());
                    }
                    return;
                }
                r.restored += 1;
                if r.restored_keys.len() < NAMED {
                    r.restored_keys.push(d.key);
                }
                for v in above {
                    if v.delete_marker {
                        r.markers_removed += 1;
                    } else {
                        r.versions_removed += 1;
                    }
                    remove.push((v.key, v.version_id));
                }
            }
        }
    }

    /// Refusing to go on: no version of the config is still locked (so
    /// nothing dates the repository, and without `s3:GetObjectRetention`
    /// no retention shows at all).
    fn no_locked_config(&self) -> Error {
        Error::Backend(BackendError::PermissionDenied {
            location: self.backend.location(),
            key: keys::CONFIG.into(),
            operation: Operation::ReadLock,
            message: "no version of the config shows a retention still running: this is not \
                      a repository with object lock (or its lock has ended), or these \
                      credentials lack s3:GetObjectRetention, without which S3 shows no \
                      retention; undelete brings back only what a lock still holds"
                .into(),
        })
    }
}

/// One key's versions, current first: the markers and versions without
/// retention above its newest version with a retention, if that one is
/// still locked.
async fn decide(
    backend: &dyn Backend,
    versions: Vec<Version>,
    cutoff: DateTime<Utc>,
) -> Result<Decided> {
    let key = versions[0].key.clone();
    let hidden = versions[0].delete_marker;
    let mut above = Vec::new();
    for v in versions {
        if v.delete_marker {
            above.push(v);
            continue;
        }
        let Some(r) = backend.version_retention(&v.key, &v.version_id).await? else {
            above.push(v);
            continue;
        };
        let decision = if r.until <= cutoff {
            if hidden {
                Decision::HiddenUnlocked
            } else {
                Decision::Keep
            }
        } else if above.is_empty() {
            Decision::Current { locked: v }
        } else {
            Decision::Restore {
                remove: above,
                locked: v,
            }
        };
        return Ok(Decided { key, decision });
    }
    Ok(Decided {
        key,
        decision: if hidden {
            Decision::HiddenUnlocked
        } else {
            Decision::Keep
        },
    })
}

#[cfg(test)]
#[path = "undelete_tests.rs"]
mod tests;
