//! Nodes, framed or as a valid frame around fuzzed CBOR.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::frame::{self, Kind};
use xfull_core::id::ObjectId;
use xfull_core::node::Node;

fuzz_target!(|data: &[u8]| {
    let _ = Node::decode(&ObjectId::of(data), data, 16 << 20);
    if let Ok(framed) = frame::encode(Kind::Node, data, 0) {
        let _ = Node::decode(&ObjectId::of(data), &framed, 16 << 20);
    }
});
