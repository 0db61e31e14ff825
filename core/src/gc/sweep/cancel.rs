//! Stopping a sweep on request (SIGINT, SIGTERM: `Progress::cancel`) at a
//! safe point: between points while marking, between index objects and
//! runs of entries in the census, between packs while repacking, between
//! index objects written, and between delete batches (never inside one).
//! The sweep then stops as a crash there would, with two differences: its
//! marker says `Stopped` at once (`gc::run_with` writes it), so neither
//! the next gc nor a backup waits for it to go stale; and index objects it
//! wrote are removed again if no pack or index object was deleted yet.
//!
//! Why remove them: what a stopped sweep wrote is then cleaned up where
//! it safely can be. Without their index object the new packs are orphans
//! whose chunks are all in indexed packs: the next gc deletes them once
//! they are older than its cutoff, or, rewriting the same old packs, writes
//! the same new packs again (blobs are copied verbatim, so the bytes and
//! the name repeat, encrypted or not) and keeps them. The removal is a
//! delete batch like any other (announced, after a look at the leases): a
//! backup that found a chunk through the new objects and named a new pack
//! or index object as a dependency keeps them.

use std::collections::HashSet;

use super::{Candidate, Listed, Sweep};
use crate::backend::ObjectMeta;
use crate::error::{Error, Result};
use crate::gc::markers::Phase;
use crate::keys;

impl Sweep {
    /// Whether the sweep was asked to stop.
    pub(super) fn cancelled(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| p.is_cancelled())
    }

    /// At a safe point: nothing if the sweep may go on; else undoes what
    /// can be undone and fails with [`Error::Cancelled`] saying what it
    /// left.
    pub(super) async fn stop_if_cancelled(&mut self) -> Result<()> {
        if !self.cancelled() {
            return Ok(());
        }
        Err(Error::Cancelled {
            cleaned: self.undo().await?,
        })
    }

    async fn undo(&mut self) -> Result<String> {
        let r = &self.report;
        if self.dry_run {
            return Ok("gc stopped (dry run: nothing was written)".into());
        }
        let deleted = format!(
            "gc stopped after deleting {} nodes, {} packs and {} index objects",
            r.nodes_deleted, r.packs_deleted, r.index_objects_deleted
        );
        if r.packs_deleted + r.index_objects_deleted > 0 {
            // Old packs are going: the new objects are the only place of
            // some moved chunks now.
            return Ok(format!(
                "{deleted}; the packs and index objects it wrote stay, and the next gc finishes \
                 the work"
            ));
        }
        let (written, removed) = self.remove_written_index().await?;
        let kept = written - removed;
        let mut out = deleted;
        if written > 0 {
            out += &format!("; {removed} of the {written} index objects it wrote were removed");
            if kept > 0 {
                out += " (the others stay: a backup relies on them)";
            }
        }
        if self.report.packs_written > 0 && kept == 0 {
            out += &format!(
                "; its {} new packs, named by no index object, are left for the next gc",
                self.report.packs_written
            );
        }
        Ok(out)
    }

    /// Deletes, as an announced batch, the index objects this sweep
    /// created (not those it wrote again byte for byte), unless a live
    /// lease names one of them or one of the new packs; returns how many
    /// it had created and how many were deleted.
    async fn remove_written_index(&mut self) -> Result<(u64, u64)> {
        let Some(census) = &self.census else {
            return Ok((0, 0));
        };
        let old: HashSet<&str> = census
            .objects
            .iter()
            .map(|o| o.object.meta.key.as_str())
            .collect();
        let mut batch: Vec<Candidate> = census
            .written
            .iter()
            .filter(|k| !old.contains(k.as_str()))
            .filter_map(|k| {
                let name = keys::parse_index(k)?;
                let meta = ObjectMeta {
                    key: k.clone(),
                    size: 0,
                    last_modified: self.started,
                    storage_class: None,
                };
                Some(Candidate::new(Listed::Index(meta, name)))
            })
            .collect();
        let created = batch.len() as u64;
        if created == 0 {
            return Ok((0, 0));
        }
        self.marker.update(|s| s.phase = Phase::Deleting);
        self.look().await?;
        let relied_on = self
            .new_packs
            .iter()
            .any(|p| self.prot.pack_deps.contains(p));
        if self.prot.hold.is_some() || relied_on {
            batch.clear();
        } else {
            batch.retain(|c| !self.prot.index_deps.contains(&c.id()));
        }
        let removed = batch.len() as u64;
        self.commit_batch(&mut batch).await?;
        Ok((created, removed))
    }
}
