//! Key slots (`keys/...`): read before anything is unlocked, so from
//! whoever can write the bucket. Decoding must never panic, allocate
//! beyond the input, or accept costs that would exhaust the machine.
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::crypto::{KeySlot, Secret};

fuzz_target!(|data: &[u8]| {
    let mut framed = b"XFK1".to_vec();
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(slot) = KeySlot::decode("keys/0123456789abcdef", bytes)
            && let xfull_core::crypto::slot::Kdf::KeyFile { .. } = slot.header.kdf
        {
            // Opening a key-file slot costs no stretching: exercise the
            // unwrapping of hostile wrapped bytes too.
            let key = xfull_core::crypto::SecretKey::from_bytes([7; 32]);
            let _ = slot.open(&Secret::key_file(&key, "fuzz"));
        }
    }
});
