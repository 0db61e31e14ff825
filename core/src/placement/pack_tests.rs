use proptest::prelude::*;

use super::*;
use crate::codec::Codec;
use crate::placement::chunk_id;

const MAX: u32 = 1 << 20;

fn chunk(i: u32, len: usize) -> Vec<u8> {
    // Half compressible, half not.
    (0..len)
        .map(|j| {
            if i.is_multiple_of(2) {
                (j / 64) as u8
            } else {
                (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8 ^ (j >> 3) as u8
            }
        })
        .collect()
}

fn build(chunks: &[Vec<u8>], level: i32) -> (ObjectId, Bytes, Vec<PackEntry>) {
    let mut w = PackWriter::new();
    for c in chunks {
        w.push(&Codec::plain(), chunk_id(c), c, level).unwrap();
    }
    w.finish(&Codec::plain())
}

#[test]
fn a_pack_round_trips_from_its_trailer_alone() {
    let chunks: Vec<Vec<u8>> = (0..7).map(|i| chunk(i, 1000 + 3000 * i as usize)).collect();
    for level in [0, 3] {
        let (name, pack, written) = build(&chunks, level);
        assert_eq!(name, pack_name(&pack));
        let size = pack.len() as u64;
        // A suffix read of a few KiB, as a ranged GET would give it.
        let suffix = &pack[pack.len().saturating_sub(4096)..];
        let entries = decode_trailer(&Codec::plain(), "p", suffix, size, MAX).unwrap();
        assert_eq!(entries, written);
        for (e, c) in entries.iter().zip(&chunks) {
            let blob = &pack[e.range().start as usize..e.range().end as usize];
            let mut out = vec![0u8; e.plain_len as usize];
            open_blob(&Codec::plain(), "p", e, blob, &mut out).unwrap();
            assert_eq!(&out, c);
        }
    }
}

#[test]
fn a_suffix_shorter_than_the_trailer_is_refused_not_misread() {
    let chunks: Vec<Vec<u8>> = (0..50).map(|i| chunk(i, 100)).collect();
    let (_, pack, _) = build(&chunks, 3);
    let e = decode_trailer(
        &Codec::plain(),
        "p",
        &pack[pack.len() - 100..],
        pack.len() as u64,
        MAX,
    )
    .unwrap_err();
    assert!(e.to_string().contains("100 read"), "{e}");
}

#[test]
fn hostile_trailers_are_damage() {
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| chunk(i, 5000)).collect();
    let (_, pack, entries) = build(&chunks, 3);
    let size = pack.len();
    let trailer = TRAILER_MIN + 3 * ENTRY_LEN;
    let start = size - trailer;
    let check = |bytes: &[u8], what: &str| {
        let e =
            decode_trailer(&Codec::plain(), "packs/x", bytes, bytes.len() as u64, MAX).unwrap_err();
        assert!(e.is_damage(), "{what}: {e}");
        assert!(e.to_string().contains("packs/x"), "{what}: {e}");
    };
    // A huge declared trailer length.
    let mut b = pack.to_vec();
    b[size - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    check(&b, "huge length");
    // Too short to be a trailer.
    let mut b = pack.to_vec();
    b[size - 4..].copy_from_slice(&3u32.to_le_bytes());
    check(&b, "tiny length");
    // A flipped byte in an entry: the checksum catches it.
    let mut b = pack.to_vec();
    b[start + 8 + 40] ^= 1;
    check(&b, "flipped entry");
    // A count that disagrees with the length, checksum recomputed.
    let reseal = |b: &mut Vec<u8>| {
        let sum = blake3::hash(&b[start..size - 36]);
        b[size - 36..size - 4].copy_from_slice(sum.as_bytes());
    };
    let mut b = pack.to_vec();
    b[start + 4..start + 8].copy_from_slice(&4u32.to_le_bytes());
    reseal(&mut b);
    check(&b, "count");
    // Overlapping blobs, a blob past the data, a zero or oversized length.
    for (field, value) in [
        (32usize, 1u64),
        (40, 1),
        (40, 0),
        (44, 0),
        (44, u64::from(MAX) + 1),
    ] {
        let mut b = pack.to_vec();
        let at = start + 8 + ENTRY_LEN + field;
        if field == 32 {
            b[at..at + 8].copy_from_slice(&(entries[1].offset + value).to_le_bytes());
        } else {
            b[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes());
        }
        reseal(&mut b);
        check(&b, &format!("field {field} = {value}"));
    }
    // The same chunk twice.
    let mut b = pack.to_vec();
    let (first, second) = (start + 8, start + 8 + ENTRY_LEN);
    let id = b[first..first + 32].to_vec();
    b[second..second + 32].copy_from_slice(&id);
    reseal(&mut b);
    check(&b, "duplicate");
    // Bad magic.
    let mut b = pack.to_vec();
    b[start] = b'Y';
    reseal(&mut b);
    check(&b, "magic");
}

#[test]
fn a_damaged_blob_is_damage_naming_its_chunk() {
    let chunks = vec![chunk(0, 9000), chunk(1, 9000)];
    let (_, pack, entries) = build(&chunks, 3);
    for e in &entries {
        let mut blob = pack[e.range().start as usize..e.range().end as usize].to_vec();
        let last = blob.len() - 1;
        blob[last] ^= 0x40;
        let mut out = vec![0u8; e.plain_len as usize];
        let err = open_blob(&Codec::plain(), "packs/x", e, &blob, &mut out).unwrap_err();
        assert!(err.is_damage(), "{err}");
        assert!(err.to_string().contains(&e.id.short()), "{err}");
    }
    // An unknown codec asks for a newer xfull, it is not damage.
    let e = &entries[0];
    let mut blob = pack[e.range().start as usize..e.range().end as usize].to_vec();
    blob[4] = 7; // the frame's codec byte
    let mut out = vec![0u8; e.plain_len as usize];
    let err = open_blob(&Codec::plain(), "packs/x", e, &blob, &mut out).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
}

proptest! {
    /// Arbitrary bytes and truncations never panic or allocate beyond
    /// what the pack's size justifies.
    #[test]
    fn arbitrary_suffixes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), extra in 0u64..1 << 40) {
        let _ = decode_trailer(&Codec::plain(), "p", &bytes, bytes.len() as u64, MAX);
        let _ = decode_trailer(&Codec::plain(), "p", &bytes, bytes.len() as u64 + extra, MAX);
    }

    #[test]
    fn packs_of_random_chunks_round_trip(lens in prop::collection::vec(1usize..20_000, 1..12), level in 0i32..4) {
        let chunks: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, l)| chunk(i as u32, *l)).collect();
        let mut uniq = chunks.clone();
        uniq.sort();
        uniq.dedup();
        prop_assume!(uniq.len() == chunks.len());
        let (_, pack, written) = build(&chunks, level);
        let got = decode_trailer(&Codec::plain(), "p", &pack, pack.len() as u64, MAX).unwrap();
        prop_assert_eq!(got, written);
    }
}

#[test]
fn an_encrypted_trailer_hides_its_table_and_is_bound_to_its_pack() {
    let codec = Codec::encrypted(
        crate::crypto::MasterKeys::generate(),
        crate::crypto::DataCipher::Aes256Gcm,
    );
    let seal_pack = |chunks: &[Vec<u8>]| {
        let mut w = PackWriter::new();
        for c in chunks {
            w.push(&codec, codec.chunk_id(c), c, 3).unwrap();
        }
        w.finish(&codec)
    };
    let chunks: Vec<Vec<u8>> = (0..5).map(|i| chunk(i, 3000 + 1000 * i as usize)).collect();
    let (name, pack, written) = seal_pack(&chunks);
    let key = crate::keys::pack(&name);
    let size = pack.len() as u64;
    let start = written.last().unwrap().range().end as usize;
    assert_eq!(
        pack.len() - start,
        TRAILER_MIN + 5 * ENTRY_LEN + META_OVERHEAD,
        "overhead: one seal per pack"
    );
    // A suffix read alone opens, and the blobs with it.
    let suffix = &pack[pack.len().saturating_sub(4096)..];
    let entries = decode_trailer(&codec, &key, suffix, size, MAX).unwrap();
    assert_eq!(entries, written);
    for (e, c) in entries.iter().zip(&chunks) {
        let mut out = vec![0u8; e.plain_len as usize];
        open_blob(
            &codec,
            &key,
            e,
            &pack[e.range().start as usize..e.range().end as usize],
            &mut out,
        )
        .unwrap();
        assert_eq!(&out, c);
    }
    // No chunk id and no entry's lengths in the stored trailer.
    let trailer = &pack[start..];
    for e in &written {
        assert!(!trailer.windows(32).any(|w| w == e.id.as_bytes()));
        let lens = [e.stored_len.to_le_bytes(), e.plain_len.to_le_bytes()].concat();
        assert!(!trailer.windows(8).any(|w| w == lens));
    }
    let damaged = |c: &Codec, bytes: &[u8], k: &str, what: &str| {
        let e = decode_trailer(c, k, bytes, bytes.len() as u64, MAX).unwrap_err();
        assert!(e.is_damage() && e.to_string().contains(k), "{what}: {e}");
    };
    // Read under another pack's key; another pack's trailer grafted on.
    damaged(
        &codec,
        &pack,
        &crate::keys::pack(&ObjectId::of(b"x")),
        "moved",
    );
    let (_, other, other_written) = seal_pack(&chunks[1..]);
    let other_start = other_written.last().unwrap().range().end as usize;
    let graft = [&pack[..start], &other[other_start..]].concat();
    damaged(&codec, &graft, &key, "grafted");
    // Every byte of the sealed table flipped; one byte cut.
    for i in start..pack.len() - 4 {
        let mut b = pack.to_vec();
        b[i] ^= 0x01;
        if i == start + 3 {
            // The envelope's version digit: refused as a newer format.
            let e = decode_trailer(&codec, &key, &b, b.len() as u64, MAX).unwrap_err();
            assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
            continue;
        }
        damaged(&codec, &b, &key, &format!("byte {i}"));
    }
    let mut cut = pack[..pack.len() - 5].to_vec();
    cut.extend_from_slice(&((pack.len() - start - 1) as u32).to_le_bytes());
    damaged(&codec, &cut, &key, "cut");
    // A plain codec meets the sealed trailer, an encrypted one a plain.
    damaged(&Codec::plain(), &pack, &key, "plain codec");
    let (plain_name, plain_pack, _) = build(&chunks, 3);
    damaged(
        &codec,
        &plain_pack,
        &crate::keys::pack(&plain_name),
        "not sealed",
    );
}
