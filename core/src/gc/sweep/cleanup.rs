//! Step 5 of a sweep, [`Sweep::finish`], and what a finishing sweep may
//! remove besides garbage: unpinned trash, dead and ended leases, old
//! markers and staging files.

use super::{BATCH, KEEP_MARKERS, Sweep};
use crate::backend::PutMode;
use crate::error::Result;
use crate::gc::GcReport;
use crate::gc::markers::{Phase, SweepLog, SweepState};
use crate::keys;

impl Sweep {
    /// Ended leases every running sweep has looked past: their points
    /// were committed before those sweeps' last look (or listing), so no
    /// sweep needs them any more.
    pub(super) async fn removable_ended(&self) -> Result<Vec<String>> {
        let mut horizon = self.started.min(
            self.marker
                .snapshot()
                .leases_read_at
                .unwrap_or(self.started),
        );
        let ttl = self.repo.config().protocol.sweep_ttl();
        let log = SweepLog::read(&self.repo).await?;
        for (seq, refreshed) in log.running() {
            if seq == self.seq || self.started - refreshed > ttl {
                continue; // this one, or dead (it deletes nothing more)
            }
            match SweepState::load(&self.repo, seq, false).await {
                // Not looked yet: its first look and listing come later.
                // Over: it deletes nothing more.
                Ok(Some(s)) if s.phase.is_over() => {}
                Ok(Some(s)) => {
                    if let Some(t) = s.leases_read_at {
                        horizon = horizon.min(t);
                    }
                }
                Ok(None) => {}
                // Unreadable: assume it knows nothing yet.
                Err(e) if e.is_damage() => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        let margin = self.repo.config().protocol.margin();
        Ok(self
            .prot
            .ended
            .values()
            .filter(|m| m.last_modified + margin < horizon)
            .map(|m| m.key.clone())
            .collect())
    }

    /// Markers matter to backups that began before their sweep finished;
    /// those of sweeps over before the cutoff (before every live lease
    /// began, and before this sweep) are of no use to anyone. The newest
    /// stay, so sequence numbers keep counting up.
    pub(super) fn old_markers(&self) -> Vec<String> {
        let ttl = self.repo.config().protocol.sweep_ttl();
        let cutoff = self.prot.cutoff;
        let mut out = Vec::new();
        for (&seq, &refreshed) in &self.log.started {
            let over = match self.log.done.get(&seq) {
                Some(&done) => done < cutoff,
                None => self.started - refreshed > ttl && refreshed < cutoff,
            };
            if seq + KEEP_MARKERS <= self.seq && over {
                out.push(keys::sweep(seq));
                out.push(keys::done(seq));
            }
        }
        out
    }

    /// Step 5.
    pub async fn finish(mut self) -> Result<GcReport> {
        // One more look: pins written since decide which trash stays.
        self.look().await?;
        let pinned = &self.prot.pinned;
        let mut doomed: Vec<String> = self
            .trash
            .iter()
            .filter(|p| !pinned.contains(*p))
            .map(|(vm, id)| keys::trashed_point(vm, id))
            .collect();
        self.report.trash_removed = doomed.len() as u64;
        self.report.dead_leases_removed = self.prot.dead.len() as u64;
        doomed.extend(self.prot.dead.keys().cloned());
        let ended = self.removable_ended().await?;
        self.report.ended_leases_removed = ended.len() as u64;
        doomed.extend(ended);
        doomed.extend(self.old_markers());
        let records = crate::removed::superseded(&self.repo).await?;
        self.report.removed_records_cleared = records.len() as u64;
        doomed.extend(records);
        self.report.stray_lease_objects = self.prot.stray.len() as u64;
        self.report.future_leases = self.prot.future.len() as u64;
        self.report.lease_looks = self.prot.looks;
        self.count_marks();
        if self.dry_run {
            return Ok(self.report);
        }
        for part in doomed.chunks(BATCH) {
            self.refresh().await?;
            self.repo.backend().delete_many(part).await?;
        }
        // Staging files of killed writers, by the same age rule as objects
        // (a running writer's are younger than its lease).
        self.refresh().await?;
        self.report.incomplete_removed = self
            .repo
            .backend()
            .remove_incomplete(self.prot.cutoff)
            .await?;
        self.write_done().await?;
        Ok(self.report)
    }

    /// Writes `gc/done/<seq>`: the sweep is over.
    pub(super) async fn write_done(&self) -> Result<()> {
        self.marker.update(|s| s.phase = Phase::Done);
        let done = self.marker.snapshot();
        self.repo
            .backend()
            .put(
                &keys::done(self.seq),
                done.encode(self.repo.codec(), &keys::done(self.seq))?,
                PutMode::Create,
            )
            .await?;
        Ok(())
    }
}
