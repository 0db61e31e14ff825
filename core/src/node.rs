//! Nodes: the chunk list of one segment, content-addressed.
//!
//! A node's id is the BLAKE3 of its plaintext CBOR, so two segments with
//! the same chunks share one node, and a backup that finds a segment's
//! node id equal to the parent's knows the segment is unchanged.

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::id::ObjectId;
use crate::keys;

/// One piece of a segment: a chunk, or a run of zeros (`id` = None) that
/// has no object. Encoded as a 2-element CBOR array `[len, id|null]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(pub u32, pub Option<ObjectId>);

impl Entry {
    pub fn len(&self) -> u64 {
        u64::from(self.0)
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn chunk(&self) -> Option<ObjectId> {
        self.1
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub entries: Vec<Entry>,
}

/// True when `entries` hold no chunk: the segment is all zeros, and has
/// no node (it is `null` in the manifest).
pub fn all_zero(entries: &[Entry]) -> bool {
    entries.iter().all(|e| e.1.is_none())
}

impl Node {
    /// Logical bytes covered.
    pub fn len(&self) -> u64 {
        self.entries.iter().map(Entry::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The segment's last-data mark (see [`DiskManifest::last_data`]):
    /// 1 + where its last chunk that holds data starts, 0 if none does.
    ///
    /// [`DiskManifest::last_data`]: crate::manifest::DiskManifest::last_data
    pub fn last_data_mark(entries: &[Entry]) -> u64 {
        let mut at = 0;
        let mut mark = 0;
        for e in entries {
            if e.1.is_some() {
                mark = at + 1;
            }
            at += e.len();
        }
        mark
    }

    pub fn chunk_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.entries.iter().filter_map(|e| e.1)
    }

    /// Plaintext CBOR and the id `codec` gives it.
    pub fn to_plain(&self, codec: &Codec) -> Result<(ObjectId, Vec<u8>)> {
        let mut plain = Vec::with_capacity(self.entries.len() * 40 + 16);
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding node: {e}")))?;
        Ok((codec.node_id(&plain), plain))
    }

    /// Decodes a stored node, checks it is the one `id` names and that it
    /// can be a segment of this repository: at most one entry per minimum
    /// chunk size (plus a short last one), every entry 1 byte to the
    /// largest chunk size, the segment size in all.
    /// `framed` is the object as opened by the codec.
    pub fn decode(id: &ObjectId, framed: &[u8], cfg: &RepoConfig, codec: &Codec) -> Result<Node> {
        let key = keys::node(id);
        let seg = cfg.segment_size;
        let max_entries = max_entries(cfg);
        let plain = frame::decode(Kind::Node, &key, framed, max_plaintext(max_entries))?;
        if codec.node_id(&plain) != *id {
            return Err(Error::corrupt(key, "content does not match its id"));
        }
        // Count before allocating: an entry is 3 bytes of CBOR at least.
        let count: EntryCount = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(&key, format!("undecodable: {e}")))?;
        if count.entries > max_entries {
            return Err(Error::corrupt(
                key,
                format!(
                    "has {} entries, a segment of {seg} bytes has at most {max_entries}",
                    count.entries
                ),
            ));
        }
        let node: Node = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(&key, format!("undecodable: {e}")))?;
        let max_chunk = u64::from(cfg.chunking.max);
        if let Some(e) = node
            .entries
            .iter()
            .find(|e| e.is_empty() || e.len() > max_chunk)
        {
            return Err(Error::corrupt(
                key,
                format!(
                    "has an entry of {} bytes (chunks are 1 to {max_chunk})",
                    e.len()
                ),
            ));
        }
        if node.len() > seg {
            return Err(Error::corrupt(
                key,
                format!("covers {} bytes, more than a segment ({seg})", node.len()),
            ));
        }
        Ok(node)
    }
}

/// The largest plaintext of a node of `entries` entries: an entry is at
/// most 40 bytes (array head, a 32-bit length, a 32-byte id), plus the
/// map around them.
/// Most entries a node of this repository has: a segment cut into chunks
/// of the minimum size.
fn max_entries(cfg: &RepoConfig) -> u64 {
    cfg.segment_size / u64::from(cfg.chunking.min.max(1)) + 1
}

/// Most bytes a node of this repository is stored as: what its readers
/// fetch at most.
pub fn max_stored(cfg: &RepoConfig) -> u64 {
    frame::max_stored(max_plaintext(max_entries(cfg)))
}

fn max_plaintext(entries: u64) -> usize {
    usize::try_from(entries * 40 + 32).unwrap_or(usize::MAX)
}

/// A node whose entries are counted, not kept.
#[derive(Deserialize)]
struct EntryCount {
    #[serde(deserialize_with = "count")]
    entries: u64,
}

fn count<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of entries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<u64, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    d.deserialize_seq(Count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_data_mark_is_one_past_where_the_last_data_chunk_starts() {
        let id = Some(ObjectId::of(b"c"));
        assert_eq!(Node::last_data_mark(&[]), 0);
        assert_eq!(Node::last_data_mark(&[Entry(5, None)]), 0);
        assert_eq!(Node::last_data_mark(&[Entry(5, id)]), 1);
        let e = [Entry(5, None), Entry(3, id), Entry(4, id), Entry(9, None)];
        assert_eq!(Node::last_data_mark(&e), 9);
    }

    fn cfg() -> RepoConfig {
        // Segments of 1 MiB, chunks of 8 to 128 KiB.
        RepoConfig::new(1 << 20, crate::chunker::ChunkParams::from_avg(32 << 10), 3).unwrap()
    }

    fn framed(node: &Node) -> (ObjectId, Vec<u8>) {
        let (id, plain) = node.to_plain(&Codec::plain()).unwrap();
        (id, frame::encode(Kind::Node, &plain, 3).unwrap())
    }

    #[test]
    fn encode_decode_and_id_check() {
        let node = Node {
            entries: vec![Entry(100, Some(ObjectId::of(b"a"))), Entry(50, None)],
        };
        let (id, plain) = node.to_plain(&Codec::plain()).unwrap();
        let framed = frame::encode(Kind::Node, &plain, 3).unwrap();
        assert_eq!(
            Node::decode(&id, &framed, &cfg(), &Codec::plain()).unwrap(),
            node
        );
        let other = ObjectId::of(b"other");
        assert!(matches!(
            Node::decode(&other, &framed, &cfg(), &Codec::plain()),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(node.len(), 150);
        // An id costs 34 bytes in CBOR (not 32 integers): 51 bytes in all.
        assert!(plain.len() <= 52, "{}", plain.len());
    }

    #[test]
    fn nodes_that_cannot_be_a_segment_are_damage() {
        let c = cfg();
        let (min, max) = (c.chunking.min, c.chunking.max);
        let full = 1u32 << 20;
        // As many entries as a segment can have, all minimal.
        let most = vec![Entry(min, None); (full / min) as usize];
        let (id, f) = framed(&Node { entries: most });
        Node::decode(&id, &f, &c, &Codec::plain()).unwrap();
        let cases = [
            (vec![Entry(0, None)], "entry of 0 bytes"),
            (vec![Entry(max + 1, None)], "entry of 131073 bytes"),
            (vec![Entry(max, None); 9], "more than a segment"),
            (vec![Entry(1, None); (full / min + 2) as usize], "entries"),
        ];
        for (entries, want) in cases {
            let (id, f) = framed(&Node { entries });
            let e = Node::decode(&id, &f, &c, &Codec::plain()).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        // A million empty entries compress to nothing; the plaintext bound
        // refuses them before they are parsed.
        let (id, f) = framed(&Node {
            entries: vec![Entry(1, None); 1 << 20],
        });
        let e = Node::decode(&id, &f, &c, &Codec::plain()).unwrap_err();
        assert!(e.to_string().contains("decompresses to more than"), "{e}");
    }
}
