//! `stats`: what the repository holds, from listings and manifest
//! summaries only (no chunk is read, no segment list kept). A damaged
//! manifest is not counted and is reported: stats is not an integrity
//! check, `verify` is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::ObjectMeta;
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::{LeaseAge, LeaseRecord, age};
use crate::placement::Placement;
use crate::repo::{Repository, Unreadable};

#[derive(Clone, Debug, Default, Serialize)]
pub struct VmStats {
    pub points: u64,
    /// Sum of the disk sizes of its points: what restoring them all gives.
    pub logical_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoStats {
    pub vms: BTreeMap<String, VmStats>,
    pub points: u64,
    pub logical_bytes: u64,
    /// Chunks the index lists (a chunk stored twice, rare, counts twice).
    pub chunks: u64,
    /// Bytes of packs and index objects: what chunk data takes.
    pub chunk_bytes: u64,
    pub packs: u64,
    /// Bytes of the packs alone (the chunks' sealed, compressed data).
    pub pack_bytes: u64,
    pub index_objects: u64,
    /// Bytes of the index objects alone: where each chunk lies.
    pub index_bytes: u64,
    pub nodes: u64,
    pub node_bytes: u64,
    pub manifest_bytes: u64,
    /// Everything under the repository: chunks, nodes, manifests, leases,
    /// markers, trash, config.
    pub stored_bytes: u64,
    /// Logical bytes / stored bytes.
    pub dedup_ratio: Option<f64>,
    /// Objects under `leases/`, whatever their state (below).
    pub leases: u64,
    pub lease_states: LeaseStates,
    pub trash_points: u64,
    /// Points whose manifest cannot be read (not counted above but in
    /// `manifest_bytes`), and why.
    pub damaged: Vec<Unreadable>,
}

/// What the leases say of their backups. Every backup leaves its lease
/// behind, rewritten as ended, for the sweeps that began before its
/// commit (see `session::Session::end`): counting those as "running or
/// killed" told an operator that every backup since the last gc had been
/// killed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseStates {
    /// Of backups that finished: a gc run the clock margin after them
    /// removes them.
    pub ended: u64,
    /// Not ended, refreshed within the lease TTL (by the `now` given):
    /// running backups, or ones killed less than a TTL ago.
    pub open: u64,
    /// Not ended and not refreshed for the lease TTL: killed or stalled
    /// backups; the next gc removes them.
    pub stale: u64,
    /// Not readable as a lease (damaged, sealed under other keys, or not
    /// named like one).
    pub unreadable: u64,
}

/// Collects the statistics; `now` dates the leases (this machine's clock:
/// stats writes nothing, so it cannot read the store's).
pub async fn collect(repo: &Repository, now: DateTime<Utc>) -> Result<RepoStats> {
    let mut s = RepoStats::default();
    let mut all = repo.backend().list("");
    let mut points = Vec::new();
    let mut leases = Vec::new();
    // Sums saturate: sizes are the store's word, and a hostile or broken
    // listing's must not panic a debug build or wrap a release one.
    let add = |sum: &mut u64, n: u64| *sum = sum.saturating_add(n);
    while let Some(m) = all.try_next().await? {
        add(&mut s.stored_bytes, m.size);
        let k = m.key.as_str();
        if Placement::owns(k) {
            add(&mut s.chunk_bytes, m.size);
            if k.starts_with(keys::PACKS) {
                s.packs += 1;
                add(&mut s.pack_bytes, m.size);
            } else {
                s.index_objects += 1;
                add(&mut s.index_bytes, m.size);
            }
        } else if k.starts_with(keys::NODES) {
            s.nodes += 1;
            add(&mut s.node_bytes, m.size);
        } else if let Some(p) = keys::parse_point(k) {
            add(&mut s.manifest_bytes, m.size);
            points.push(p);
        } else if k.starts_with(keys::LEASES) {
            s.leases += 1;
            leases.push(m);
        } else if k.starts_with(keys::TRASH) {
            s.trash_points += 1;
        }
    }
    drop(all);
    s.lease_states = lease_states(repo, leases, now).await?;
    // Index heads say how many entries each object holds.
    s.chunks = repo.chunks().open_index().await?.entries().await?;
    let loaded: Vec<_> = futures::stream::iter(points)
        .map(|(vm, id)| async move {
            let s = repo.load_summary(&vm, &id).await;
            (vm, id, s.map(|s| s.size()))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut sizes = Vec::new();
    for (vm, id, size) in loaded {
        match size {
            Ok(size) => sizes.push((vm, size)),
            // Pruned since the listing.
            Err(Error::PointNotFound { .. }) => {}
            Err(e) if e.is_damage() => s.damaged.push(Unreadable {
                point: format!("{vm}@{id}"),
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    s.damaged.sort_by(|a, b| a.point.cmp(&b.point));
    add_points(&mut s, sizes);
    s.dedup_ratio = (s.stored_bytes > 0).then(|| s.logical_bytes as f64 / s.stored_bytes as f64);
    Ok(s)
}

/// Counts points of the given sizes (each the sum of a manifest's disks)
/// by VM. The sums saturate: a manifest may declare 256 TiB of disks
/// (`manifest::limits`), and 65536 such points, a hostile repository's
/// say, overflowed u64 (a panic in a debug build, a wrapped total in a
/// release one).
fn add_points(s: &mut RepoStats, sizes: Vec<(impl ToString, u64)>) {
    for (vm, size) in sizes {
        let v = s.vms.entry(vm.to_string()).or_default();
        v.points += 1;
        v.logical_bytes = v.logical_bytes.saturating_add(size);
        s.points += 1;
        s.logical_bytes = s.logical_bytes.saturating_add(size);
    }
}

/// Reads the listed leases (a few KB each, 4 at a time: a large backup's
/// lists many dependencies) and counts them by state, dated as gc dates
/// them (`lease::age`). One deleted since the listing (a gc, a backup
/// that ended with nothing committed) is not counted.
async fn lease_states(
    repo: &Repository,
    leases: Vec<ObjectMeta>,
    now: DateTime<Utc>,
) -> Result<LeaseStates> {
    let proto = &repo.config().protocol;
    let read: Vec<_> = futures::stream::iter(leases)
        .map(|m| async move {
            let loaded = match age(&m, now, proto) {
                LeaseAge::Stray => Err(Error::corrupt(&m.key, "not named like a lease")),
                _ => LeaseRecord::load(repo, &m.key).await,
            };
            (m, loaded)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut out = LeaseStates::default();
    for (meta, loaded) in read {
        match loaded {
            Ok(None) => {}
            Ok(Some(r)) if r.ended.is_some() => out.ended += 1,
            // Dated ahead of `now` (this machine's clock may lag the
            // store's): not refreshed long ago, so open.
            Ok(Some(_)) if age(&meta, now, proto) != LeaseAge::Dead => out.open += 1,
            Ok(Some(_)) => out.stale += 1,
            Err(e) if e.is_damage() => out.unreadable += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
