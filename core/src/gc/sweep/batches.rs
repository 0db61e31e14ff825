//! Step 4 of a sweep: deletion in announced batches. Each batch is
//! announced in the marker ([`Phase::Deleting`]), filtered after another
//! look at the leases ([`Sweep::begin_batch`]), then deleted and the
//! marker set back to [`Phase::Idle`] ([`Sweep::commit_batch`]). A backup
//! that sees no batch in flight knows that every later deletion respects
//! its lease as it is now; one that sees a batch in flight waits for that
//! batch only.

use futures::TryStreamExt;

use super::{Candidate, Listed, Sweep};
use crate::error::{Error, Result};
use crate::gc::markers::Phase;
use crate::id::ObjectId;
use crate::keys;
use crate::progress::GcStep;

impl Sweep {
    /// Step 4: deletes the unreferenced, old nodes in batches, then dead
    /// packs and replaced index objects (see [`packs`]).
    pub async fn delete(&mut self) -> Result<()> {
        // The listing holds its own handle, so batches can be deleted
        // while it goes on (deleting listed keys is safe on S3 and local
        // directories alike).
        let backend = self.repo.backend().clone();
        let mut nodes = backend
            .list(keys::NODES)
            .map_err(Error::from)
            .try_filter_map(|meta| futures::future::ready(Ok(Listed::node(meta))));
        self.delete_listed(&mut nodes).await?;
        drop(nodes);
        if self.prot.hold.is_none() {
            self.prepare_packs().await?;
            let candidates = self.pack_candidates();
            let mut listing = futures::stream::iter(candidates.into_iter().map(|c| Ok(c.listed)));
            self.delete_listed(&mut listing).await?;
        }
        if let Some(why) = &self.prot.hold {
            self.report.held = Some(format!("{why}; nothing more deleted (run gc again later)"));
        }
        Ok(())
    }

    async fn delete_listed(
        &mut self,
        listing: &mut (impl futures::Stream<Item = Result<Listed>> + Unpin),
    ) -> Result<()> {
        let mut batch = Vec::new();
        while let Some(listed) = listing.try_next().await? {
            if self.prot.hold.is_some() {
                break;
            }
            if let Some(c) = self.candidate(listed) {
                batch.push(c);
                if batch.len() >= self.batch_size {
                    self.flush(&mut batch).await?;
                }
            }
        }
        self.flush(&mut batch).await
    }

    async fn flush(&mut self, batch: &mut Vec<Candidate>) -> Result<()> {
        // Between batches, never inside one: a batch announced is deleted
        // or abandoned whole, and the marker then says what was deleted.
        self.stop_if_cancelled().await?;
        self.keep_locked(batch).await?;
        self.begin_batch(batch).await?;
        self.commit_batch(batch).await
    }

    /// Whether a listed object is a deletion candidate (a node unmarked
    /// and older than the cutoff; a pack or index object as the census
    /// decided); counts the nodes listed.
    pub fn candidate(&mut self, listed: Listed) -> Option<Candidate> {
        let c = Candidate::new(listed);
        let Listed::Node(meta, id) = &c.listed else {
            return Some(c);
        };
        self.report.nodes_listed += 1;
        if self.prot.deletable(meta, id, true) {
            return Some(c);
        }
        if !self.prot.marks.has_node(id) {
            self.report.young_kept += 1;
        }
        None
    }

    /// Announces a delete batch, looks at the leases again and drops from
    /// the batch what they now protect.
    pub async fn begin_batch(&mut self, batch: &mut Vec<Candidate>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.marker.update(|s| s.phase = Phase::Deleting);
        self.look().await?;
        let before = batch.len();
        if self.prot.hold.is_some() {
            batch.clear();
        } else {
            // Packs first: an index object naming a pack spared now stays.
            let late = self.late_packs(batch).await?;
            let spared: Vec<ObjectId> = batch
                .iter()
                .filter_map(|c| match &c.listed {
                    Listed::Pack(_, name) if !self.pack_deletable(&c.listed, &late) => Some(*name),
                    _ => None,
                })
                .collect();
            self.spare(spared);
            let mut keep = late;
            keep.extend(self.blocked_index(batch).await?);
            batch.retain(|c| match &c.listed {
                Listed::Node(meta, id) => self.prot.deletable(meta, id, true),
                other => self.pack_deletable(other, &keep),
            });
        }
        self.report.spared_late += (before - batch.len()) as u64;
        Ok(())
    }

    /// Deletes an announced batch and marks the sweep idle again.
    pub async fn commit_batch(&mut self, batch: &mut Vec<Candidate>) -> Result<()> {
        if !batch.is_empty() {
            // Counted before the request: a batch that fails part way may
            // have deleted any of it, and the marker (`stop` publishes it)
            // must say so, so that backups check what they rely on.
            for c in batch.iter() {
                let r = &mut self.report;
                match &c.listed {
                    Listed::Node(meta, _) => {
                        r.nodes_deleted += 1;
                        r.bytes_freed += meta.size;
                    }
                    Listed::Pack(meta, name) => {
                        r.packs_deleted += 1;
                        r.bytes_freed += meta.size;
                        // Copies are left out when their pack goes (a
                        // pack spared, or whose rewrite did not take it,
                        // keeps them).
                        if let Some(census) = &self.census {
                            let (n, bytes) = census.copies.left_out_of(name);
                            r.copies_left_out += n;
                            r.copy_bytes_left_out += bytes;
                        }
                    }
                    Listed::Index(..) => r.index_objects_deleted += 1,
                }
            }
            self.publish_counts();
            if !self.dry_run {
                self.refresh().await?;
                self.prot.deleting();
                let keys: Vec<String> = batch.drain(..).map(|c| c.meta().key.clone()).collect();
                self.repo.backend().delete_many(&keys).await?;
            }
            self.report.batches += 1;
            let r = &self.report;
            self.step(GcStep::Deleted {
                batches: r.batches,
                nodes: r.nodes_deleted,
                packs: r.packs_deleted,
                bytes: r.bytes_freed,
            });
        }
        batch.clear();
        self.publish_counts();
        self.marker.update(|s| s.phase = Phase::Idle);
        if !self.dry_run {
            self.marker.write().await?;
        }
        Ok(())
    }

    /// Puts the report's deletion counts in the marker's state (written
    /// by the next refresh).
    pub(super) fn publish_counts(&self) {
        let r = &self.report;
        let (chunks, nodes, packs, index, batches) = (
            r.chunks_deleted,
            r.nodes_deleted,
            r.packs_deleted,
            r.index_objects_deleted,
            r.batches,
        );
        self.marker.update(|s| {
            s.chunks_deleted = chunks;
            s.nodes_deleted = nodes;
            s.packs_deleted = packs;
            s.index_deleted = index;
            s.batches = batches;
        });
    }
}
