//! Keeping what a point relies on locked long enough: each object's
//! retention is read (a HEAD) and extended (PutObjectRetention) when it
//! ends before the generation's.
//!
//! A backup in generation `g` writes its new objects with `g`'s retention
//! ([`super::store`]). What it relies on without writing falls in three
//! groups:
//! - objects its pipeline found already stored (a node whose create-only
//!   put found it there, a pack the index named for a chunk): its lease's
//!   dependencies, always checked, since nothing says when they were last
//!   extended (a dead pack revived by dedup may be about to expire);
//! - a disk's nodes and packs inherited from its parent: if the parent's
//!   disk was made in `g` too (its `lock_generation`), they were written
//!   or checked in `g` already; otherwise every node of the disk and every
//!   pack of their chunks is checked, once per generation per disk;
//! - the config and the key slots, checked by every backup (a few HEADs).

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{ObjectLock, Retention};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;
use crate::manifest::DiskManifest;
use crate::progress::Progress;
use crate::repo::Repository;

/// Retentions read or extended at once.
const IN_FLIGHT: usize = 16;

/// What a backup did for object lock, kept in its manifest's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extended {
    /// Objects whose retention was read (one HEAD each).
    pub checked: u64,
    /// Of those, retentions extended (one PutObjectRetention each).
    pub extended: u64,
    /// Disks whose inherited objects were all checked (a new generation).
    pub disks_renewed: u64,
    /// Objects found gone when looked at (see [`ensure`]).
    pub gone: u64,
}

impl Extended {
    pub fn add(&mut self, o: &Extended) {
        self.checked += o.checked;
        self.extended += o.extended;
        self.disks_renewed += o.disks_renewed;
        self.gone += o.gone;
    }
}

/// Reads the retention of every key and extends it to `want` where it
/// ends earlier. A key that is gone is skipped, counted and added to
/// `gone`: the index may name a pack a gc has just deleted (readers then
/// take another copy), and a point's missing node is the lease protocol's
/// and verify's business, not this one's. A key showing no retention is
/// refused ([`super::no_retention`]): it is not the version xfull put.
pub async fn ensure(
    backend: &Arc<dyn Backend>,
    keys: &[String],
    want: Retention,
    progress: &Progress,
    gone: &mut Vec<String>,
) -> Result<Extended> {
    let mut out = Extended::default();
    let mut done = futures::stream::iter(keys.iter().map(|key| async move {
        let (now, version) = match backend.retention(key).await {
            Ok(r) => match r.retention {
                Some(now) => (now, r.version),
                None => return Err(super::no_retention(backend.as_ref(), key)),
            },
            Err(e) if e.is_not_found() => return Ok((key, None)),
            Err(e) => return Err(Error::from(e)),
        };
        let extend = now.until < want.until;
        if extend {
            // The version the HEAD saw: one put since is not xfull's.
            match backend
                .extend_retention(key, version.as_deref(), want)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => return Ok((key, None)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok::<_, Error>((key, Some(extend)))
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some((key, r)) = done.try_next().await? {
        progress.add_done(1);
        match r {
            Some(extended) => {
                out.checked += 1;
                out.extended += u64::from(extended);
            }
            None => {
                out.gone += 1;
                gone.push(key.clone());
            }
        }
        if progress.is_cancelled() {
            return Err(Error::Cancelled {
                cleaned: "stopped before storing the point; retentions already extended \
                          stay (what was uploaded is garbage for the next gc)"
                    .into(),
            });
        }
    }
    Ok(out)
}

/// Makes everything a backup's point relies on retained until the end of
/// `generation` plus the lock period (see the module's comment), and
/// records the generation in each disk's manifest. On entry each disk's
/// `lock_generation` is its parent's (`None`: no parent, or one made
/// before the repository had object lock).
pub async fn for_backup<'a>(
    repo: &Repository,
    lock: &ObjectLock,
    generation: u64,
    deps: &[ObjectRef],
    disks: impl Iterator<Item = &'a mut DiskManifest>,
    progress: &Progress,
) -> Result<Extended> {
    let want = lock.retention_of(generation);
    let mut keys: Vec<String> = deps
        .iter()
        .filter(|d| matches!(d, ObjectRef::Node(_) | ObjectRef::Pack(_)))
        .map(ObjectRef::key)
        .collect();
    keys.push(keys::CONFIG.to_string());
    let slots: Vec<String> = repo
        .backend()
        .list(crate::crypto::slot::SLOTS)
        .map_ok(|m| m.key)
        .try_collect()
        .await?;
    // Key slots only: not whatever else was planted under `keys/`.
    keys.extend(
        slots
            .into_iter()
            .filter(|k| crate::crypto::slot::parse_slot_key(k).is_some()),
    );
    keys.sort_unstable();
    keys.dedup();
    progress.add_total(keys.len() as u64);
    let mut gone = Vec::new();
    let mut out = ensure(repo.backend(), &keys, want, progress, &mut gone).await?;
    // A dependency found gone: the point relies on another copy of its
    // chunks (or on one stored again), whose retention nothing above
    // read. Every disk is then looked at whole, every copy extended.
    let all = out.gone > 0;
    let mut disks: Vec<&mut DiskManifest> = disks.collect();
    let mut nodes: Vec<ObjectId> = Vec::new();
    for disk in disks.iter_mut() {
        if all || (disk.parent.is_some() && disk.lock_generation != Some(generation)) {
            nodes.extend(disk.segments.iter().flatten());
            out.disks_renewed += 1;
        }
    }
    if !nodes.is_empty() {
        nodes.sort_unstable();
        nodes.dedup();
        let packs = renewal_packs(repo, &nodes, progress).await?;
        let mut keys: Vec<String> = nodes.iter().map(|n| ObjectRef::Node(*n).key()).collect();
        keys.extend(packs.iter().map(|p| ObjectRef::Pack(*p).key()));
        progress.add_total(keys.len() as u64);
        let mut gone = Vec::new();
        out.add(&ensure(repo.backend(), &keys, want, progress, &mut gone).await?);
        let gone: HashSet<ObjectId> = gone.iter().filter_map(|k| keys::parse_pack(k)).collect();
        if !gone.is_empty() {
            only_in_gone(repo, &nodes, &gone, progress).await?;
        }
    }
    // Recorded only once all of it is retained: a later backup in this
    // generation trusts it without a look.
    for disk in disks {
        disk.lock_generation = Some(generation);
    }
    Ok(out)
}

/// The packs of the chunks of `nodes`, every copy. A chunk the index does
/// not place (an index object a gc merged and deleted since it was
/// opened) is looked up once more in the index as it is now; one still
/// unknown fails the backup: its pack's retention cannot be extended, and
/// recording the generation anyway would make every later backup of the
/// generation trust it.
async fn renewal_packs(
    repo: &Repository,
    nodes: &[ObjectId],
    progress: &Progress,
) -> Result<Vec<ObjectId>> {
    let mut found = crate::point_objects::packs_of_nodes(repo, nodes, progress).await?;
    if found.unknown_chunks > 0 {
        found = crate::point_objects::packs_of_nodes(repo, nodes, progress).await?;
    }
    if found.unknown_chunks > 0 {
        return Err(Error::corrupt(
            keys::INDEX,
            format!(
                "{} chunks of this point are in no index object, so object lock cannot extend \
                 the retention of their packs; run `xfull index rebuild`, then back up again",
                found.unknown_chunks
            ),
        ));
    }
    Ok(found.packs)
}

/// Fails if a chunk of `nodes` has no copy outside `gone` (packs found
/// gone while their retention was extended). Such a pack was deleted, or
/// hidden behind a delete marker on a versioned bucket, where its locked
/// version stays only until its old retention ends: a point committed on
/// it could not be restored, and recording the generation would make
/// every later backup of the generation trust it. A chunk with another
/// copy is fine: a gc deleted the pack after this backup found the chunk
/// there, and the backup stored the chunk again (the index names both).
async fn only_in_gone(
    repo: &Repository,
    nodes: &[ObjectId],
    gone: &HashSet<ObjectId>,
    progress: &Progress,
) -> Result<()> {
    let lost = crate::point_objects::chunks_only_in(repo, nodes, gone, progress).await?;
    let Some((chunks, pack)) = lost else {
        return Ok(());
    };
    Err(Error::corrupt(
        keys::pack(&pack),
        format!(
            "{chunks} chunks of this point are only in packs that are gone ({} found gone, this \
             one among them): deleted, or hidden behind a delete marker, which object lock \
             keeps only until the retention they had ends; run `xfull undelete` while it \
             holds, then back up again (`xfull verify` names what stays lost)",
            gone.len()
        ),
    ))
}
