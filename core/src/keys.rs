//! The object key space, identical on every backend.
//!
//! ```text
//! config                      repository constants (create-only)
//! chunks/<2 hex>/<64 hex>     chunk: framed, compressed plaintext
//! nodes/<2 hex>/<64 hex>      node: framed, compressed CBOR
//! points/<vm>/<point-id>      manifest: framed, compressed CBOR (create-only)
//! trash/points/<vm>/<id>      a pruned manifest a running backup still pins
//! leases/<session-id>         one per running backup session
//! gc/sweeps/<seq>             a sweep's start marker (refreshed while it runs)
//! gc/done/<seq>               written when that sweep finished
//! damage/<chunk or node key>  that object was found damaged
//! removed/<vm>/<point-id>     that point was removed while the VM's newest
//! packs/<2 hex>/<64 hex>      pack of chunk blobs (format 2)
//! index/<64 hex>              chunk index object of any chunk ids (format 2)
//! index/<p>-<64 hex>          chunk index object of the ids whose hex starts
//!                             with the shard prefix p (1 to 4 hex digits)
//! ```

use crate::id::{ObjectId, PointId};
use crate::names::VmName;

pub const CONFIG: &str = "config";
pub const CHUNKS: &str = "chunks/";
pub const NODES: &str = "nodes/";
pub const POINTS: &str = "points/";
pub const TRASH: &str = "trash/";
pub const LEASES: &str = "leases/";
/// Everything of gc's: its markers (and a preflight's scratch object).
pub const GC: &str = "gc/";
pub const SWEEPS: &str = "gc/sweeps/";
pub const DONE: &str = "gc/done/";
/// The scratch object of a sweep's preflight (`gc::sweep::preflight`).
pub const GC_PROBE: &str = "gc/permission-check";
pub const DAMAGE: &str = "damage/";
pub const PACKS: &str = "packs/";
pub const INDEX: &str = "index/";
pub const REMOVED: &str = "removed/";

fn fanned(prefix: &str, id: &ObjectId) -> String {
    let hex = id.to_hex();
    format!("{prefix}{}/{hex}", &hex[..2])
}

pub fn chunk(id: &ObjectId) -> String {
    fanned(CHUNKS, id)
}

pub fn node(id: &ObjectId) -> String {
    fanned(NODES, id)
}

/// A pack, named by the BLAKE3 of its bytes.
pub fn pack(name: &ObjectId) -> String {
    fanned(PACKS, name)
}

/// The name at the end of a `packs/` key, if it is one.
pub fn parse_pack(key: &str) -> Option<ObjectId> {
    let (fan, hex) = key.strip_prefix(PACKS)?.split_once('/')?;
    let id: ObjectId = hex.parse().ok()?;
    (fan.len() == 2 && hex.starts_with(fan)).then_some(id)
}

/// A chunk index object of any ids (as a backup writes them), named by
/// the BLAKE3 of its bytes (few: not fanned).
pub fn index(name: &ObjectId) -> String {
    index_in("", name)
}

/// An index object of shard `prefix` (lower-case hex digits the ids of
/// its entries start with; empty: any id). The shard is in the key so
/// that a lookup knows, from a listing alone, which objects can hold an
/// id.
pub fn index_in(prefix: &str, name: &ObjectId) -> String {
    if prefix.is_empty() {
        format!("{INDEX}{}", name.to_hex())
    } else {
        format!("{INDEX}{prefix}-{}", name.to_hex())
    }
}

/// The name at the end of an `index/` key of any ids, if it is one.
pub fn parse_index(key: &str) -> Option<ObjectId> {
    match parse_index_in(key)? {
        (p, name) if p.is_empty() => Some(name),
        _ => None,
    }
}

/// The shard prefix and name of an `index/` key, if it is one spelled as
/// xfull spells it.
pub fn parse_index_in(key: &str) -> Option<(String, ObjectId)> {
    let rest = key.strip_prefix(INDEX)?;
    let (prefix, hex) = rest.split_once('-').unwrap_or(("", rest));
    let name: ObjectId = hex.parse().ok()?;
    let ok = prefix.len() <= crate::placement::shard::MAX_DEPTH
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && index_in(prefix, &name) == key;
    ok.then(|| (prefix.to_string(), name))
}

pub fn point(vm: &VmName, id: &PointId) -> String {
    format!("{POINTS}{vm}/{id}")
}

pub fn points_of(vm: &VmName) -> String {
    format!("{POINTS}{vm}/")
}

/// The record that `vm@id` was removed while the VM's newest point
/// (`crate::removed`).
pub fn removed_point(vm: &VmName, id: &PointId) -> String {
    format!("{REMOVED}{vm}/{id}")
}

pub fn removed_of(vm: &VmName) -> String {
    format!("{REMOVED}{vm}/")
}

/// The point a `removed/` record names.
pub fn parse_removed(key: &str) -> Option<(VmName, PointId)> {
    parse_point(&format!("{POINTS}{}", key.strip_prefix(REMOVED)?))
}

/// Where a pruned but still pinned manifest waits for the next sweep.
pub fn trashed_point(vm: &VmName, id: &PointId) -> String {
    format!("{TRASH}{}", point(vm, id))
}

/// The record that the object under `key` (a chunk or node key) was
/// found damaged.
pub fn damage(key: &str) -> String {
    format!("{DAMAGE}{key}")
}

/// The chunk or node key a `damage/` record is about.
pub fn parse_damage(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(DAMAGE)?;
    parse_content(rest).map(|_| rest)
}

pub fn lease(session: &str) -> String {
    format!("{LEASES}{session}")
}

/// Sequence numbers are zero-padded so that keys sort like numbers.
pub fn sweep(seq: u64) -> String {
    format!("{SWEEPS}{seq:016}")
}

pub fn done(seq: u64) -> String {
    format!("{DONE}{seq:016}")
}

/// The sequence number of a `gc/sweeps/` or `gc/done/` key.
pub fn parse_seq(key: &str) -> Option<u64> {
    let rest = key
        .strip_prefix(SWEEPS)
        .or_else(|| key.strip_prefix(DONE))?;
    if rest.len() != 16 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The session id of a `leases/<session>` key, if it is named like one:
/// `YYYYMMDDTHHMMSSZ-` and 16 hex digits (anything else is not a lease).
pub fn parse_lease(key: &str) -> Option<&str> {
    let s = key.strip_prefix(LEASES)?;
    let (time, rand) = s.split_once('-')?;
    let time_ok = time.len() == 16
        && time.as_bytes()[8] == b'T'
        && time.ends_with('Z')
        && time
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit());
    let rand_ok = rand.len() == 16 && rand.bytes().all(|b| b.is_ascii_hexdigit());
    (time_ok && rand_ok).then_some(s)
}

/// The object id at the end of a `chunks/` or `nodes/` key.
pub fn parse_content(key: &str) -> Option<ObjectId> {
    let rest = key
        .strip_prefix(CHUNKS)
        .or_else(|| key.strip_prefix(NODES))?;
    let (fan, hex) = rest.split_once('/')?;
    let id: ObjectId = hex.parse().ok()?;
    (fan.len() == 2 && hex.starts_with(fan)).then_some(id)
}

/// Splits `points/<vm>/<id>` into its parts; `None` for anything else
/// (a stray file in the store is ignored, not fatal).
pub fn parse_point(key: &str) -> Option<(VmName, PointId)> {
    let rest = key.strip_prefix(POINTS)?;
    let (vm, id) = rest.split_once('/')?;
    Some((vm.parse().ok()?, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_keys_round_trip() {
        let vm: VmName = "vm1".parse().unwrap();
        let id: PointId = "20261125T194155Z-3fa2".parse().unwrap();
        assert_eq!(parse_point(&point(&vm, &id)), Some((vm.clone(), id)));
        assert_eq!(parse_point("points/vm1/junk"), None);
        assert_eq!(parse_point("nodes/ab/cd"), None);
        let name: ObjectId = "ab".repeat(32).parse().unwrap();
        assert_eq!(parse_pack(&pack(&name)), Some(name));
        assert_eq!(parse_index(&index(&name)), Some(name));
        assert_eq!(
            parse_index_in(&index_in("a3f", &name)),
            Some(("a3f".to_string(), name))
        );
        assert_eq!(parse_index(&index_in("a3f", &name)), None);
        for bad in ["A3F", "a3fff", "x", "-"] {
            assert_eq!(
                parse_index_in(&format!("index/{bad}-{}", name.to_hex())),
                None
            );
        }
        assert_eq!(
            parse_index_in(&format!("index/{}", name.to_hex().to_uppercase())),
            None
        );
        assert_eq!(parse_pack(&format!("packs/cd/{}", name.to_hex())), None);
        assert_eq!(parse_pack(&index(&name)), None);
        assert_eq!(
            trashed_point(&vm, &"20261125T194155Z-3fa2".parse().unwrap()),
            "trash/points/vm1/20261125T194155Z-3fa2"
        );
    }

    #[test]
    fn marker_and_content_keys_parse_back() {
        assert_eq!(parse_seq(&sweep(42)), Some(42));
        assert_eq!(parse_seq(&done(7)), Some(7));
        assert_eq!(parse_seq("gc/sweeps/12"), None);
        assert_eq!(parse_seq("gc/sweeps/00000000000000x1"), None);
        let id = ObjectId::of(b"y");
        assert_eq!(parse_content(&chunk(&id)), Some(id));
        assert_eq!(parse_content(&node(&id)), Some(id));
        assert_eq!(parse_content("chunks/zz/abc"), None);
        let wrong_fan = format!("chunks/00/{}", id.to_hex());
        assert_eq!(
            parse_content(&wrong_fan).is_some(),
            id.to_hex().starts_with("00")
        );
    }

    #[test]
    fn lease_keys_are_recognised_strictly() {
        let s = "20261125T194155Z-0123456789abcdef";
        assert_eq!(parse_lease(&lease(s)), Some(s));
        for bad in [
            "leases/notes.txt",
            "leases/20261125T194155Z-0123",
            "leases/2026112XT194155Z-0123456789abcdef",
            "leases/20261125T194155Z-0123456789abcdeg",
            "points/20261125T194155Z-0123456789abcdef",
        ] {
            assert_eq!(parse_lease(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_keys_fan_out_by_first_byte() {
        let id = ObjectId::of(b"x");
        let k = chunk(&id);
        assert!(k.starts_with(&format!("chunks/{}/", &id.to_hex()[..2])));
        assert!(k.ends_with(&id.to_hex()));
    }
}
