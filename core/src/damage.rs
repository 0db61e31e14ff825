//! Known damage: `damage/<object key>` records that a chunk or node was
//! found damaged (by `verify`, `restore`, or a backup's checks). Its key
//! is content-addressed, so a create-only put of the right bytes answers
//! "already exists" and would leave the damaged copy in place: a backup
//! that produces an object with such a record stores it again over the
//! damaged copy, then clears the record. `repair` removes what the records
//! name. Records are hints: a stale one costs one extra upload. A backup
//! whose credentials may not delete (docs/least-privilege.md) leaves them
//! in place and says so; `repair` clears the stale ones.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::backend::PutMode;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;
use crate::repo::Repository;

/// What a fresh look at a stored object found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Sound,
    Damaged(String),
    Gone,
}

impl Health {
    /// Damage is a verdict; any other error stays an error.
    pub fn of_error(e: Error) -> Result<Health> {
        if e.is_damage() {
            Ok(Health::Damaged(e.to_string()))
        } else {
            Err(e)
        }
    }
}

/// What a record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageRecord {
    /// The damaged object's key.
    pub key: String,
    pub reason: String,
    /// Which command found it: `verify`, `restore`, `backup`.
    pub found_by: String,
    pub at: DateTime<Utc>,
}

impl DamageRecord {
    /// The stored bytes of this record (sealed under its key if the
    /// repository is encrypted: it names a chunk or node).
    pub fn encode(&self, codec: &Codec) -> Result<Bytes> {
        let mut plain = Vec::new();
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding damage record: {e}")))?;
        let key = keys::damage(&self.key);
        Ok(Bytes::from(codec.encode_meta(
            Kind::Damage,
            &key,
            &plain,
            0,
        )?))
    }

    pub fn decode(key: &str, stored: &[u8], codec: &Codec) -> Result<Self> {
        let plain = codec.decode_meta(Kind::Damage, key, stored, 1 << 16)?;
        let r: DamageRecord = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(key, format!("undecodable damage record: {e}")))?;
        if keys::damage(&r.key) != key {
            return Err(Error::corrupt(key, format!("is about {}", r.key)));
        }
        Ok(r)
    }
}

/// Records that the object under `key` is damaged (overwriting an older
/// record of it).
pub async fn record(repo: &Repository, key: &str, reason: &str, found_by: &str) -> Result<()> {
    if keys::parse_content(key).is_none() {
        return Ok(()); // only chunks and nodes can be stored again
    }
    let r = DamageRecord {
        key: key.to_string(),
        reason: reason.to_string(),
        found_by: found_by.to_string(),
        at: Utc::now(),
    };
    repo.backend()
        .put(
            &keys::damage(key),
            r.encode(repo.codec())?,
            PutMode::Overwrite,
        )
        .await?;
    Ok(())
}

/// Records each (key, why); best effort: returns how many records could
/// not be written and the last error, if any.
pub async fn record_all(
    repo: &Repository,
    found: &[(String, String)],
    found_by: &str,
) -> Option<(usize, Error)> {
    let mut failed = None;
    for (key, why) in found {
        if let Err(e) = record(repo, key, why, found_by).await {
            let n = failed.as_ref().map_or(0, |(n, _)| *n);
            failed = Some((n + 1, e));
        }
    }
    failed
}

/// Which of the objects `object_keys` are gone from the store now: nodes
/// whose HEAD says not found. What a prune and the gc after it removed
/// while a command read it is gone; damaged bytes still stored are not,
/// and stay damage. Chunks are never judged gone: an index lookup may
/// miss a chunk a concurrent sweep is moving to another pack, and a
/// missed damage record would let backups deduplicate against bad bytes,
/// where a stale one costs one upload.
pub async fn gone_now(repo: &Repository, object_keys: &[String]) -> Result<HashSet<String>> {
    use futures::StreamExt;
    let mut gone = HashSet::new();
    let nodes = object_keys
        .iter()
        .filter(|k| k.starts_with(keys::NODES) && keys::parse_content(k).is_some());
    let mut heads = futures::stream::iter(nodes)
        .map(|k| async move { (k, repo.backend().head(k).await) })
        .buffer_unordered(16);
    while let Some((k, head)) = heads.next().await {
        match head {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                gone.insert(k.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(gone)
}

/// Forgets the records of these object keys (they were stored again or
/// removed).
pub async fn clear(repo: &Repository, object_keys: &[String]) -> Result<()> {
    let keys: Vec<String> = object_keys.iter().map(|k| keys::damage(k)).collect();
    repo.backend().delete_many(&keys).await?;
    Ok(())
}

/// The chunks and nodes with a damage record (from the listing alone).
#[derive(Clone, Debug, Default)]
pub struct KnownDamage {
    pub chunks: HashSet<ObjectId>,
    pub nodes: HashSet<ObjectId>,
}

impl KnownDamage {
    pub async fn load(repo: &Repository) -> Result<KnownDamage> {
        let mut out = KnownDamage::default();
        let mut listing = repo.backend().list(keys::DAMAGE);
        while let Some(m) = listing.try_next().await? {
            let Some(object) = keys::parse_damage(&m.key) else {
                continue;
            };
            match ObjectRef::parse(object) {
                Some(ObjectRef::Node(id)) => out.nodes.insert(id),
                Some(ObjectRef::Chunk(id)) => out.chunks.insert(id),
                // Damage is recorded per chunk or node, not per pack.
                Some(ObjectRef::Pack(_)) | Some(ObjectRef::Index(_)) | None => continue,
            };
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_name_their_object() {
        let id = ObjectId::of(b"x");
        let r = DamageRecord {
            key: keys::chunk(&id),
            reason: "checksum".into(),
            found_by: "verify".into(),
            at: Utc::now(),
        };
        let k = keys::damage(&r.key);
        assert_eq!(keys::parse_damage(&k), Some(r.key.as_str()));
        let c = Codec::plain();
        assert_eq!(
            DamageRecord::decode(&k, &r.encode(&c).unwrap(), &c).unwrap(),
            r
        );
        assert!(DamageRecord::decode("damage/chunks/00/00", &r.encode(&c).unwrap(), &c).is_err());
        assert_eq!(keys::parse_damage("damage/points/x"), None);
    }
}
