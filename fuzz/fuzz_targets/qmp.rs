//! The QMP message decoder: whatever a server sends as one line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::qmp::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
});
