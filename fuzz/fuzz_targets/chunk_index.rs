//! Chunk index objects: arbitrary bytes decoded whole, and looked up
//! block by block as a ranged reader would.
#![no_main]
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::id::ObjectId;
use xfull_core::placement::index::IndexHead;

fuzz_target!(|data: &[u8]| {
    let codec = Arc::new(Codec::plain());
    let _ = IndexHead::decode_all(&codec, "index/fuzz", data);
    let size = data.len() as u64;
    let Ok(len) = IndexHead::head_len("index/fuzz", data, size) else {
        return;
    };
    let Ok(head) = IndexHead::decode(&codec, "index/fuzz", &data[..len as usize], size) else {
        return;
    };
    let bytes = Bytes::copy_from_slice(data);
    for probe in [&data[..data.len().min(32)], b"x", b""] {
        let id = ObjectId::of(probe);
        let _ = head.lookup(&id, |r| Ok(bytes.slice(r.start as usize..r.end as usize)));
    }
});
