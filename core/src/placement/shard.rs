//! Shards of the chunk index: which index objects can hold an id.
//!
//! A backup writes index objects of any ids (shard prefix ""). gc
//! rewrites them, and the objects it replaces, into objects of one
//! shard each: the ids whose hex starts with a prefix of `depth` digits,
//! the depth chosen so that a shard holds about [`SHARD_ENTRIES`] entries
//! (4,096 shards of about 244 k entries at 10^9 chunks). The prefix is in
//! the object's key, so a lookup knows from the listing alone which
//! objects to read for an id: the unsharded ones and those of its prefix,
//! whatever their depth (an index in the middle of growing holds both).

use crate::id::ObjectId;

/// Entries a shard is sized for: 2^19 x 80 bytes = 40 MiB per object, the
/// most gc buffers while writing one.
pub const SHARD_ENTRIES: u64 = 1 << 19;

/// The deepest shard prefix, in hex digits (65,536 shards: 34 G entries
/// at [`SHARD_ENTRIES`] each).
pub const MAX_DEPTH: usize = 4;

/// The shard depth for an index of `entries` entries: the fewest hex
/// digits that bring a shard to at most `per_shard` ([`SHARD_ENTRIES`]
/// but in tests).
pub fn depth_for(entries: u64, per_shard: u64) -> usize {
    let mut depth = 0;
    while depth < MAX_DEPTH && entries > per_shard.saturating_mul(1 << (4 * depth)) {
        depth += 1;
    }
    depth
}

/// The first `depth` hex digits of `id`.
pub fn prefix_of(id: &ObjectId, depth: usize) -> String {
    let mut hex = id.to_hex();
    hex.truncate(depth.min(MAX_DEPTH));
    hex
}

/// Whether `id` belongs to the shard `prefix` ("" holds every id).
pub fn holds(prefix: &str, id: &ObjectId) -> bool {
    prefix.is_empty() || id.to_hex().starts_with(prefix)
}

/// The smallest id of shard `prefix` (where a merge starts reading it).
pub fn first_id(prefix: &str) -> ObjectId {
    let mut bytes = [0u8; 32];
    for (i, c) in prefix.bytes().enumerate() {
        let v = (c as char).to_digit(16).unwrap_or(0) as u8;
        bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    ObjectId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_grows_by_sixteen() {
        let d = |n| depth_for(n, SHARD_ENTRIES);
        assert_eq!(d(0), 0);
        assert_eq!(d(SHARD_ENTRIES), 0);
        assert_eq!(d(SHARD_ENTRIES + 1), 1);
        assert_eq!(d(200_000_000), 3);
        assert_eq!(d(1_000_000_000), 3);
        assert_eq!(d(u64::MAX), MAX_DEPTH);
    }

    #[test]
    fn prefixes_hold_their_ids() {
        let id: ObjectId = format!("a3f{}", "0".repeat(61)).parse().unwrap();
        assert_eq!(prefix_of(&id, 3), "a3f");
        assert!(holds("a3", &id) && holds("", &id) && !holds("a4", &id));
        assert_eq!(first_id("a3f"), id);
        assert!(first_id("a3f") <= id && first_id("a40") > id);
    }
}
