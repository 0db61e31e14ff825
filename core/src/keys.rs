//! The object key space, identical on every backend.
//!
//! ```text
//! config                      repository constants (create-only)
//! chunks/<2 hex>/<64 hex>     chunk: framed, compressed plaintext
//! nodes/<2 hex>/<64 hex>      node: framed, compressed CBOR
//! points/<vm>/<point-id>      manifest: framed, compressed CBOR (create-only)
//! ```

use crate::id::{ObjectId, PointId};
use crate::names::VmName;

pub const CONFIG: &str = "config";
pub const CHUNKS: &str = "chunks/";
pub const NODES: &str = "nodes/";
pub const POINTS: &str = "points/";

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

pub fn point(vm: &VmName, id: &PointId) -> String {
    format!("{POINTS}{vm}/{id}")
}

pub fn points_of(vm: &VmName) -> String {
    format!("{POINTS}{vm}/")
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
        assert_eq!(parse_point(&point(&vm, &id)), Some((vm, id)));
        assert_eq!(parse_point("points/vm1/junk"), None);
        assert_eq!(parse_point("nodes/ab/cd"), None);
    }

    #[test]
    fn content_keys_fan_out_by_first_byte() {
        let id = ObjectId::of(b"x");
        let k = chunk(&id);
        assert!(k.starts_with(&format!("chunks/{}/", &id.to_hex()[..2])));
        assert!(k.ends_with(&id.to_hex()));
    }
}
