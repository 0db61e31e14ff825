//! Pack trailers and blobs: arbitrary bytes as a pack's suffix (with a
//! real size the first bytes pick), and every blob a decodable trailer
//! lists opened against it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::placement::pack::{decode_trailer, open_blob};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    // The suffix is the whole pack, or the end of a larger one.
    let size = data.len() as u64 + if pick & 1 == 0 { 0 } else { u64::from(pick) << 20 };
    let max_chunk = 1u32 << (12 + pick % 12);
    let codec = Codec::plain();
    let Ok(entries) = decode_trailer(&codec, "packs/fuzz", data, size, max_chunk) else {
        return;
    };
    if size != data.len() as u64 {
        return;
    }
    for e in entries {
        let blob = &data[e.range().start as usize..e.range().end as usize];
        let mut out = vec![0u8; e.plain_len as usize];
        let _ = open_blob(&codec, "packs/fuzz", &e, blob, &mut out);
    }
});
