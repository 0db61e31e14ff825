//! Sweep markers: `gc/sweeps/<seq>` is written when a sweep starts and
//! refreshed while it runs; `gc/done/<seq>` when it finished, naming the
//! leases it honoured. Backup sessions read them before committing.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::keys;
use crate::repo::Repository;

/// The start marker of a sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepMarker {
    pub seq: u64,
    pub host: String,
}

/// A lease a sweep read and protected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Honoured {
    pub session: String,
    /// How many of its pins and dependencies the sweep read.
    pub pins: u64,
    pub deps: u64,
    /// False when a pinned point was gone (pruned before the pin was
    /// written): its contents were not protected.
    pub pins_resolved: bool,
}

/// The marker of a finished sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneMarker {
    pub seq: u64,
    pub honoured: Vec<Honoured>,
    pub chunks_deleted: u64,
    pub nodes_deleted: u64,
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes> {
    let mut plain = Vec::new();
    ciborium::into_writer(v, &mut plain)
        .map_err(|e| Error::Internal(format!("encoding gc marker: {e}")))?;
    Ok(Bytes::from(frame::encode(Kind::Marker, &plain, 3)?))
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, framed: &[u8]) -> Result<T> {
    let plain = frame::decode(Kind::Marker, key, framed, 1 << 28)?;
    ciborium::from_reader(&plain[..])
        .map_err(|e| Error::corrupt(key, format!("undecodable gc marker: {e}")))
}

impl SweepMarker {
    pub fn encode(&self) -> Result<Bytes> {
        encode(self)
    }
}

impl DoneMarker {
    pub fn encode(&self) -> Result<Bytes> {
        encode(self)
    }

    /// Decodes a done marker stored under `key`.
    pub fn decode(key: &str, framed: &[u8]) -> Result<Self> {
        decode(key, framed)
    }

    /// `None` if it was deleted since it was listed.
    pub async fn load(repo: &Repository, seq: u64) -> Result<Option<Self>> {
        let key = keys::done(seq);
        let bytes = match repo.backend().get(&key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let m = DoneMarker::decode(&key, &bytes)?;
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
    pub async fn read(repo: &Repository) -> Result<Self> {
        let mut log = SweepLog::default();
        let sweeps: Vec<_> = repo.backend().list(keys::SWEEPS).try_collect().await?;
        for m in sweeps {
            if let Some(seq) = keys::parse_seq(&m.key) {
                log.started.insert(seq, m.last_modified);
            }
        }
        let done: Vec<_> = repo.backend().list(keys::DONE).try_collect().await?;
        log.done.extend(
            done.iter()
                .filter_map(|m| Some((keys::parse_seq(&m.key)?, m.last_modified))),
        );
        Ok(log)
    }

    /// The highest sequence number in use.
    pub fn last_seq(&self) -> u64 {
        let s = self.started.keys().next_back().copied().unwrap_or(0);
        let d = self.done.keys().next_back().copied().unwrap_or(0);
        s.max(d)
    }
}
