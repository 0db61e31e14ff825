//! What a finishing sweep may remove besides garbage: ended leases and
//! old markers.

use super::{KEEP_MARKERS, Sweep};
use crate::error::Result;
use crate::gc::markers::{SweepLog, SweepState};
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
}
