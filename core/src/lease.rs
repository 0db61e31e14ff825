//! Leases: a running backup session announces itself with `leases/<id>`,
//! naming the points it deduplicates against (pins) and the objects it
//! found already stored and relies on (dependencies). Sweeps protect what
//! live leases name; a lease not refreshed within the repository's TTL is
//! dead. The protocol is in `docs/design.md` ("Concurrency").

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, ObjectMeta};
use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::names::VmName;
use crate::repo::Repository;

/// A stored object a session relies on without having written it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectRef {
    Chunk(ObjectId),
    Node(ObjectId),
}

impl ObjectRef {
    pub fn key(&self) -> String {
        match self {
            ObjectRef::Chunk(id) => keys::chunk(id),
            ObjectRef::Node(id) => keys::node(id),
        }
    }
}

/// What a lease says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub session: String,
    pub host: String,
    pub vm: VmName,
    /// The store's time when the lease was first written; `None` until the
    /// session has read it back (readers then use the object's time).
    pub started: Option<DateTime<Utc>>,
    pub pins: Vec<(VmName, PointId)>,
    /// Append-only, so a sweep that read the first n knows which it saw.
    pub deps: Vec<ObjectRef>,
}

/// Leases can list many dependencies; this bounds what a reader accepts.
const MAX_LEASE: usize = 1 << 30;

impl LeaseRecord {
    pub fn encode(&self) -> Result<Bytes> {
        let mut plain = Vec::new();
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding lease: {e}")))?;
        Ok(Bytes::from(frame::encode(Kind::Lease, &plain, 3)?))
    }

    /// Reads and decodes the lease at `key`; `None` if its session ended
    /// (deleted it) since it was listed.
    pub async fn load(repo: &Repository, key: &str) -> Result<Option<Self>> {
        match repo.backend().get(key).await {
            Ok(bytes) => LeaseRecord::decode(key, &bytes).map(Some),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn decode(key: &str, framed: &[u8]) -> Result<Self> {
        let plain = frame::decode(Kind::Lease, key, framed, MAX_LEASE)?;
        let r: LeaseRecord = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(key, format!("undecodable lease: {e}")))?;
        if keys::lease(&r.session) != key {
            return Err(Error::corrupt(key, format!("holds lease {}", r.session)));
        }
        Ok(r)
    }
}

/// A lease as a sweep or prune sees it.
#[derive(Clone, Debug)]
pub struct SeenLease {
    pub record: LeaseRecord,
    pub meta: ObjectMeta,
}

impl SeenLease {
    /// When the session started, by the store's clock.
    pub fn start(&self) -> DateTime<Utc> {
        self.record.started.unwrap_or(self.meta.last_modified)
    }
}

/// The leases in the store, split into live and dead as of `now` (a time
/// the store gave). A dead lease is not read: it may be damaged or half
/// written by a killed session, and protects nothing anyway.
pub async fn read_leases(
    repo: &Repository,
    now: DateTime<Utc>,
) -> Result<(Vec<SeenLease>, Vec<ObjectMeta>)> {
    let ttl = repo.config().protocol.ttl();
    let metas: Vec<ObjectMeta> = repo.backend().list(keys::LEASES).try_collect().await?;
    let (live, dead): (Vec<_>, Vec<_>) =
        metas.into_iter().partition(|m| now - m.last_modified < ttl);
    let live = futures::stream::iter(live)
        .map(|meta| async move {
            let record = LeaseRecord::load(repo, &meta.key).await?;
            Ok::<_, Error>(record.map(|record| SeenLease { record, meta }))
        })
        .buffer_unordered(16)
        .try_filter_map(|l| async move { Ok(l) })
        .try_collect()
        .await?;
    Ok((live, dead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_round_trip_and_name_their_key() {
        let r = LeaseRecord {
            session: "s1".into(),
            host: "h".into(),
            vm: "vm".parse().unwrap(),
            started: None,
            pins: vec![(
                "vm".parse().unwrap(),
                "20260101T000000Z-0000".parse().unwrap(),
            )],
            deps: vec![ObjectRef::Chunk(ObjectId::of(b"a"))],
        };
        let bytes = r.encode().unwrap();
        assert_eq!(LeaseRecord::decode("leases/s1", &bytes).unwrap(), r);
        assert!(LeaseRecord::decode("leases/s2", &bytes).is_err());
        assert!(LeaseRecord::decode("leases/s1", &bytes[..10]).is_err());
    }
}
