//! Pack trailers and blobs: arbitrary bytes as a pack's suffix (with a
//! real size the first bytes pick), and every blob a decodable trailer
//! lists opened against it. In an encrypted repository arbitrary bytes
//! never open, and a table sealed under the right key (a backup-only host
//! holds the metadata key, so it can write any) still meets the checks.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::crypto::{MasterKeys, SealKind};
use xfull_core::placement::pack::{decode_trailer, open_blob};

fn sealed() -> &'static Codec {
    static C: OnceLock<Codec> = OnceLock::new();
    C.get_or_init(|| {
        Codec::encrypted(
            MasterKeys::generate(),
            xfull_core::crypto::DataCipher::Aes256Gcm,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    // The suffix is the whole pack, or the end of a larger one.
    let size = data.len() as u64
        + if pick & 1 == 0 {
            0
        } else {
            u64::from(pick) << 20
        };
    let max_chunk = 1u32 << (12 + pick % 12);
    let key = "packs/fuzz";
    assert!(decode_trailer(sealed(), key, data, size, max_chunk).is_err());
    // A hostile table under a valid seal, after `pick` bytes of blobs.
    let mut pack = vec![0u8; usize::from(pick)];
    let table = sealed().seal_meta(SealKind::Pack, key, data.to_vec());
    pack.extend_from_slice(&table);
    pack.extend_from_slice(&((table.len() + 4) as u32).to_le_bytes());
    let _ = decode_trailer(sealed(), key, &pack, pack.len() as u64, max_chunk);

    let codec = Codec::plain();
    let Ok(entries) = decode_trailer(&codec, key, data, size, max_chunk) else {
        return;
    };
    if size != data.len() as u64 {
        return;
    }
    for e in entries {
        let blob = &data[e.range().start as usize..e.range().end as usize];
        let mut out = vec![0u8; e.plain_len as usize];
        let _ = open_blob(&codec, key, &e, blob, &mut out);
    }
});
