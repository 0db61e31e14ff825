//! Leases (read by gc and prune from other writers).
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::frame::{self, Kind};
use xfull_core::lease::LeaseRecord;

fuzz_target!(|data: &[u8]| {
    let _ = LeaseRecord::decode("leases/k", data, &Codec::plain());
    if let Ok(framed) = frame::encode(Kind::Lease, data, 0) {
        let _ = LeaseRecord::decode("leases/k", &framed, &Codec::plain());
    }
});
