//! Pieces shared by the scale examples (`index_scale.rs`, `gc_scale.rs`,
//! `full_scan_scale.rs`): their synthetic stores, which generate index
//! objects on demand and keep none of them, and their command lines.

use xfull_core::backend::BackendError;

/// Sets the first `depth` hex digits of `id` to shard `k`'s prefix.
pub fn set_prefix(id: &mut [u8; 32], k: u64, depth: usize) {
    for d in 0..depth {
        let nibble = ((k >> (4 * (depth - 1 - d))) & 0xf) as u8;
        let byte = &mut id[d / 2];
        *byte = if d % 2 == 0 {
            (*byte & 0x0f) | (nibble << 4)
        } else {
            (*byte & 0xf0) | nibble
        };
    }
}

/// What the synthetic store answers for a key it does not generate.
pub fn not_found(key: &str) -> BackendError {
    BackendError::NotFound {
        location: "synthetic".into(),
        key: key.to_string(),
    }
}

/// The shard a key names, if it is the key of shard `k` of a store
/// `depth` digits deep (`key_of(k)`).
pub fn shard_of(key: &str, depth: usize, key_of: impl Fn(u64) -> String) -> Option<u64> {
    let (prefix, _) = xfull_core::keys::parse_index_in(key)?;
    let k = u64::from_str_radix(&prefix, 16).ok()?;
    (prefix.len() == depth && key_of(k) == key).then_some(k)
}

/// The number after `name` on the command line, else `default`.
pub fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}
