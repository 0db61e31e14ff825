//! Edits of valid sealed objects (crypto/seal.rs envelopes, metadata and
//! data mode): the fuzzer's bytes are XORed into a real envelope, and
//! their first byte may cut or extend it. Anything but the original must
//! be refused, and nothing may panic. Random bytes rarely get past the
//! envelope's header (`sealed.rs`); edits of a real one exercise the
//! header parsing, the ephemeral-key exchange and the tag check.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xfull_core::crypto::{
    DataCipher, DataOpener, DataSealer, DataSecretKey, SealKind, SecretKey, open, seal,
};

struct Fixture {
    key: SecretKey,
    opener: DataOpener,
    meta: Vec<u8>,
    /// Chunk data sealed with each cipher (envelope modes 3 and 2).
    data: [Vec<u8>; 2],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = SecretKey::from_bytes([3; 32]);
        let secret = DataSecretKey::random();
        let data = [DataCipher::Aes256Gcm, DataCipher::XChaCha20Poly1305].map(|c| {
            DataSealer::new(&secret.public(), c).seal(SealKind::Chunk, "c", b"chunk bytes")
        });
        Fixture {
            meta: seal(SealKind::Node, &key, "n", b"node bytes"),
            opener: DataOpener::new(secret),
            key,
            data,
        }
    })
}

/// The envelope with `edits` XORed in; the first edit byte's low bits cut
/// it (0-3 bytes) or extend it (4-7: one to four zero bytes).
fn edited(original: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut t = original.to_vec();
    let Some((&len, xor)) = edits.split_first() else {
        return t;
    };
    for (i, b) in xor.iter().enumerate() {
        let n = t.len();
        t[i % n] ^= b;
    }
    match len % 8 {
        n @ 0..=3 => t.truncate(t.len() - n as usize),
        n => t.resize(t.len() + n as usize - 3, 0),
    }
    t
}

fuzz_target!(|edits: &[u8]| {
    let f = fixture();
    let m = edited(&f.meta, edits);
    let r = open(SealKind::Node, &f.key, "n", &m);
    if m == f.meta {
        assert_eq!(r.unwrap(), b"node bytes");
    } else {
        assert!(r.is_err());
    }
    for data in &f.data {
        let d = edited(data, edits);
        let r = f.opener.open(SealKind::Chunk, "c", &d);
        if d == *data {
            assert_eq!(r.unwrap(), b"chunk bytes");
        } else {
            assert!(r.is_err());
        }
    }
});
