//! Sweep markers: `gc/sweeps/<seq>` is written when a sweep starts and
//! rewritten whenever its state changes and by its heartbeat;
//! `gc/done/<seq>` holds its final state. Backup sessions read them to
//! learn what a sweep may have deleted that they rely on, and whether a
//! delete batch is in flight.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::keys;
use crate::repo::Repository;

/// Most plaintext bytes of a sweep marker.
const MAX_MARKER: usize = 1 << 28;

/// Where a sweep is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Reading leases and points, marking: nothing deleted yet in this
    /// phase.
    #[default]
    Marking,
    /// A delete batch is in flight: it was filtered against the leases as
    /// they were when the batch began.
    Deleting,
    /// Between delete batches: the next one looks at the leases again
    /// before deleting anything.
    Idle,
    /// Over (the state in `gc/done/<seq>`).
    Done,
    /// Stopped before finishing (it had been silent too long, or met
    /// damage): it deletes nothing more.
    Stopped,
}

impl Phase {
    /// The sweep will delete nothing more.
    pub fn is_over(self) -> bool {
        matches!(self, Phase::Done | Phase::Stopped)
    }
}

/// A lease the sweep observed live, and what the sweep protects of it
/// (its pins, dependencies and what the session wrote) from then on, for
/// the rest of its run, even after the lease ends or dies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub session: String,
    /// Objects the sweep had deleted before it first observed the lease.
    pub deleted_before: u64,
    /// How many dependencies the lease listed at that first observation.
    pub deps_first: u64,
    /// How many pins the sweep has seen (all of them protected since).
    pub pins: u64,
    /// False when a pinned point was not protected before the sweep
    /// deleted something (pruned before the sweep listed points, pinned
    /// later), or cannot be found at all.
    pub pins_safe: bool,
    /// False when objects the session wrote may have been older than a
    /// cutoff the sweep deleted by before observing the lease (the lease
    /// was dead when the sweep began).
    pub written_safe: bool,
}

/// What a sweep publishes about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepState {
    pub seq: u64,
    pub host: String,
    pub phase: Phase,
    /// Chunks and nodes deleted so far.
    pub chunks_deleted: u64,
    pub nodes_deleted: u64,
    /// Packs deleted so far (dead, or rewritten into new packs): a backup
    /// that reused chunks from a pack checks its dependencies by them.
    #[serde(default)]
    pub packs_deleted: u64,
    /// Index objects replaced by the sweep's rewrite and deleted. A
    /// backup whose own index object's create-only put found the same
    /// bytes already there relies on that object: it checks it again when
    /// this count moves.
    #[serde(default)]
    pub index_deleted: u64,
    /// Delete batches completed.
    pub batches: u64,
    pub observed: Vec<Observed>,
    /// The store's time at the sweep's latest look at the leases (taken
    /// before that look): ended leases written before it are known to the
    /// sweep, so a later sweep may remove them.
    pub leases_read_at: Option<DateTime<Utc>>,
    /// A `repair` sweep: it deletes named (damaged) objects whatever the
    /// leases say, so backups wait while it deletes and check again all
    /// they use after each of its batches.
    #[serde(default)]
    pub targeted: bool,
}

impl SweepState {
    /// Objects deleted so far that a backup may rely on.
    pub fn deleted(&self) -> u64 {
        self.chunks_deleted + self.nodes_deleted + self.packs_deleted + self.index_deleted
    }

    pub fn observed(&self, session: &str) -> Option<&Observed> {
        self.observed.iter().find(|o| o.session == session)
    }

    /// The stored bytes of this marker under `key` (sealed under it if
    /// the repository is encrypted).
    pub fn encode(&self, codec: &Codec, key: &str) -> Result<Bytes> {
        let mut plain = Vec::new();
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding gc marker: {e}")))?;
        Ok(Bytes::from(codec.encode_meta(
            Kind::Marker,
            key,
            &plain,
            3,
        )?))
    }

    /// Decodes a marker stored under `key`.
    pub fn decode(key: &str, stored: &[u8], codec: &Codec) -> Result<Self> {
        let plain = codec.decode_meta(Kind::Marker, key, stored, MAX_MARKER)?;
        ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(key, format!("undecodable gc marker: {e}")))
    }

    /// The state of sweep `seq`: its done marker if it finished, else its
    /// running marker; `None` if neither is there (deleted meanwhile).
    pub async fn load(repo: &Repository, seq: u64, done: bool) -> Result<Option<Self>> {
        let key = if done {
            keys::done(seq)
        } else {
            keys::sweep(seq)
        };
        let max = crate::frame::max_stored(MAX_MARKER);
        let bytes = match repo.backend().get_at_most(&key, max).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let m = SweepState::decode(&key, &bytes, repo.codec())?;
        if m.seq != seq {
            return Err(Error::corrupt(key, format!("holds sweep {}", m.seq)));
        }
        Ok(Some(m))
    }
}

/// The sweeps the store knows: started (with the marker's time, which a
/// running sweep keeps fresh) and finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepLog {
    pub started: BTreeMap<u64, DateTime<Utc>>,
    /// Finished sweeps, with the time their done marker was written.
    pub done: BTreeMap<u64, DateTime<Utc>>,
}

impl SweepLog {
    /// Both kinds of marker in one listing of `gc/` (one round trip and
    /// one LIST, where listing `gc/sweeps/` then `gc/done/` took two on
    /// every backup's start and check). A listing is not a snapshot, and
    /// its order is the store's (S3 sorts `gc/done/` first; a local
    /// directory lists in directory order). A sweep that finishes while
    /// its done marker's part is read first shows as started and not
    /// done: every reader takes it for a running one, the cautious
    /// reading. One that starts and finishes while its started marker's
    /// part is read first shows as done only: it began after the caller's
    /// lease was written. Old markers deleted meanwhile (a pair, by a
    /// later sweep) can leave either half, as they could between two
    /// listings. docs/design.md, "Reading the sweep log", says why each
    /// reader is safe.
    pub async fn read(repo: &Repository) -> Result<Self> {
        let mut log = SweepLog::default();
        let mut listed = repo.backend().list(keys::GC);
        while let Some(m) = listed.try_next().await? {
            let Some(seq) = keys::parse_seq(&m.key) else {
                continue;
            };
            if m.key.starts_with(keys::DONE) {
                log.done.insert(seq, m.last_modified);
            } else {
                log.started.insert(seq, m.last_modified);
            }
        }
        Ok(log)
    }

    /// The highest sequence number in use.
    pub fn last_seq(&self) -> u64 {
        let s = self.started.keys().next_back().copied().unwrap_or(0);
        let d = self.done.keys().next_back().copied().unwrap_or(0);
        s.max(d)
    }

    /// Sweeps started and not finished.
    pub fn running(&self) -> impl Iterator<Item = (u64, DateTime<Utc>)> + '_ {
        self.started
            .iter()
            .filter(|(s, _)| !self.done.contains_key(s))
            .map(|(s, t)| (*s, *t))
    }
}

/// A sweep that looks alive by the local clock (a hint for commands that
/// would otherwise work long before finding out), with its host.
pub async fn running(repo: &Repository) -> Result<Option<(u64, String)>> {
    let ttl = repo.config().protocol.sweep_ttl();
    let now = Utc::now();
    for (seq, refreshed) in SweepLog::read(repo).await?.running() {
        if now - refreshed > ttl {
            continue;
        }
        match SweepState::load(repo, seq, false).await {
            Ok(Some(s)) if !s.phase.is_over() => return Ok(Some((seq, s.host))),
            Ok(_) => {}
            Err(e) if e.is_damage() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Sequence numbers are 16 digits in keys; one beyond would be invisible
/// to backups (a forged or damaged marker is the only way to get there).
pub(super) fn check_seq(seq: u64) -> Result<()> {
    if seq > 9_999_999_999_999_999 {
        return Err(Error::corrupt(
            keys::DONE,
            format!(
                "gc markers reach sequence number {}: no sweep can follow (remove the \
                 markers under gc/ numbered beyond what sweeps really ran)",
                seq - 1
            ),
        ));
    }
    Ok(())
}
