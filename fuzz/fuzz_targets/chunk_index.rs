//! Chunk index objects: arbitrary bytes decoded whole, and looked up
//! block by block as a ranged reader would. In an encrypted repository
//! arbitrary bytes never open; and an object whose head and blocks are
//! sealed right around fuzzed content (a backup-only host holds the
//! metadata key) is still checked, never trusted.
#![no_main]
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xfull_core::codec::Codec;
use xfull_core::crypto::{MasterKeys, SealKind};
use xfull_core::id::ObjectId;
use xfull_core::placement::index::IndexHead;

fn sealed() -> &'static Arc<Codec> {
    static C: OnceLock<Arc<Codec>> = OnceLock::new();
    C.get_or_init(|| {
        Arc::new(Codec::encrypted(
            MasterKeys::generate(),
            xfull_core::crypto::DataCipher::Aes256Gcm,
        ))
    })
}

fn probe(codec: &Arc<Codec>, key: &str, data: &[u8]) {
    let _ = IndexHead::decode_all(codec, key, data);
    let size = data.len() as u64;
    let Ok(len) = IndexHead::head_len(key, data, size) else {
        return;
    };
    let Ok(head) = IndexHead::decode(codec, key, &data[..len as usize], size) else {
        return;
    };
    let bytes = Bytes::copy_from_slice(data);
    for probe in [&data[..data.len().min(32)], b"x", b""] {
        let id = ObjectId::of(probe);
        let _ = head.lookup(&id, |r| Ok(bytes.slice(r.start as usize..r.end as usize)));
    }
}

/// A sealed object around fuzzed content: `packs` pack names and the
/// entries as the rest gives them, each part sealed under the right name.
fn sealed_object(key: &str, data: &[u8]) -> Vec<u8> {
    let Some((&packs, rest)) = data.split_first() else {
        return Vec::new();
    };
    let packs = usize::from(packs % 8);
    let (table, body) = rest.split_at((packs * 32).min(rest.len()));
    let entries = body.len() / 80;
    let body = &body[..entries * 80];
    let mut out = b"XFI2".to_vec();
    out.extend_from_slice(&(entries as u64).to_le_bytes());
    out.extend_from_slice(&(packs as u32).to_le_bytes());
    out.extend_from_slice(&1024u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&[0; 32]);
    for (i, block) in body.chunks(1024 * 80).enumerate() {
        let name = format!("{key}#{i}");
        out.extend_from_slice(&sealed().seal_meta(SealKind::Index, &name, block.to_vec()));
    }
    let mut plain_table = (entries as u64).to_le_bytes().to_vec();
    plain_table.extend_from_slice(table);
    let name = format!("{key}#packs");
    out.extend_from_slice(&sealed().seal_meta(SealKind::Index, &name, plain_table));
    out
}

fuzz_target!(|data: &[u8]| {
    let key = "index/fuzz";
    probe(&Arc::new(Codec::plain()), key, data);
    assert!(IndexHead::decode_all(sealed(), key, data).is_err());
    probe(sealed(), key, &sealed_object(key, data));
});
