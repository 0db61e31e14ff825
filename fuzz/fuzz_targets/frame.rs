//! Object frames of every kind, and chunk decoding into a fixed buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::frame::{self, Kind};

fuzz_target!(|data: &[u8]| {
    for kind in [Kind::Config, Kind::Chunk, Kind::Node, Kind::Manifest, Kind::Lease, Kind::Marker] {
        let _ = frame::decode(kind, "k", data, 1 << 20);
    }
    let mut out = vec![0u8; 4096];
    let _ = frame::decode_chunk_into("k", data, &mut out);
});
