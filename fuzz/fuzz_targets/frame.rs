//! Object frames of every kind, whole or streamed, and chunk decoding into
//! a fixed buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::frame::{self, Kind};

fuzz_target!(|data: &[u8]| {
    for kind in [
        Kind::Config,
        Kind::Chunk,
        Kind::Node,
        Kind::Manifest,
        Kind::Lease,
        Kind::Marker,
    ] {
        let whole = frame::decode(kind, "k", data, 1 << 20);
        let streamed = frame::decode_stream(kind, "k", data, 1 << 20, |r| {
            let mut out = Vec::new();
            r.read_to_end(&mut out)
                .map_err(|e| xfull_core::Error::InvalidArgument(e.to_string()))?;
            Ok(out)
        });
        // Streaming gives the same plaintext, or fails where decode fails.
        if let Ok(plain) = &streamed {
            assert_eq!(whole.as_ref().ok(), Some(plain));
        }
        if whole.is_ok() {
            assert_eq!(streamed.ok(), whole.ok());
        }
    }
    let mut out = Vec::new();
    if frame::decode_chunk_into("k", data, 4096, &mut out).is_ok() {
        assert_eq!(out.len(), 4096);
    }
});
