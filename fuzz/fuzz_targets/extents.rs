//! Change files given by users: native extents, qemu-img map, rbd diff,
//! parsed as a stream against a disk whose size the first 8 bytes give.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::changes::parse::parse_changes;

fuzz_target!(|data: &[u8]| {
    let (size, text) = match data.split_first_chunk::<8>() {
        Some((size, text)) => (u64::from_le_bytes(*size), text),
        None => (1 << 40, data),
    };
    if let Ok((set, _)) = parse_changes("changes.json", text, size) {
        // Merged: sorted, disjoint, non-empty, within the disk.
        for w in set.ranges().windows(2) {
            assert!(w[0].end < w[1].start);
        }
        assert!(
            set.ranges()
                .iter()
                .all(|r| r.start < r.end && r.end <= size)
        );
    }
});
