//! Manifests, framed or as a valid frame around fuzzed CBOR.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::frame::{self, Kind};
use xfull_core::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::decode("points/v/k", data);
    if let Ok(framed) = frame::encode(Kind::Manifest, data, 0) {
        let _ = Manifest::decode("points/v/k", &framed);
    }
});
