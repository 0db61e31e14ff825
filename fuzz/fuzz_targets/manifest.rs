//! Manifests and their summaries, framed or as a valid frame (stored or
//! zstd-compressed) around fuzzed CBOR, against a repository whose segment
//! size the first byte picks. Decoding must never panic nor allocate past
//! the limits, whatever counts and sizes the CBOR declares.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::frame::{self, Kind};
use xfull_core::manifest::{Manifest, ManifestSummary};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let segment_size = 1u64 << (20 + pick % 7);
    let Ok(cfg) = RepoConfig::new(segment_size, ChunkParams::default(), 3) else {
        return;
    };
    let _ = Manifest::decode("points/v/k", data, &cfg);
    let _ = ManifestSummary::decode("points/v/k", data, &cfg);
    for level in [0, 3] {
        if let Ok(framed) = frame::encode(Kind::Manifest, data, level) {
            let _ = Manifest::decode("points/v/k", &framed, &cfg);
            let _ = ManifestSummary::decode("points/v/k", &framed, &cfg);
        }
    }
});
