//! Change files given by users: native extents, qemu-img map, rbd diff.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::changes::parse::parse_changes;

fuzz_target!(|data: &[u8]| {
    let _ = parse_changes("changes.json", data, 1 << 40);
});
