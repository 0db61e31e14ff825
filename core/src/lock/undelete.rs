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
use crate::lock::Retention;
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
/// Versions of the config looked at, at most (xfull writes one).
const MAX_CONFIG_VERSIONS: usize = 10_000;
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
    /// The config version that is the repository's, when more than one
    /// is still locked (refused otherwise, naming them).
    pub config_version: Option<String>,
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
    /// remove` and `key passwd` hide slots on purpose. The first
    /// [`NAMED`]; `hidden_key_slots_total` counts them all.
    pub hidden_key_slots: Vec<String>,
    pub hidden_key_slots_total: u64,
    /// Keys with more than [`MAX_VERSIONS`] versions: left alone. The
    /// first [`NAMED`]; `skipped_total` counts them all.
    pub skipped: Vec<String>,
    pub skipped_total: u64,
    /// The named key slots brought back.
    pub restored_key_slots: Vec<String>,
    /// Config versions still locked above the repository's own: they
    /// cannot be removed, and stay current (xfull writes one config).
    pub config_locked_above: u64,
    /// The first restored keys, for the operator to see.
    pub restored_keys: Vec<String>,
}

/// What to do about one key.
#[derive(Debug)]
enum Decision {
    /// Nothing hides a locked version (the current one is locked, or the
    /// newest retention has ended and nothing is hidden).
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

/// The prefixes of the locked kinds but the config (decided first, alone).
fn locked_prefixes() -> [&'static str; 5] {
    [
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
    run.settle_config().await?;
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
    /// The config first. xfull writes it once, create-only, at `init`, so
    /// the repository's own is the one version still locked (or the one
    /// `--config-version` names when an earlier repository at this place,
    /// or a forger with `s3:PutObjectRetention`, left others locked): it
    /// dates the repository (`since`), and every marker and version above
    /// it that is not locked any more is removed.
    async fn settle_config(&mut self) -> Result<()> {
        let mut listed = Vec::new();
        let mut listing = self.backend.list_versions(keys::CONFIG);
        while let Some(v) = listing.try_next().await? {
            if v.key != keys::CONFIG {
                continue;
            }
            if listed.len() >= MAX_CONFIG_VERSIONS {
                return Err(Error::Corrupt {
                    key: keys::CONFIG.into(),
                    reason: format!(
                        "it has more than {MAX_CONFIG_VERSIONS} versions where xfull writes one \
                         (delete markers or puts heaped on it); remove them by version id, then \
                         run undelete again"
                    ),
                });
            }
            listed.push(v);
        }
        drop(listing);
        let now = Utc::now();
        let mut versions = Vec::with_capacity(listed.len());
        let mut retentions = Vec::with_capacity(listed.len());
        for v in listed {
            let r = match v.delete_marker {
                true => None,
                false => match retention_of(self.backend, &v).await? {
                    Some(r) => r,
                    None => continue,
                },
            };
            versions.push(v);
            retentions.push(r);
        }
        let locked: Vec<usize> = (0..versions.len())
            .filter(|&i| retentions[i].is_some_and(|r| r.until > self.cutoff))
            .collect();
        let own = match (locked.as_slice(), &self.opts.config_version) {
            ([], _) => return Err(self.no_locked_config()),
            (_, Some(id)) => *locked
                .iter()
                .find(|&&i| versions[i].version_id == *id)
                .ok_or_else(|| self.config_versions(&versions, &locked, Some(id)))?,
            ([one], None) => *one,
            (_, None) => return Err(self.config_versions(&versions, &locked, None)),
        };
        self.since = Some(versions[own].last_modified);
        self.report.keys += 1;
        self.report.examined += 1;
        if own == 0 {
            // Current already.
            return Ok(());
        }
        // A retention that ended less than the margin ago may still run on
        // the store's clock: such a version cannot be removed either.
        let still_locked = |r: &Option<Retention>| r.is_some_and(|r| r.until > now - MARGIN);
        let locked_above = retentions[..own].iter().filter(|r| still_locked(r)).count();
        if locked_above > 0 {
            // A locked version above the repository's own stays current
            // whatever is removed; removing what is above that one would
            // make it current, and it is not the repository's.
            self.report.config_locked_above = locked_above as u64;
            return Ok(());
        }
        // Versions put above it (not markers) are deleted for good: a
        // config overwritten by someone, or a later repository made at
        // this place without a lock (or with one that has ended). Nothing
        // without a secret tells which, so the operator says (review:
        // the second was deleted, and the earlier repository brought back
        // in its place).
        let put: Vec<&Version> = versions[..own]
            .iter()
            .filter(|v| !v.delete_marker)
            .collect();
        if !put.is_empty() && self.opts.config_version.is_none() {
            return Err(config_put_above(&versions[own], &put));
        }
        let mut above: Vec<Version> = versions[..own].to_vec();
        above.extend(same_second_markers(&versions[own + 1..], &versions[own]));
        let mut remove = Vec::new();
        self.restore(keys::CONFIG.into(), above, &mut remove);
        if !self.opts.dry_run {
            self.backend.delete_versions(&remove).await?;
        }
        Ok(())
    }

    /// Counts `key` as restored and adds what hides it (`above`) to
    /// `remove`.
    fn restore(&mut self, key: String, above: Vec<Version>, remove: &mut Vec<(String, String)>) {
        let r = &mut self.report;
        r.restored += 1;
        if r.restored_keys.len() < NAMED {
            r.restored_keys.push(key);
        }
        for v in above {
            match v.delete_marker {
                true => r.markers_removed += 1,
                false => r.versions_removed += 1,
            }
            remove.push((v.key, v.version_id));
        }
    }

    /// More than one config version is still locked: the operator names
    /// the repository's own (`--config-version`).
    fn config_versions(
        &self,
        versions: &[Version],
        locked: &[usize],
        asked: Option<&String>,
    ) -> Error {
        let listed: Vec<String> = locked
            .iter()
            .map(|&i| {
                format!(
                    "{} (written {})",
                    versions[i].version_id, versions[i].last_modified
                )
            })
            .collect();
        let asked = match asked {
            Some(id) => format!("--config-version {id} is not one of them; "),
            None => String::new(),
        };
        Error::InvalidArgument(format!(
            "{} versions of the config are still locked where xfull writes one (an earlier \
             repository at this place, or one put by someone allowed s3:PutObjectRetention): \
             {asked}name the repository's own with --config-version: {}",
            listed.len(),
            listed.join(", ")
        ))
    }

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
            self.report.skipped_total += 1;
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
            .filter(|g| g.len() > 1 || g[0].delete_marker)
            .collect();
        self.report.examined += needs_look.len() as u64;
        let (backend, cutoff) = (self.backend, self.cutoff);
        let decided: Vec<Decided> = futures::stream::iter(needs_look)
            .map(|g| decide(backend, g, cutoff))
            // In order: the keys a report names are the same every run.
            .buffered(IN_FLIGHT)
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
        let r = &mut self.report;
        match d.decision {
            Decision::Keep => {}
            Decision::HiddenUnlocked => r.hidden_unlocked += 1,
            Decision::Restore {
                remove: above,
                locked,
            } => {
                // Key slots are brought back only when named, so the
                // operator decides (the first one is written just before
                // the config, so it would read as older than it).
                if let Some(slot) = d.key.strip_prefix(crate::crypto::slot::SLOTS) {
                    if !self.opts.key_slots.iter().any(|s| s == slot) {
                        r.hidden_key_slots_total += 1;
                        if r.hidden_key_slots.len() < NAMED {
                            r.hidden_key_slots.push(slot.to_string());
                        }
                        return;
                    }
                    r.restored_key_slots.push(slot.to_string());
                } else if self.since.is_none_or(|since| locked.last_modified < since) {
                    r.older_than_config += 1;
                    return;
                }
                self.restore(d.key, above, remove);
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
    let mut versions = versions.into_iter();
    while let Some(v) = versions.next() {
        if v.delete_marker {
            above.push(v);
            continue;
        }
        let Some(r) = retention_of(backend, &v).await? else {
            continue;
        };
        let Some(r) = r else {
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
            Decision::Keep
        } else {
            let rest: Vec<Version> = versions.collect();
            above.extend(same_second_markers(&rest, &v));
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

/// The retention of version `v`; `None` when the version is gone since
/// it was listed (a lifecycle rule expiring noncurrent versions, as
/// design.md asks for, or another undelete): it hides nothing any more,
/// and one gone must not stop the run (review).
async fn retention_of(backend: &dyn Backend, v: &Version) -> Result<Option<Option<Retention>>> {
    match backend.version_retention(&v.key, &v.version_id).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Versions put on the config above the repository's own (`own`): not
/// removed unless `--config-version` names the one to keep.
fn config_put_above(own: &Version, put: &[&Version]) -> Error {
    let listed: Vec<String> = put
        .iter()
        .take(5)
        .map(|v| {
            format!(
                "{} (written {}, {} bytes)",
                v.version_id, v.last_modified, v.size
            )
        })
        .collect();
    let more = match put.len() {
        n if n > 5 => format!(" and {} more", n - 5),
        _ => String::new(),
    };
    Error::InvalidArgument(format!(
        "the config has {} version(s) put above the locked one (version {}, written {}) and \
         not locked now: {}{more}. xfull writes one config, so these are a config overwritten \
         by someone, or the config of a later repository made at this place; undelete would \
         delete them for good. If the locked one is the repository to bring back, run again \
         with --config-version {}",
        put.len(),
        own.version_id,
        own.last_modified,
        listed.join(", "),
        own.version_id
    ))
}

/// Delete markers listed under `locked` but written in the same second:
/// S3 lists versions and markers apart and gives times to the second, so
/// one may really be above it. Removing a marker below it changes nothing.
fn same_second_markers(rest: &[Version], locked: &Version) -> Vec<Version> {
    rest.iter()
        .take_while(|v| v.last_modified == locked.last_modified)
        .filter(|v| v.delete_marker)
        .cloned()
        .collect()
}

#[cfg(test)]
#[path = "undelete_tests.rs"]
mod tests;
