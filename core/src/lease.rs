//! Leases: a running backup session announces itself with `leases/<id>`,
//! naming the points it deduplicates against (pins) and the objects it
//! found already stored and relies on (dependencies). Sweeps protect what
//! the leases they observe name; a lease not refreshed within the
//! repository's TTL is dead. A session that ends does not delete its lease
//! but rewrites it as *ended*, naming the point it committed: a sweep that
//! started before the commit (and so did not list the point) learns of it
//! at its next look at the leases. The protocol is in `docs/design.md`
//! ("Concurrency").

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, ObjectMeta};
use crate::codec::Codec;
use crate::config::Protocol;
use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::names::VmName;
use crate::repo::Repository;

/// A stored object a session relies on without having written it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectRef {
    /// A chunk by id, wherever the placement module keeps it (a logical
    /// name: in format 2 chunks live in packs, found through the index).
    Chunk(ObjectId),
    Node(ObjectId),
    /// A pack a session reused chunks from without having written it.
    Pack(ObjectId),
    /// An index object a session's create-only put found already there
    /// (the same bytes: the same packs' entries), which it relies on to
    /// place its chunks.
    Index(ObjectId),
}

impl ObjectRef {
    pub fn key(&self) -> String {
        match self {
            ObjectRef::Chunk(id) => keys::chunk(id),
            ObjectRef::Node(id) => keys::node(id),
            ObjectRef::Pack(name) => keys::pack(name),
            ObjectRef::Index(name) => keys::index(name),
        }
    }

    /// The chunk or node under `key`, if it is a key xfull writes (not,
    /// e.g., one spelled with upper-case hex).
    pub fn parse(key: &str) -> Option<ObjectRef> {
        if let Some(name) = keys::parse_pack(key) {
            let r = ObjectRef::Pack(name);
            return (r.key() == key).then_some(r);
        }
        if let Some(name) = keys::parse_index(key) {
            let r = ObjectRef::Index(name);
            return (r.key() == key).then_some(r);
        }
        let id = keys::parse_content(key)?;
        let r = if key.starts_with(keys::NODES) {
            ObjectRef::Node(id)
        } else {
            ObjectRef::Chunk(id)
        };
        (r.key() == key).then_some(r)
    }
}

/// How a session ended (written as its lease's last state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// The point the session committed, if any.
    pub committed: Option<PointId>,
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
    /// Set once the session is over: the lease protects nothing any more
    /// but tells sweeps which point the session committed.
    #[serde(default)]
    pub ended: Option<Ended>,
}

/// Leases can list many dependencies; this bounds what a reader accepts.
const MAX_LEASE: usize = 1 << 30;

impl LeaseRecord {
    /// The stored bytes of this lease (sealed under its key if the
    /// repository is encrypted).
    pub fn encode(&self, codec: &Codec) -> Result<Bytes> {
        let mut plain = Vec::new();
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding lease: {e}")))?;
        let key = keys::lease(&self.session);
        Ok(Bytes::from(codec.encode_meta(
            Kind::Lease,
            &key,
            &plain,
            3,
        )?))
    }

    /// Reads and decodes the lease at `key`; `None` if it was deleted
    /// since it was listed.
    pub async fn load(repo: &Repository, key: &str) -> Result<Option<Self>> {
        match repo
            .backend()
            .get_at_most(key, crate::frame::max_stored(MAX_LEASE))
            .await
        {
            Ok(bytes) => LeaseRecord::decode(key, &bytes, repo.codec()).map(Some),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn decode(key: &str, stored: &[u8], codec: &Codec) -> Result<Self> {
        let plain = codec.decode_meta(Kind::Lease, key, stored, MAX_LEASE)?;
        let r: LeaseRecord = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(key, format!("undecodable lease: {e}")))?;
        if keys::lease(&r.session) != key {
            return Err(Error::corrupt(key, format!("holds lease {}", r.session)));
        }
        Ok(r)
    }
}

/// What a listed object under `leases/` is, as of `now` (a time the store
/// gave).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAge {
    /// Refreshed within the TTL: its session may be running.
    Live,
    /// Not refreshed within the TTL: its session was killed or stalled.
    Dead,
    /// Dated further in the future than clock differences and the time a
    /// listing takes explain (a hostile or broken store): trusted neither
    /// as live nor as anything else; treated as dead, so it cannot pin
    /// anything forever.
    Future,
    /// Not named like a lease: not ours, ignored (and left alone).
    Stray,
}

/// Classifies a listed lease object by its name and the store's time,
/// `now`, read before the listing. A lease refreshed after that reading is
/// dated after `now`, by as long as the listing took: the future begins
/// only a lease TTL (and the clock margin) after `now`. A lease dated
/// within it stays live at most two TTLs, not forever. (With `now +
/// margin` alone, a zero margin made a lease refreshed during the listing
/// count as dead: the sweep did not protect what it names.)
pub fn age(meta: &ObjectMeta, now: DateTime<Utc>, p: &Protocol) -> LeaseAge {
    if keys::parse_lease(&meta.key).is_none() {
        LeaseAge::Stray
    } else if meta.last_modified > now + p.margin() + p.ttl() {
        LeaseAge::Future
    } else if now - meta.last_modified < p.ttl() {
        LeaseAge::Live
    } else {
        LeaseAge::Dead
    }
}

/// A lease as a sweep or prune sees it.
#[derive(Clone, Debug)]
pub struct SeenLease {
    pub record: LeaseRecord,
    pub meta: ObjectMeta,
}

impl SeenLease {
    /// When the session started, by the store's clock: what the lease
    /// says, never later than the lease object itself.
    pub fn start(&self) -> DateTime<Utc> {
        self.record
            .started
            .map_or(self.meta.last_modified, |s| s.min(self.meta.last_modified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKeys;

    #[test]
    fn object_keys_parse_back_only_as_xfull_writes_them() {
        let id = ObjectId::of(b"x");
        for r in [
            ObjectRef::Chunk(id),
            ObjectRef::Node(id),
            ObjectRef::Pack(id),
            ObjectRef::Index(id),
        ] {
            assert_eq!(ObjectRef::parse(&r.key()), Some(r));
            let k = r.key();
            let (dir, name) = k.split_at(k.rfind('/').unwrap() + 1);
            assert_eq!(
                ObjectRef::parse(&format!("{dir}{}", name.to_uppercase())),
                None
            );
        }
        assert_eq!(ObjectRef::parse("points/vm/x"), None);
    }

    fn record(session: &str) -> LeaseRecord {
        LeaseRecord {
            session: session.into(),
            host: "h".into(),
            vm: "vm".parse().unwrap(),
            started: None,
            pins: vec![(
                "vm".parse().unwrap(),
                "20260101T000000Z-0000".parse().unwrap(),
            )],
            deps: vec![ObjectRef::Chunk(ObjectId::of(b"a"))],
            ended: None,
        }
    }

    #[test]
    fn leases_round_trip_and_name_their_key() {
        let r = record("s1");
        for codec in [
            Codec::plain(),
            Codec::encrypted(MasterKeys::generate(), crate::crypto::DataCipher::Aes256Gcm),
        ] {
            let bytes = r.encode(&codec).unwrap();
            assert_eq!(LeaseRecord::decode("leases/s1", &bytes, &codec).unwrap(), r);
            assert!(LeaseRecord::decode("leases/s2", &bytes, &codec).is_err());
            assert!(LeaseRecord::decode("leases/s1", &bytes[..10], &codec).is_err());
        }
    }

    #[test]
    fn ages_are_judged_by_the_store_clock_and_the_name() {
        let p = Protocol::default();
        let now: DateTime<Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
        let meta = |key: &str, at: DateTime<Utc>| ObjectMeta {
            key: key.into(),
            size: 1,
            last_modified: at,
            storage_class: None,
        };
        let good = "leases/20260101T115900Z-0123456789abcdef";
        assert_eq!(age(&meta(good, now), now, &p), LeaseAge::Live);
        assert_eq!(age(&meta(good, now - p.ttl()), now, &p), LeaseAge::Dead);
        // Within the clock margin ahead: a skewed server, still live.
        assert_eq!(age(&meta(good, now + p.margin()), now, &p), LeaseAge::Live);
        let year = chrono::Duration::days(365);
        assert_eq!(age(&meta(good, now + year), now, &p), LeaseAge::Future);
        // Refreshed while a sweep lists the leases, after it read the
        // store's time: live, even with no clock margin at all.
        let no_margin = Protocol {
            clock_margin_secs: 0,
            ..p
        };
        let during_the_listing = now + chrono::Duration::seconds(2);
        assert_eq!(
            age(&meta(good, during_the_listing), now, &no_margin),
            LeaseAge::Live
        );
        assert_eq!(
            age(&meta("leases/notes.txt", now), now, &p),
            LeaseAge::Stray
        );
        // A lease claiming to have started after it was written starts
        // when it was written.
        let mut r = record("s");
        r.started = Some(now + year);
        let seen = SeenLease {
            record: r,
            meta: meta(good, now),
        };
        assert_eq!(seen.start(), now);
    }
}
