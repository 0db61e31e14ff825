//! Damage records (read by backups and `repair`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::damage::DamageRecord;
use xfull_core::frame::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let key = "damage/chunks/00/0000000000000000000000000000000000000000000000000000000000000000";
    let _ = DamageRecord::decode(key, data, &Codec::plain());
    if let Ok(framed) = frame::encode(Kind::Damage, data, 0) {
        let _ = DamageRecord::decode(key, &framed, &Codec::plain());
    }
});
