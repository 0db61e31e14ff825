//! Step (c) until nothing is unaccounted for: the rounds of checks a
//! session makes before it commits, what each asks of the caller, and
//! when a round is the last (docs/design.md, "Concurrency").

use super::{Check, Session};
use crate::error::Result;
use crate::lease::ObjectRef;

impl Session {
    /// Step (c) until nothing is unaccounted for: waits (with a notice)
    /// while a sweep deletes a batch it chose before it could see this
    /// lease; when a sweep may have removed something the session relies
    /// on, calls `restore(all, deps)` (`all`: check everything the point
    /// references, else the deps named), which stores again what is gone
    /// and returns what it found already stored (new deps, checked at
    /// the next round).
    pub async fn settle_with<F>(
        &mut self,
        progress: &crate::progress::Progress,
        restore: F,
    ) -> Result<()>
    where
        F: AsyncFnMut(bool, &[ObjectRef]) -> Result<Vec<ObjectRef>>,
    {
        self.settle_from(None, progress, restore).await
    }

    /// [`Session::settle_with`], its first round judged by `first`, a
    /// check already made (a backup makes it while its last uploads are
    /// in flight). Deps recorded since that check are written and checked
    /// by another round, even after a `Clear`.
    pub async fn settle_from<F>(
        &mut self,
        mut first: Option<Check>,
        progress: &crate::progress::Progress,
        mut restore: F,
    ) -> Result<()>
    where
        F: AsyncFnMut(bool, &[ObjectRef]) -> Result<Vec<ObjectRef>>,
    {
        let poll = std::time::Duration::from_millis(500);
        let mut told = None;
        loop {
            let check = match first.take() {
                Some(c) => c,
                None => self.check().await?,
            };
            match &check {
                Check::Clear if !self.grown() => return Ok(()),
                // Deps recorded after that check's lease write: neither
                // written nor looked at yet.
                Check::Clear => {}
                Check::Wait {
                    seq,
                    reason,
                    at_most_secs,
                } => {
                    if told != Some(*seq) {
                        progress.notice(crate::progress::Notice::WaitingForSweep {
                            seq: *seq,
                            reason: reason.clone(),
                            at_most_secs: *at_most_secs,
                        });
                        told = Some(*seq);
                    }
                    tokio::time::sleep(poll).await;
                }
                Check::Verify { all, deps, .. } => {
                    // Repairs find the same objects again, round after
                    // round: `depend` records each once.
                    let existed = restore(*all, deps).await?;
                    self.depend(existed);
                    if self.settle(&check) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Marks a `Verify`'s sweeps as accounted for (for the lease content
    /// of that check), once the caller did what it asked and recorded
    /// what it found stored ([`Session::depend`]). True when that was the
    /// last round: the check asked only for the first look at deps (no
    /// sweep, not everything), no repair sweep is running, and the lease
    /// has not grown since it was written. Another round would rewrite the
    /// same lease and find every sweep accounted for: one that began since
    /// sees the lease as written, a batch announced since looked at it,
    /// and what the round stored is younger than the session, which the
    /// cutoff spares (a repair sweep ignores leases and the cutoff, hence
    /// the exception). False: check again.
    pub fn settle(&mut self, verified: &Check) -> bool {
        let grown = self.grown();
        if let Check::Verify {
            sweeps,
            all,
            through,
            ..
        } = verified
        {
            self.deps_checked = self.content.0;
            for s in sweeps {
                let done = self.finished.contains(s);
                self.settled.insert(*s, (self.content, done));
            }
            if *all {
                // Everything was checked after those repair batches.
                let pending = std::mem::take(&mut self.targeted_pending);
                self.targeted.extend(pending);
            }
            if *all {
                // Everything the session uses was checked: whatever the
                // deleted or dead markers stood for is accounted for.
                for s in self.deleted_at_start.keys() {
                    self.settled.entry(*s).or_insert((self.content, true));
                }
                for s in self.last_at_start + 1..=*through {
                    self.settled.entry(s).or_insert((self.content, true));
                }
                self.last_at_start = self.last_at_start.max(*through);
            }
        }
        // A running repair sweep deletes what no lease protects: what
        // this round stored over damage may go in its next batch, which
        // only the next check sees.
        !grown
            && self.targeted.is_empty()
            && matches!(verified, Check::Verify { sweeps, all: false, .. } if sweeps.is_empty())
    }

    /// Whether the lease's content grew since the last check wrote it.
    fn grown(&self) -> bool {
        let r = self.lock();
        (r.deps.len(), r.pins.len()) != self.content
    }
}
