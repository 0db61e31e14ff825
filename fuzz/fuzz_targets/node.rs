//! Nodes, framed or as a valid frame around fuzzed CBOR, against a
//! repository whose segment size and chunk sizes the first byte picks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::chunker::ChunkParams;
use xfull_core::codec::Codec;
use xfull_core::config::RepoConfig;
use xfull_core::frame::{self, Kind};
use xfull_core::id::ObjectId;
use xfull_core::node::Node;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let segment_size = 1u64 << (20 + pick % 7);
    let chunking = ChunkParams::from_avg(16 << (10 + (pick >> 4) % 4));
    let Ok(cfg) = RepoConfig::new(segment_size, chunking, 3) else {
        return;
    };
    let _ = Node::decode(&ObjectId::of(data), data, &cfg, &Codec::plain());
    for level in [0, 3] {
        if let Ok(framed) = frame::encode(Kind::Node, data, level) {
            let _ = Node::decode(&ObjectId::of(data), &framed, &cfg, &Codec::plain());
        }
    }
});
