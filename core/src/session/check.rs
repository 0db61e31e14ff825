//! (c), [`Session::check`]: the lease written with every dep, then the
//! sweeps that did not finish before the session began, judged from their
//! markers: what to re-check, or which delete batch to wait for.

use std::collections::BTreeSet;

use super::{Check, Session, put_lease, read_markers, time_and_log};
use crate::error::Result;
use crate::gc::markers::{Phase, SweepState};
use crate::repo::Repository;

impl Session {
    /// (c): see [`Check`].
    pub async fn check(&mut self) -> Result<Check> {
        self.check_began = Some(std::time::Instant::now());
        let (now, log) = {
            // No heartbeat between this write and the HEAD: the time read
            // back is this write's, which precedes the listing. A later
            // write's time could follow the listing, and a sweep whose
            // marker the listing saw fresh would then look dead (found
            // by review: a HEAD answered slowly, a heartbeat meanwhile).
            let held = self.writer.clone().lock_owned().await;
            let _one_at_a_time = put_lease(&self.repo, &self.key, &self.record, held).await?;
            time_and_log(&self.repo, &self.key).await?
        };
        let ttl_lease = self.repo.config().protocol.ttl();
        if self.checked_at.is_some_and(|t| now - t > ttl_lease / 2) {
            // The lease may have died since the last check: a running
            // sweep judged then may have stopped seeing it. Judge again.
            self.settled.retain(|_, (_, done)| *done);
            self.in_flight.clear();
            self.baseline = None;
        }
        self.checked_at = Some(now);
        self.finished.clear();
        let (session, pins, deps) = {
            let r = self.lock();
            (r.session.clone(), r.pins.len(), r.deps.clone())
        };
        self.content = (deps.len(), pins);
        let ttl = self.repo.config().protocol.sweep_ttl();
        // A sweep numbered above what an earlier check with this content
        // listed began after that check wrote the lease: every look of it
        // sees the lease as it is now, alive (no stall since), so none of
        // its batches needs waiting for. Without this, a backup checking
        // again after a wait could meet the next sweep of a gc loop mid
        // batch, and the next, and never commit.
        let began_after = match self.baseline {
            Some((content, last)) if content == self.content => last,
            _ => {
                self.baseline = Some((self.content, log.last_seq()));
                u64::MAX
            }
        };

        // Markers of sweeps that may matter, deleted since: nothing is
        // known about what those sweeps deleted.
        let mut all = self.deleted_at_start.keys().any(|s| {
            !self.settled.contains_key(s)
                && !log.started.contains_key(s)
                && !log.done.contains_key(s)
        });
        if let Some(&first) = log.started.keys().next()
            && first > self.last_at_start + 1
            && (first - self.last_at_start > 1000
                || !(self.last_at_start + 1..first).all(|s| self.settled.contains_key(&s)))
        {
            all = true;
        }

        let seqs: BTreeSet<u64> = log.started.keys().chain(log.done.keys()).copied().collect();
        let mut sweeps = Vec::new();
        let mut from = deps.len();
        self.targeted_pending.clear();
        // A running repair sweep is never settled: it may delete more.
        let judged = |seq: &u64| {
            self.targeted.contains_key(seq)
                || !(self.done_at_start.contains(seq)
                    || self
                        .settled
                        .get(seq)
                        .is_some_and(|(c, _)| *c == self.content))
        };
        // The markers of the sweeps to judge, read at once.
        let wanted: Vec<u64> = seqs.iter().copied().filter(judged).collect();
        let repo = &self.repo;
        let mut states = read_markers(wanted, async |seq| {
            load_state(repo, seq, log.done.contains_key(&seq)).await
        })
        .await?;
        for seq in seqs {
            let watching = self.targeted.contains_key(&seq);
            let Some(loaded) = states.remove(&seq) else {
                continue;
            };
            let state = match loaded {
                Some(s) => s,
                None => {
                    // Gone, or unreadable: what it deleted is unknown.
                    all = true;
                    sweeps.push(seq);
                    continue;
                }
            };
            let refreshed = log.started.get(&seq).copied().unwrap_or(now);
            if state.targeted && !state.phase.is_over() && now - refreshed <= ttl {
                // Repair deletes what leases do not protect: wait while it
                // deletes, and check everything again after every batch
                // (an object stored over a damaged copy since repair
                // looked at it may have gone).
                let verified = match self.targeted.get(&seq) {
                    Some(&n) => n,
                    None => self.deleted_at_start.get(&seq).copied().unwrap_or(0),
                };
                self.targeted.insert(seq, verified);
                if state.phase == Phase::Deleting {
                    return Ok(Check::Wait {
                        seq,
                        reason: format!(
                            "repair on {} is removing damaged objects, which backups must \
                             then check for",
                            state.host
                        ),
                        at_most_secs: (ttl - (now - refreshed)).num_seconds().max(1) as u64,
                    });
                }
                if state.deleted() > verified {
                    all = true;
                    self.targeted_pending.insert(seq, state.deleted());
                }
                continue;
            }
            if watching {
                // The repair sweep is over (or dead): judged as any sweep,
                // against what was last checked.
                let verified = self.targeted.remove(&seq).unwrap_or(0);
                self.deleted_at_start.insert(seq, verified);
            }
            if state.phase.is_over() {
                self.finished.insert(seq);
            } else {
                if now - refreshed > ttl {
                    // Died without finishing: what it deleted is unknown
                    // (it deletes nothing more: it stops when silent).
                    all = true;
                    self.finished.insert(seq);
                    sweeps.push(seq);
                    continue;
                }
                // A batch announced after an earlier look of ours (at the
                // same lease content) sees the lease: no need to wait.
                let announced_since = self
                    .in_flight
                    .get(&seq)
                    .is_some_and(|&(b, c)| c == self.content && state.batches > b);
                if state.phase == Phase::Deleting && !announced_since && seq <= began_after {
                    self.in_flight.insert(seq, (state.batches, self.content));
                    let left = (ttl - (now - refreshed)).num_seconds().max(1) as u64;
                    return Ok(Check::Wait {
                        seq,
                        reason: format!(
                            "gc on {} is deleting a batch of unreferenced objects chosen before \
                             it could see this backup's latest lease",
                            state.host
                        ),
                        at_most_secs: left,
                    });
                }
            }
            // Every deletion from now on respects the lease as written.
            // Which earlier ones might have removed what it relies on?
            let before = self.deleted_at_start.get(&seq).copied().unwrap_or(0);
            if state.deleted() > before {
                match state.observed(&session) {
                    Some(o) if o.written_safe && o.pins_safe && o.pins as usize >= pins => {
                        // Observed before it deleted anything since we
                        // began: only dependencies added later are at risk.
                        let at_risk = if o.deleted_before <= before {
                            o.deps_first as usize
                        } else {
                            0
                        };
                        from = from.min(at_risk);
                    }
                    _ => all = true,
                }
            }
            sweeps.push(seq);
        }
        let from = from.min(self.deps_checked);
        if sweeps.is_empty() && !all && from >= deps.len() {
            return Ok(Check::Clear);
        }
        Ok(Check::Verify {
            sweeps,
            all,
            deps: deps[from.min(deps.len())..].to_vec(),
            through: log.last_seq(),
        })
    }
}

/// A sweep's state: from its done marker if the listing said it finished,
/// else its running marker, else (it finished meanwhile) its done marker.
/// `None` if none can be read: what it did is unknown.
async fn load_state(repo: &Repository, seq: u64, done: bool) -> Result<Option<SweepState>> {
    let tries: &[bool] = if done { &[true] } else { &[false, true] };
    for &d in tries {
        match SweepState::load(repo, seq, d).await {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) => continue,
            Err(e) if e.is_damage() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
