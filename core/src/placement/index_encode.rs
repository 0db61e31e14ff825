//! Building chunk index objects (the format is in `index.rs`): entries
//! sorted by id, one place per chunk, in checksummed or sealed blocks,
//! with the table of packs last.

use bytes::Bytes;

use super::index::{BLOCK_ENTRIES, ENTRY_LEN, IndexEntry, MAGIC, block_name, table_name};
use crate::codec::Codec;
use crate::crypto::SealKind;
use crate::id::ObjectId;
use crate::keys;

/// Builds an index object of any ids from the entries of some packs (any
/// order; an object holds one place per chunk: [`rounds`] splits entries
/// holding several places of a chunk first).
pub fn encode(codec: &Codec, entries: Vec<IndexEntry>) -> Bytes {
    encode_in(codec, "", entries)
}

/// Splits entries (any order) into groups of one place per chunk each, so
/// that every place is written: a chunk stored twice (by two backups at
/// once, again by a repair after damage) keeps both places, and a reader
/// whose first copy is damaged finds the other. The same place twice is
/// one entry.
pub fn rounds(mut entries: Vec<IndexEntry>) -> Vec<Vec<IndexEntry>> {
    entries.sort_unstable_by_key(|e| (e.entry.id, e.pack));
    entries.dedup_by_key(|e| (e.entry.id, e.pack));
    let mut out: Vec<Vec<IndexEntry>> = Vec::new();
    let mut again = Vec::new();
    loop {
        let mut round = Vec::with_capacity(entries.len());
        for e in entries {
            if round
                .last()
                .is_some_and(|l: &IndexEntry| l.entry.id == e.entry.id)
            {
                again.push(e);
            } else {
                round.push(e);
            }
        }
        if !round.is_empty() {
            out.push(round);
        }
        if again.is_empty() {
            return out;
        }
        entries = std::mem::take(&mut again);
    }
}

/// Builds an index object of shard `prefix` (see [`super::shard`]; its
/// seals are bound to the key the prefix is part of).
pub fn encode_in(codec: &Codec, prefix: &str, mut entries: Vec<IndexEntry>) -> Bytes {
    entries.sort_unstable_by_key(|e| e.entry.id);
    entries.dedup_by(|a, b| a.entry.id == b.entry.id);
    let mut packs: Vec<ObjectId> = entries.iter().map(|e| e.pack).collect();
    packs.sort_unstable();
    packs.dedup();
    let mut body = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in &entries {
        body.extend_from_slice(e.entry.id.as_bytes());
        body.extend_from_slice(e.pack.as_bytes());
        body.extend_from_slice(&e.entry.offset.to_le_bytes());
        body.extend_from_slice(&e.entry.stored_len.to_le_bytes());
        body.extend_from_slice(&e.entry.plain_len.to_le_bytes());
    }
    let mut table = Vec::with_capacity(8 + packs.len() * 32);
    table.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for p in &packs {
        table.extend_from_slice(p.as_bytes());
    }
    let sealed = codec.is_encrypted();
    let mut out = Vec::with_capacity(body.len() + table.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    out.extend_from_slice(&(BLOCK_ENTRIES as u32).to_le_bytes());
    out.extend_from_slice(&u32::from(sealed).to_le_bytes());
    if sealed {
        return seal(codec, prefix, out, table, &body);
    }
    for block in body.chunks(BLOCK_ENTRIES * ENTRY_LEN) {
        out.extend_from_slice(blake3::hash(block).as_bytes());
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out.extend_from_slice(&body);
    let sum = blake3::hash(&table);
    out.extend_from_slice(&table);
    out.extend_from_slice(sum.as_bytes());
    Bytes::from(out)
}

/// The sealed layout: the name, the sealed blocks, the sealed table.
fn seal(codec: &Codec, prefix: &str, mut out: Vec<u8>, table: Vec<u8>, body: &[u8]) -> Bytes {
    let mut named = out.clone();
    named.extend_from_slice(blake3::hash(body).as_bytes());
    named.extend_from_slice(&table);
    let name = codec.node_id(&named);
    let key = keys::index_in(prefix, &name);
    out.extend_from_slice(name.as_bytes());
    for (i, block) in body.chunks(BLOCK_ENTRIES * ENTRY_LEN).enumerate() {
        out.extend_from_slice(&codec.seal_meta(
            SealKind::Index,
            &block_name(&key, i),
            block.to_vec(),
        ));
    }
    out.extend_from_slice(&codec.seal_meta(SealKind::Index, &table_name(&key), table));
    Bytes::from(out)
}
