//! Nodes: reading them (checked against their id, this repository's
//! constants and, for a segment, its length) and storing them.

use super::{Repository, Stored, missing};
use crate::backend::PutMode;
use crate::crypto::SealKind;
use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::id::ObjectId;
use crate::keys;
use crate::node::Node;

impl Repository {
    pub async fn load_node(&self, id: &ObjectId) -> Result<Node> {
        let key = keys::node(id);
        let bytes = self
            .backend
            .get_at_most(&key, self.max_node())
            .await
            .map_err(|e| missing(e, &key))?;
        self.decode_node(id, &bytes)
    }

    /// The node of a segment of `len` bytes: one that covers another
    /// length is damage naming it (read as the segment, a shorter one
    /// left the rest unread, a longer one reached into the next).
    pub async fn load_segment_node(&self, id: &ObjectId, len: u64) -> Result<Node> {
        let node = self.load_node(id).await?;
        covers_segment(id, &node, len)?;
        Ok(node)
    }

    /// [`Self::decode_node`] for the node of a segment of `len` bytes, as
    /// [`Self::load_segment_node`] checks it (`copy` moves stored bytes).
    pub fn decode_segment_node(&self, id: &ObjectId, stored: &[u8], len: u64) -> Result<Node> {
        let node = self.decode_node(id, stored)?;
        covers_segment(id, &node, len)?;
        Ok(node)
    }

    /// Opens and decodes a node's stored bytes, checked against its id
    /// and this repository's constants (for `copy`, which moves stored
    /// bytes between repositories with the same keys).
    pub fn decode_node(&self, id: &ObjectId, stored: &[u8]) -> Result<Node> {
        let framed = self
            .codec
            .open_meta(SealKind::Node, &keys::node(id), stored)?;
        Node::decode(id, &framed, &self.config, &self.codec)
    }

    /// Most bytes a manifest of this repository is stored as (hundreds of
    /// MB: it is the limits on what a manifest declares that bound the
    /// memory of reading one).
    pub fn max_manifest(&self) -> u64 {
        crate::frame::max_stored(crate::manifest::limits::max_plaintext(
            self.config.segment_size,
        ))
    }

    /// Most bytes a node of this repository is stored as: more is damage,
    /// refused before it is read.
    pub fn max_node(&self) -> u64 {
        crate::node::max_stored(&self.config)
    }

    /// Fetches a node and checks it against its id.
    pub async fn check_node(&self, id: &ObjectId) -> Result<crate::damage::Health> {
        use crate::damage::Health;
        match self
            .backend
            .get_at_most(&keys::node(id), self.max_node())
            .await
        {
            Ok(bytes) => match self.decode_node(id, &bytes) {
                Ok(_) => Ok(Health::Sound),
                Err(e) => Health::of_error(e),
            },
            Err(e) if e.is_not_found() => Ok(Health::Gone),
            Err(e) => Health::of_error(e.into()),
        }
    }

    /// Frames and stores a node; returns how it went and its framed size.
    pub async fn put_node(&self, id: &ObjectId, plain: &[u8]) -> Result<(Stored, u64)> {
        let key = keys::node(id);
        let stored = self
            .codec
            .encode_meta(Kind::Node, &key, plain, self.config.zstd_level)?;
        let len = stored.len() as u64;
        Ok((self.put_once(&key, stored.into()).await?, len))
    }

    /// Stores a node over a damaged copy under its key (its id fixes the
    /// right bytes, so replacing them is safe).
    pub async fn replace_node(&self, id: &ObjectId, plain: &[u8]) -> Result<u64> {
        let key = keys::node(id);
        let stored = self
            .codec
            .encode_meta(Kind::Node, &key, plain, self.config.zstd_level)?;
        let len = stored.len() as u64;
        self.backend
            .put(&key, stored.into(), PutMode::Overwrite)
            .await?;
        Ok(len)
    }
}

/// Whether `node` covers its segment's `len` bytes: read as the segment,
/// a shorter one leaves the rest unread, a longer one reaches into the
/// next (`Node::decode` only refuses one longer than any segment).
fn covers_segment(id: &ObjectId, node: &Node, len: u64) -> Result<()> {
    if node.len() != len {
        return Err(Error::Corrupt {
            key: keys::node(id),
            reason: format!("covers {} bytes, the segment has {len}", node.len()),
        });
    }
    Ok(())
}
