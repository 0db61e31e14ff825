//! The codec's opening path (core/src/codec.rs) of an encrypted
//! repository: stored bytes opened, then unframed, for every metadata kind
//! and for chunk data. Arbitrary stored bytes never open; and arbitrary
//! plaintext sealed under the right keys, which a backup-only host holds
//! for metadata and anyone can make for chunk data (the data key is
//! public), must reach the frame decoders without a panic. A plain codec
//! meeting a sealed object refuses it.
#![no_main]
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::{Codec, seal_kind};
use xfull_core::crypto::MasterKeys;
use xfull_core::frame::{self, Kind};

fn codec() -> &'static Codec {
    static C: OnceLock<Codec> = OnceLock::new();
    C.get_or_init(|| {
        Codec::encrypted(
            MasterKeys::generate(),
            xfull_core::crypto::DataCipher::Aes256Gcm,
        )
    })
}

const META: [Kind; 5] = [
    Kind::Node,
    Kind::Manifest,
    Kind::Lease,
    Kind::Marker,
    Kind::Damage,
];

fuzz_target!(|data: &[u8]| {
    let c = codec();
    let plain = Codec::plain();
    let id = c.chunk_id(b"the chunk");
    for kind in META {
        assert!(c.decode_meta(kind, "n", data, 1 << 20).is_err());
        let sealed = c.seal_meta(seal_kind(kind), "n", data.to_vec());
        // Opens (it is sealed right); the frame decoder judges the rest.
        let _ = c.decode_meta(kind, "n", &sealed, 1 << 20);
        assert!(c.decode_meta(kind, "m", &sealed, 1 << 20).is_err());
        assert!(plain.open_meta(seal_kind(kind), "n", &sealed).is_err());
    }
    assert!(c.open_chunk(&id, data).is_err());
    let sealed = c.seal_chunk(&id, Bytes::copy_from_slice(data));
    let opened = c.open_chunk(&id, &sealed).expect("a sealed chunk opens");
    assert_eq!(&*opened, data);
    let _ = frame::decode_chunk(&id.to_hex(), &opened, 1 << 20);
    assert!(plain.open_chunk(&id, &sealed).is_err());
});
