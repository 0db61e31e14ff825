//! Restore: one disk of one point, to a new (or, when allowed, replaced)
//! file, a block device, or stdout.
//!
//! Work is done a segment at a time, several segments at once
//! (`segment.rs`): fetch the node, fetch its chunks concurrently, then on
//! a blocking thread decompress each chunk into the segment's buffer,
//! check it against its id, hash the segment as a BLAKE3 subtree. One
//! writer thread takes segments in disk order (`sink.rs`), so stdout gets
//! the image in order, and the per-segment hashes merge into the BLAKE3 of
//! the whole image (see [`image_hash`]).
//!
//! What may be written is decided first (`target.rs`); a file is written
//! under a unique temporary name and published only when complete
//! (`partial.rs`), so a failed, refused or cancelled restore never leaves
//! a truncated image under the requested name, and never writes through a
//! link someone planted. Zero runs are not written and stay holes.

#[cfg(test)]
mod index_damage_tests;
mod part;
mod partial;
mod read;
mod segment;
mod sink;
mod stale;
mod target;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

pub(crate) use self::part::PART;
pub use self::read::{PartData, PartReader};
use self::segment::{BufferPool, Piece, SegmentCtx};
use self::sink::Sink;
pub use self::stale::{Leftover, removes_leftovers_in};
pub use self::target::{Allow, Target};
use crate::error::{Error, Result};
use crate::image_hash;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::task::blocking;

/// Parts (of at most 16 MiB, `part.rs`) in flight: bounds memory to
/// about twice this many parts (compressed chunks plus the decompressed
/// buffer), whatever the segment size.
const PARTS_IN_FLIGHT: usize = 4;
/// Segments whose nodes are fetched ahead of their parts.
const NODES_AHEAD: usize = 2;

/// Restore options.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions {
    /// Flush the image to stable storage before reporting success.
    pub sync: bool,
    /// Compute the BLAKE3 of the whole image. Every chunk is verified
    /// against its id either way; the image hash lets an operator compare
    /// with `b3sum` of the source, and costs hashing every byte, zeros
    /// included.
    pub image_hash: bool,
    /// Go on past damaged or missing data: write zeros there and list the
    /// ranges in the outcome (errors that are not damage still stop it).
    pub ignore_damage: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            sync: false,
            image_hash: true,
            ignore_damage: false,
        }
    }
}

/// A range of the image written as zeros because the data that belongs
/// there is damaged or missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedRange {
    pub offset: u64,
    pub length: u64,
    /// `chunk <id>` or `node <id>` (a node's whole segment).
    pub object: String,
    pub reason: String,
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub bytes: u64,
    /// BLAKE3 of the image as written (unless not asked for); with
    /// damaged ranges, of the image with their zeros.
    pub blake3: Option<String>,
    /// With `ignore_damage`: every range written as zeros, in disk order.
    pub damaged: Vec<DamagedRange>,
    /// Partial images that killed restores left next to the target,
    /// removed before this one began (`stale.rs`).
    pub abandoned_removed: Vec<Leftover>,
}

/// Records the damaged objects the restore met, so that backups store
/// them again and `repair` finds them. Best effort: a repository that
/// cannot be written (read-only credentials) still restores.
async fn record_damage(repo: &Repository, ctx: &SegmentCtx) {
    let found: Vec<_> = std::mem::take(&mut *ctx.found.lock().unwrap_or_else(|p| p.into_inner()))
        .into_iter()
        .collect();
    let _ = crate::damage::record_all(repo, &found, "restore").await;
}

/// The damage met in a point removed meanwhile: what is gone went with
/// the point, but damaged bytes still stored are damage (a backup making
/// the same content would rely on them), so those are recorded. If the
/// store cannot say, everything is recorded: a stale record costs one
/// upload.
async fn record_still_stored(repo: &Repository, ctx: &SegmentCtx) {
    let found = || ctx.found.lock().unwrap_or_else(|p| p.into_inner());
    let keys: Vec<String> = found().keys().cloned().collect();
    if let Ok(gone) = crate::damage::gone_now(repo, &keys).await {
        found().retain(|k, _| !gone.contains(k));
    }
    record_damage(repo, ctx).await;
}

/// Whether point `m`'s manifest is gone from the store: a restore takes
/// no lease (it must run with read-only credentials), so a prune and the
/// gc after it may remove the point while it is read, and what that
/// removed is then missing without being damaged (found by a crash
/// walk: exit 3, and a damage record verify did not share). A store that
/// cannot say leaves the damage reported.
async fn point_removed(repo: &Repository, m: &Manifest) -> bool {
    matches!(repo.point_gone(&m.vm, &m.id).await, Ok(true))
}

/// Restores disk `disk` of point `m` to `target`. Stops when `progress`
/// is cancelled, removing its partial image ([`Error::Cancelled`]).
pub async fn restore(
    repo: &Repository,
    m: &Manifest,
    disk: &str,
    target: &Target,
    opts: RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreOutcome> {
    repo.codec().require_data("restore")?;
    let d = Arc::new(m.disk(disk)?.clone());
    if progress.is_cancelled() {
        return Err(Error::Cancelled {
            cleaned: "nothing was written".into(),
        });
    }
    progress.add_total(d.size);
    let abandoned_removed = match target {
        Target::File { path, .. } => stale::remove_abandoned_next_to(path),
        Target::Stdout | Target::Device(_) => Vec::new(),
    };
    for l in &abandoned_removed {
        progress.notice(crate::progress::Notice::LeftoverRemoved {
            path: l.path.display().to_string(),
            bytes: l.bytes,
        });
    }
    let mut sink = Sink::open(target, d.size)?;
    let unit = part::part_size(d.segment_size);
    // Read only, never written: the allocator maps it lazily (an
    // `Arc<[u8]>` made from it would be a copy, 16 MiB of memory).
    let zeros = Arc::new(vec![0u8; unit as usize]);
    let buffers = Arc::new(BufferPool::default());

    // One writer thread takes segments in disk order: sequential writes
    // suit every target (and stdout needs them), while decompression and
    // hashing run in parallel on the segment tasks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
    let writer = {
        let (zeros, buffers, progress) = (zeros.clone(), buffers.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            while let Some(piece) = rx.blocking_recv() {
                if progress.is_cancelled() {
                    break;
                }
                let len = sink.write(&piece, &zeros)?;
                progress.add_done(len);
                if let Piece::Data { buf, .. } = piece {
                    buffers.give(buf);
                }
            }
            Ok::<_, Error>(sink)
        })
    };

    let index = repo.chunks().open_index().await?;
    let ctx = Arc::new(SegmentCtx {
        repo: repo.clone(),
        index: std::sync::Mutex::new(index),
        d: d.clone(),
        zeros,
        buffers,
        point: m.point_name(),
        progress: progress.clone(),
        image_hash: opts.image_hash,
        ignore_damage: opts.ignore_damage,
        found: Default::default(),
    });
    let mut hashes = Vec::with_capacity(d.segments.len());
    let mut damaged = Vec::new();
    let mut done = futures::stream::iter(0..d.segments.len())
        .map(|i| ctx.clone().parts(i))
        .buffered(NODES_AHEAD)
        .map_ok(|parts| futures::stream::iter(parts.into_iter().map(Ok::<_, Error>)))
        .try_flatten()
        .map_ok(|p| ctx.clone().restore_part(p))
        .try_buffered(PARTS_IN_FLIGHT);
    let mut failed = None;
    loop {
        let seg = tokio::select! {
            biased;
            _ = progress.cancelled() => break,
            seg = done.next() => seg,
        };
        match seg {
            None => break,
            Some(Ok(seg)) => {
                hashes.push(seg.hash);
                for r in seg.damaged {
                    part::push_damaged(&mut damaged, r, d.segment_size);
                }
                if tx.send(seg.piece).await.is_err() {
                    break; // the writer stopped; its outcome is looked at below
                }
            }
            Some(Err(e)) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Dropping the stream drops the fetches in flight.
    drop((done, tx));
    // A writer that failed dropped the sink, which removed a partial image.
    let sink = writer
        .await
        .map_err(|e| Error::Internal(format!("restore writer died: {e}")))??;
    if progress.is_cancelled() {
        let cleaned = blocking("restore writer", move || sink.abandon()).await?;
        return Err(Error::Cancelled { cleaned });
    }
    let met_damage = failed.as_ref().is_some_and(Error::is_damage)
        || !damaged.is_empty()
        || !ctx
            .found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
    if met_damage && point_removed(repo, m).await {
        drop(sink); // removes the partial image
        record_still_stored(repo, &ctx).await;
        return Err(Error::PointRemoved {
            point: m.point_name(),
        });
    }
    record_damage(repo, &ctx).await;
    if let Some(e) = failed {
        drop(sink);
        return Err(e);
    }
    blocking("restore writer", move || sink.finish(opts.sync)).await??;
    Ok(RestoreOutcome {
        bytes: d.size,
        blake3: hashes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|h| image_hash::combine(&h, unit, d.size).to_hex().to_string()),
        damaged,
        abandoned_removed,
    })
}
