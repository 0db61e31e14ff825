//! The copied manifest as the target records it. Object lock state is the
//! target's own, never the source's: the source's `lock_generation`s and
//! lock statistics name the source's generations (or none), so they are
//! dropped, and, when the target has object lock, the copy keeps what the
//! point relies on retained as a backup of the target would
//! (`lock::extend::for_backup`), in the generation the copy began in.
//!
//! What a copy relies on without writing it (what its puts did not lock
//! through the target's locking backend): the lease's dependencies (nodes
//! found there, packs the index named), and the nodes it trusted unread
//! because the reference point has them, with their packs. Those are
//! renewed per disk unless every disk of the reference point was made in
//! this generation (a trusted node may come from any of its disks).

use super::Run;
use crate::error::Result;
use crate::lease::ObjectRef;
use crate::lock::ObjectLock;
use crate::manifest::{DiskManifest, Manifest};

/// `source` as the target must record it; `lock` is the target's object
/// lock and the generation the copy began in.
pub(super) async fn target_manifest(
    run: &Run<'_>,
    source: &Manifest,
    reference: Option<&Manifest>,
    lock: Option<(ObjectLock, u64)>,
    deps: &[ObjectRef],
) -> Result<Manifest> {
    let mut m = source.clone();
    m.stats.lock = None;
    for d in &mut m.disks {
        d.lock_generation = None;
    }
    let Some((lock, generation)) = lock else {
        return Ok(m);
    };
    // The generation every trusted node was last retained in, if one.
    let inherited = reference.and_then(|r| {
        let first = r.disks.first()?.lock_generation;
        r.disks
            .iter()
            .all(|d| d.lock_generation == first)
            .then_some(first)
            .flatten()
    });
    // What `for_backup` reads as a disk's parent: the reference point.
    let mut view: Vec<DiskManifest> = m
        .disks
        .iter()
        .map(|d| DiskManifest {
            parent: reference.map(|r| r.id.clone()),
            lock_generation: inherited,
            ..d.clone()
        })
        .collect();
    let done = crate::lock::extend::for_backup(
        run.target,
        &lock,
        generation,
        deps,
        view.iter_mut(),
        &run.progress,
    )
    .await?;
    for (d, v) in m.disks.iter_mut().zip(&view) {
        d.lock_generation = v.lock_generation;
    }
    m.stats.lock = Some(done);
    Ok(m)
}
