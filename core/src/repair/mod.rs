//! `repair`: makes a damaged repository sound again as far as it can,
//! while backups run (docs/design.md, "Damage and repair").
//!
//! 1. Find the damage: a verify of every point (structural, or reading the
//!    chunks with `read_data`) plus the damage records that verify,
//!    restore and backups left.
//! 2. Remove damaged nodes as a sweep of their own
//!    ([`crate::gc::sweep::targeted`]): each is checked again just before
//!    it goes, so a copy stored again meanwhile stays. Once gone, their
//!    keys are free for a create-only put: the next backup of the same
//!    data stores them again. A damaged chunk lies in a pack with other
//!    chunks and is not removed: its damage record stays, so the next
//!    backup of the same data stores it again in a new pack (readers try
//!    every copy the index knows), and gc frees the damaged copy with its
//!    pack.
//! 3. Remove manifests that cannot be read (nothing restores from them),
//!    pinned ones through the trash like `prune`.
//! 4. Store again, from disk images the operator names, the missing
//!    chunks and nodes they contain ([`restock`]).
//! 5. Verify again and list the points that are still damaged.

mod packs;
mod restock;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

pub use self::restock::RepairSource;
use crate::damage::{self, Health, KnownDamage};
use crate::error::{Error, Result};
use crate::gc::Sweep;
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::ObjectRef;
use crate::names::VmName;
use crate::placement::lookup::ChunkIndex;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::verify::{DamagedPoint, VerifyOptions, verify};

#[derive(Debug, Default)]
pub struct RepairOptions {
    /// Read every chunk to find damage (else: listings, metadata and the
    /// damage records).
    pub read_data: bool,
    /// Report what would be done; change nothing.
    pub dry_run: bool,
    pub sources: Vec<RepairSource>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub points: u64,
    /// Stored chunks and nodes found damaged (by this verify or a record).
    pub objects_damaged: u64,
    /// Referenced chunks and nodes missing from the repository.
    pub objects_missing: u64,
    /// The sweep that removed the damaged objects.
    pub sweep: Option<u64>,
    pub objects_removed: u64,
    /// Recorded as damaged but found sound (stored again since).
    pub objects_sound: u64,
    /// Unreadable manifests removed (`VM@ID`).
    pub manifests_removed: Vec<String>,
    /// VMs whose newest point is among those removed (no readable point
    /// of a later or the same second): change information taken since it
    /// does not apply to the point now newest, as after `forget`.
    pub newest_removed: Vec<String>,
    pub chunks_restored: u64,
    pub nodes_restored: u64,
    /// Packs an index object names whose trailer cannot be read (found by
    /// the verify).
    pub packs_unreadable: u64,
    /// Of those, removed once their chunks were stored again.
    pub packs_salvaged: u64,
    /// Of those, made again byte for byte and written over (unencrypted).
    pub packs_healed: u64,
    /// Of those, still there with a trailer that cannot be read.
    pub packs_unreadable_left: u64,
    /// Chunks of those packs stored again.
    pub chunks_salvaged: u64,
    /// Chunks of those packs that did not open (lost with the pack unless
    /// an image gives them again).
    pub chunks_not_salvaged: u64,
    /// Points that still cannot be restored whole.
    pub still_damaged: Vec<DamagedPoint>,
    /// Index problems the run's last verify still finds (entries their
    /// packs contradict, index objects or pack trailers that cannot be
    /// read): `index rebuild` mends the index; repair does not.
    pub index_problems_left: u64,
    pub warnings: Vec<String>,
}

/// Recorded objects checked at once.
const CHECKS: usize = 16;

pub async fn repair(
    repo: &Repository,
    opts: &RepairOptions,
    progress: Arc<Progress>,
) -> Result<RepairReport> {
    for s in &opts.sources {
        s.check(repo).await?;
    }
    if !opts.dry_run {
        // Cheap early answer (the sweep's own start decides).
        if let Some((seq, host)) = crate::gc::markers::running(repo).await? {
            return Err(Error::SweepBusy { seq, host });
        }
    }
    let max = repo.config().chunking.max as usize;
    let known = KnownDamage::load(repo).await?;
    let recorded: Vec<String> = known
        .chunks
        .iter()
        .map(keys::chunk)
        .chain(known.nodes.iter().map(keys::node))
        .collect();
    // Recorded damage names chunks and nodes only.
    let no_packs = BTreeMap::new();
    // One index for every recorded chunk: opening it is a listing.
    let index = match known.chunks.is_empty() {
        true => None,
        false => Some(repo.chunks().open_index().await?),
    };
    let looked: Vec<(String, Health)> = futures::stream::iter(recorded)
        .map(|k| check(repo, k, max, &no_packs, index.as_deref()))
        .buffer_unordered(CHECKS)
        .try_collect()
        .await?;
    let mut known_bad = BTreeMap::new();
    let mut stale = Vec::new();
    for (key, health) in looked {
        match (health, ObjectRef::parse(&key)) {
            (Health::Damaged(why), Some(r)) => {
                known_bad.insert(r, why);
            }
            _ => stale.push(key),
        }
    }
    let found = verify(
        repo,
        &[],
        &VerifyOptions {
            read_data: opts.read_data,
            subset: None,
            record_damage: !opts.dry_run,
            known_bad: known_bad.clone(),
        },
        progress.clone(),
    )
    .await?;
    // A record of an object stored again since, or gone and referenced by
    // no point, is stale. One gone but still referenced stays: it tells
    // backups not to rely on that node, and to store it again.
    let still_missing: BTreeSet<String> = found.missing.iter().map(ObjectRef::key).collect();
    stale.retain(|k| !still_missing.contains(k));
    if !opts.dry_run && !stale.is_empty() {
        let _ = damage::clear(repo, &stale).await;
    }
    let mut doomed: BTreeSet<String> = found.bad_objects.iter().map(|(k, _)| k.clone()).collect();
    doomed.extend(known_bad.keys().map(ObjectRef::key));
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        points: found.points,
        objects_damaged: doomed.len() as u64,
        objects_missing: found.objects_missing,
        warnings: found.warnings.clone(),
        still_damaged: found.damaged.clone(),
        // Until the last verify, if there is one, looks again.
        index_problems_left: found.index_problems_found,
        ..RepairReport::default()
    };
    let salvaged = packs::salvage(
        repo,
        &found.unreadable_packs,
        found.unreadable_packs_found,
        opts.dry_run,
        &progress,
        &mut report,
    )
    .await?;
    doomed.extend(salvaged.new_packs.keys().cloned());
    // A pack healed in place changed the repository too: the last verify
    // tells what is left.
    let changes = !doomed.is_empty()
        || report.packs_healed > 0
        || !found.damaged_manifests.is_empty()
        || (!found.missing.is_empty() && !opts.sources.is_empty());
    if opts.dry_run || !changes {
        return Ok(report);
    }

    let mut wanted: BTreeSet<ObjectRef> = found.missing.iter().copied().collect();
    // Chunks of a pack removed below that did not open: an image may
    // give them again.
    wanted.extend(salvaged.lost.iter().copied().map(ObjectRef::Chunk));
    // Damaged chunks stay where they are, recorded (see the module doc);
    // images can give them again.
    let (chunks, doomed): (BTreeSet<String>, BTreeSet<String>) = doomed
        .into_iter()
        .partition(|k| matches!(ObjectRef::parse(k), Some(ObjectRef::Chunk(_))));
    wanted.extend(chunks.iter().filter_map(|k| ObjectRef::parse(k)));
    if !doomed.is_empty() {
        let sweep = Sweep::begin(repo, false).await?;
        report.sweep = Some(sweep.seq());
        let removal = sweep
            .remove_objects(doomed.into_iter().collect(), |key| {
                check(repo, key, max, &salvaged.new_packs, None)
            })
            .await?;
        for (key, why) in &removal.undeletable {
            report
                .warnings
                .push(format!("{key} is damaged but could not be removed: {why}"));
        }
        let is_pack = |k: &&String| k.starts_with(keys::PACKS);
        report.packs_salvaged = removal.deleted.iter().filter(is_pack).count() as u64;
        report.objects_removed = removal.deleted.len() as u64 - report.packs_salvaged;
        let packs_kept = removal.sound.iter().filter(is_pack).count() as u64;
        report.objects_sound = removal.sound.len() as u64 - packs_kept;
        if packs_kept > 0 {
            report.warnings.push(format!(
                "{packs_kept} pack(s) whose trailer could not be read were kept: the trailer \
                 reads again, or a new pack holding their chunks went (a gc?); repair again"
            ));
        }
        wanted.extend(removal.deleted.iter().filter_map(|k| ObjectRef::parse(k)));
        // Only the records of objects found sound are settled. A node
        // removed here (or found gone) is referenced and now missing: its
        // record stays until a backup stores it again, so that no backup
        // reuses it unfetched meanwhile.
        let settled = removal.sound;
        if let Err(e) = damage::clear(repo, &settled).await {
            report
                .warnings
                .push(format!("could not remove the damage records: {e}"));
        }
    }
    let removed = remove_manifests(repo, &found.damaged_manifests).await?;
    report.manifests_removed = removed.points;
    for l in &removed.locked {
        report.warnings.push(format!(
            "the unreadable manifest of point {} stays: object lock retains it until {} \
             (repair again after that)",
            l.point,
            l.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    for vm in &removed.newest_of {
        report.warnings.push(format!(
            "the unreadable manifest removed was the newest point of VM {vm}: change \
             information (--changed, --base, --bitmap) taken since it does not apply to the \
             point now newest; the next backup of {vm} reads its disks in full (told by a \
             record under removed/)"
        ));
    }
    report.newest_removed = removed.newest_of.iter().map(ToString::to_string).collect();
    // Damaged chunks not stored again stay damaged: the last verify
    // counts them (it does not read chunks).
    let mut still_bad: BTreeMap<ObjectRef, String> = chunks
        .iter()
        .filter_map(|k| ObjectRef::parse(k))
        .map(|r| {
            (
                r,
                "damaged (recorded; store it again from an image)".to_string(),
            )
        })
        .collect();
    if !opts.sources.is_empty() && !wanted.is_empty() {
        let (stored, nodes) = restock::restock(repo, &opts.sources, &wanted, &progress).await?;
        report.chunks_restored = stored.len() as u64;
        report.nodes_restored = nodes;
        // Chunks stored again have a sound copy now: their records go.
        for id in &stored {
            still_bad.remove(&ObjectRef::Chunk(*id));
        }
        let settled: Vec<String> = stored
            .iter()
            .map(keys::chunk)
            .filter(|k| chunks.contains(k))
            .collect();
        if let Err(e) = damage::clear(repo, &settled).await {
            report
                .warnings
                .push(format!("could not remove the damage records: {e}"));
        }
    }
    let after = verify(
        repo,
        &[],
        &VerifyOptions {
            known_bad: still_bad,
            ..VerifyOptions::default()
        },
        Arc::new(Progress::default()),
    )
    .await?;
    if !opts.sources.is_empty() {
        // Nodes stored again from the images: their records go (the last
        // verify read every referenced node).
        let bad: BTreeSet<String> = (after.bad_objects.iter().map(|(k, _)| k.clone()))
            .chain(after.missing.iter().map(ObjectRef::key))
            .collect();
        let known = KnownDamage::load(repo).await?;
        let healed: Vec<String> = (known.nodes.iter().map(keys::node))
            .filter(|k| !bad.contains(k))
            .collect();
        if let Err(e) = damage::clear(repo, &healed).await {
            report
                .warnings
                .push(format!("could not remove the damage records: {e}"));
        }
    }
    report.still_damaged = after.damaged;
    // What the last look found, not what this run counted: packs beyond
    // the verify's first 4,096, or readable again, are seen as they are.
    report.packs_unreadable_left = after.unreadable_packs_found;
    // Every point whole is not every object sound: with the index in
    // disagreement repair said so and exited 0 while verify exited 3,
    // and with more contradicted entries than verify judges, points it
    // did not judge may not restore (review 100).
    report.index_problems_left = after.index_problems_found;
    for w in after.warnings {
        if !report.warnings.contains(&w) {
            report.warnings.push(w);
        }
    }
    Ok(report)
}

/// A fresh look at a chunk or node named by its key; a chunk looked up
/// in `index`, or in the index as it is now (a removal's last look).
async fn check(
    repo: &Repository,
    key: String,
    max: usize,
    new_packs: &BTreeMap<String, Vec<ObjectId>>,
    index: Option<&ChunkIndex>,
) -> Result<(String, Health)> {
    let health = match ObjectRef::parse(&key) {
        Some(ObjectRef::Chunk(id)) => match index {
            Some(index) => repo.chunks().check_in(index, &id, max).await?,
            None => repo.chunks().check(&id, max).await?,
        },
        Some(ObjectRef::Node(id)) => repo.check_node(&id).await?,
        Some(ObjectRef::Pack(name)) => {
            let made = new_packs.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            packs::health(repo, &name, made).await?
        }
        Some(ObjectRef::Index(_)) | None => {
            return Err(Error::Internal(format!(
                "{key} is not a chunk, node or pack"
            )));
        }
    };
    Ok((key, health))
}

/// Unreadable manifests removed, the VMs whose newest point was one, and
/// those object lock keeps.
struct ManifestsRemoved {
    points: Vec<String>,
    newest_of: Vec<VmName>,
    locked: Vec<crate::prune::LockedPoint>,
}

/// Removes the manifests that still cannot be read (a pinned one through
/// the trash, as `prune` does), but those object lock keeps: reported
/// apart, not as removed (review, stop 52: repair said it removed them).
/// One dated in or after the second of its VM's newest readable point
/// may be the newest: a backup sets a change source aside for it while it
/// is listed, and nothing does once it is gone, so that is reported
/// (review, stop 51: repair said nothing, and the next backup applied a
/// change file made since the removed point to the one before it).
async fn remove_manifests(
    repo: &Repository,
    points: &[(VmName, PointId)],
) -> Result<ManifestsRemoved> {
    let mut doomed = Vec::new();
    for (vm, id) in points {
        match repo.load_manifest(vm, id).await {
            Err(e) if e.is_damage() => doomed.push((vm.clone(), id.clone())),
            Ok(_) | Err(Error::PointNotFound { .. }) => {} // readable again, or gone
            Err(e) => return Err(e),
        }
    }
    let mut locked = Vec::new();
    if !doomed.is_empty() {
        let pins = crate::prune::read_pins(repo).await?;
        locked = crate::prune::remove(repo, &pins, &doomed).await?.locked;
    }
    let name = |(vm, id): &(VmName, PointId)| format!("{vm}@{id}");
    doomed.retain(|p| !locked.iter().any(|l| l.point == name(p)));
    let mut newest_of: Vec<VmName> = Vec::new();
    for (vm, id) in &doomed {
        if newest_of.contains(vm) {
            continue;
        }
        let second = |t: chrono::DateTime<chrono::Utc>| t.timestamp();
        let newest = repo.latest(vm).await?;
        if newest.is_none_or(|n| second(id.time()) >= second(n.time())) {
            newest_of.push(vm.clone());
        }
    }
    Ok(ManifestsRemoved {
        points: doomed.iter().map(name).collect(),
        newest_of,
        locked,
    })
}

#[cfg(test)]
#[path = "packs_tests.rs"]
mod packs_tests;
