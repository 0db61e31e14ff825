//! `xfull undelete`: on a versioned bucket, object lock keeps every locked
//! *version*, but anyone allowed `s3:DeleteObject` can still hide an
//! object behind a delete marker, and anyone allowed `s3:PutObject` can
//! put a new version above it. Either makes a repository look empty or
//! damaged while every byte is still there. This takes away what hides a
//! still-locked version, key by key.
//!
//! The rule needs no repository config (which may itself be the object
//! hidden or replaced): xfull puts every object of the locked kinds with a
//! retention, and deletes one only once its retention has ended. So above
//! a version still locked, a delete marker or a version without a
//! retention was not left by xfull: both are removed (by version id,
//! which a locked version refuses and these do not), and the locked
//! version is current again. Keys whose newest versions are all unlocked
//! are left alone: their retention ended (gc may have deleted them on
//! purpose) or they were never locked. A forged version that carries a
//! retention itself is not told apart here; `verify` finds it as damage.
//!
//! Only the locked kinds are looked at (`lock::store::is_locked`), so the
//! many versions of leases and markers cost nothing. Index objects are not
//! locked and are not brought back: `xfull index rebuild` makes them again
//! from the packs.

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::{Backend, ObjectClass, Version};
use crate::error::{Error, Result};
use crate::keys;
use crate::progress::Progress;

/// Keys decided at once (bounds memory; each key's versions are small).
const BATCH: usize = 256;
/// Retentions read at once.
const IN_FLIGHT: usize = 16;
/// More versions of one key than any repository makes: a hostile store.
const MAX_VERSIONS: usize = 100_000;
/// Keys named in the report.
const NAMED: usize = 20;

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
    /// Keys hidden by a delete marker with no locked version under it:
    /// left alone.
    pub hidden_unlocked: u64,
    /// The first restored keys, for the operator to see.
    pub restored_keys: Vec<String>,
}

/// What to do about one key: the versions above its newest locked one.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Nothing,
    Restore { remove: Vec<Version> },
    HiddenUnlocked,
}

/// The prefixes of the locked kinds (`config` is a key, matched exactly).
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
    dry_run: bool,
    progress: &Progress,
) -> Result<UndeleteReport> {
    let mut report = UndeleteReport {
        dry_run,
        ..UndeleteReport::default()
    };
    let now = Utc::now();
    for prefix in locked_prefixes() {
        let mut listing = backend.list_versions(prefix);
        let mut group: Vec<Version> = Vec::new();
        let mut batch: Vec<Vec<Version>> = Vec::new();
        while let Some(v) = listing.try_next().await? {
            if !is_locked_kind(&v.key) {
                continue;
            }
            if group.first().is_some_and(|g| g.key != v.key) {
                batch.push(std::mem::take(&mut group));
                if batch.len() >= BATCH {
                    progress.add_done(batch.len() as u64);
                    settle(backend, std::mem::take(&mut batch), now, &mut report).await?;
                }
            }
            if group.len() >= MAX_VERSIONS {
                return Err(Error::Backend(crate::backend::BackendError::Other {
                    location: backend.location(),
                    message: format!("{} has more than {MAX_VERSIONS} versions", v.key),
                }));
            }
            group.push(v);
        }
        if !group.is_empty() {
            batch.push(group);
        }
        progress.add_done(batch.len() as u64);
        settle(backend, batch, now, &mut report).await?;
    }
    Ok(report)
}

/// Decides each key of `batch` and, unless a dry run, removes what hides
/// its locked version.
async fn settle(
    backend: &dyn Backend,
    batch: Vec<Vec<Version>>,
    now: DateTime<Utc>,
    report: &mut UndeleteReport,
) -> Result<()> {
    report.keys += batch.len() as u64;
    let needs_look: Vec<Vec<Version>> = batch
        .into_iter()
        .filter(|g| g.len() > 1 || g.first().is_some_and(|v| v.delete_marker))
        .collect();
    report.examined += needs_look.len() as u64;
    let decisions: Vec<(String, Decision)> = futures::stream::iter(needs_look)
        .map(|g| async move {
            let key = g[0].key.clone();
            decide(backend, g, now).await.map(|d| (key, d))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut remove = Vec::new();
    for (key, d) in decisions {
        match d {
            Decision::Nothing => {}
            Decision::HiddenUnlocked => report.hidden_unlocked += 1,
            Decision::Restore { remove: above } => {
                report.restored += 1;
                if report.restored_keys.len() < NAMED {
                    report.restored_keys.push(key);
                }
                for v in above {
                    if v.delete_marker {
                        report.markers_removed += 1;
                    } else {
                        report.versions_removed += 1;
                    }
                    remove.push((v.key, v.version_id));
                }
            }
        }
    }
    if !report.dry_run && !remove.is_empty() {
        backend.delete_versions(&remove).await?;
    }
    Ok(())
}

/// One key's versions, current first: the versions above the newest one
/// still locked, read newest first until one is.
async fn decide(
    backend: &dyn Backend,
    versions: Vec<Version>,
    now: DateTime<Utc>,
) -> Result<Decision> {
    for (i, v) in versions.iter().enumerate() {
        if v.delete_marker {
            continue;
        }
        let locked = backend
            .version_retention(&v.key, &v.version_id)
            .await?
            .is_some_and(|r| r.until > now);
        if locked {
            if i == 0 {
                return Ok(Decision::Nothing);
            }
            return Ok(Decision::Restore {
                remove: versions[..i].to_vec(),
            });
        }
    }
    Ok(match versions.first() {
        Some(v) if v.delete_marker => Decision::HiddenUnlocked,
        _ => Decision::Nothing,
    })
}

#[cfg(test)]
#[path = "undelete_tests.rs"]
mod tests;
