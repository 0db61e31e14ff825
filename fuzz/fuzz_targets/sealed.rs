//! Sealed objects (crypto/seal.rs and crypto/data.rs): every encrypted
//! object is opened from bytes anyone with write access to the bucket
//! may have written. Opening must never panic and must accept nothing but
//! what was sealed under the right key, kind and name.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xfull_core::crypto::{DataCipher, DataOpener, DataSecretKey, SealKind, SecretKey, open, seal};

fn opener() -> &'static (DataOpener, DataSecretKey) {
    static O: OnceLock<(DataOpener, DataSecretKey)> = OnceLock::new();
    O.get_or_init(|| {
        let s = DataSecretKey::random();
        (DataOpener::new(s.clone()), s)
    })
}

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_bytes([1; 32]);
    let (data_opener, data_secret) = opener();
    for kind in SealKind::ALL {
        // Arbitrary bytes never open (a forgery would need the key).
        assert!(open(kind, &key, "n", data).is_err());
        let _ = data_opener.open(kind, "n", data);
    }
    // What was sealed opens back, and any single change is refused.
    let sealed = seal(SealKind::Node, &key, "n", data);
    assert_eq!(open(SealKind::Node, &key, "n", &sealed).unwrap(), data);
    let mut bad = sealed.clone();
    let i = data.first().copied().unwrap_or(0) as usize % bad.len();
    bad[i] ^= 0x80;
    assert!(open(SealKind::Node, &key, "n", &bad).is_err());
    for cipher in [DataCipher::Aes256Gcm, DataCipher::XChaCha20Poly1305] {
        let d = xfull_core::crypto::DataSealer::new(&data_secret.public(), cipher).seal(
            SealKind::Chunk,
            "c",
            data,
        );
        assert_eq!(data_opener.open(SealKind::Chunk, "c", &d).unwrap(), data);
        assert!(
            data_opener
                .open(SealKind::Chunk, "c", &d[..d.len() - 1])
                .is_err()
        );
    }
});
