//! Sweep done markers (read by backups before they commit).
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::frame::{self, Kind};
use xfull_core::gc::markers::SweepState;

fuzz_target!(|data: &[u8]| {
    let _ = SweepState::decode("gc/done/k", data, &Codec::plain());
    if let Ok(framed) = frame::encode(Kind::Marker, data, 0) {
        let _ = SweepState::decode("gc/done/k", &framed, &Codec::plain());
    }
});
