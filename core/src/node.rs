//! Nodes: the chunk list of one segment, content-addressed.
//!
//! A node's id is the BLAKE3 of its plaintext CBOR, so two segments with
//! the same chunks share one node, and a backup that finds a segment's
//! node id equal to the parent's knows the segment is unchanged.

use serde::{Deserialize, Serialize};

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

impl Node {
    /// Logical bytes covered.
    pub fn len(&self) -> u64 {
        self.entries.iter().map(Entry::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when the node holds no chunk (the segment is all zeros).
    pub fn is_all_zero(&self) -> bool {
        self.entries.iter().all(|e| e.1.is_none())
    }

    pub fn chunk_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.entries.iter().filter_map(|e| e.1)
    }

    /// Plaintext CBOR and the id it gives.
    pub fn to_plain(&self) -> Result<(ObjectId, Vec<u8>)> {
        let mut plain = Vec::with_capacity(self.entries.len() * 40 + 16);
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding node: {e}")))?;
        Ok((ObjectId::of(&plain), plain))
    }

    /// Decodes a stored node and checks it is the one `id` names.
    pub fn decode(id: &ObjectId, framed: &[u8], segment_size: u64) -> Result<Node> {
        let key = keys::node(id);
        // A node of a segment of S bytes has at most S/min-chunk entries;
        // 64 bytes an entry is a generous bound on its encoding.
        let limit = (segment_size as usize / 64).max(1 << 20) * 64;
        let plain = frame::decode(Kind::Node, &key, framed, limit)?;
        if ObjectId::of(&plain) != *id {
            return Err(Error::corrupt(key, "content does not match its id"));
        }
        let node: Node = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(&key, format!("undecodable: {e}")))?;
        if node.entries.iter().any(Entry::is_empty) {
            return Err(Error::corrupt(key, "has an empty entry"));
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_id_check() {
        let node = Node {
            entries: vec![Entry(100, Some(ObjectId::of(b"a"))), Entry(50, None)],
        };
        let (id, plain) = node.to_plain().unwrap();
        let framed = frame::encode(Kind::Node, &plain, 3).unwrap();
        assert_eq!(Node::decode(&id, &framed, 16 << 20).unwrap(), node);
        let other = ObjectId::of(b"other");
        assert!(matches!(
            Node::decode(&other, &framed, 16 << 20),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(node.len(), 150);
        // An id costs 34 bytes in CBOR (not 32 integers): 51 bytes in all.
        assert!(plain.len() <= 52, "{}", plain.len());
    }
}
