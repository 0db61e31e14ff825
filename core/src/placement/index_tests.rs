use std::cell::Cell;

use proptest::prelude::*;

use super::*;
use crate::codec::Codec;
use crate::placement::test_codec as plain;

fn entries(n: usize, packs: usize) -> Vec<IndexEntry> {
    (0..n)
        .map(|i| IndexEntry {
            pack: ObjectId::of(&(i % packs).to_le_bytes()),
            entry: PackEntry {
                id: ObjectId::of(&(i as u64).to_be_bytes()),
                offset: i as u64 * 10,
                stored_len: 10,
                plain_len: 20 + i as u32,
            },
        })
        .collect()
}

fn reader(bytes: &Bytes, reads: &Cell<usize>) -> impl FnMut(Range<u64>) -> Result<Bytes> {
    move |r: Range<u64>| {
        reads.set(reads.get() + 1);
        Ok(bytes.slice(r.start as usize..r.end as usize))
    }
}

#[test]
fn lookups_find_every_entry_in_about_one_read() {
    let all = entries(20_000, 37);
    let obj = encode(&Codec::plain(), all.clone());
    let (head, decoded) = IndexHead::decode_all(&plain(), "index/x", &obj).unwrap();
    assert_eq!(decoded.len(), all.len());
    assert_eq!(head.blocks(), 20);
    let reads = Cell::new(0);
    for e in &all {
        let got = head.lookup(&e.entry.id, reader(&obj, &reads)).unwrap();
        assert_eq!(got, Some(*e));
    }
    let per = reads.get() as f64 / all.len() as f64;
    assert!(per < 1.2, "{per} block reads per lookup");
    for i in 0..500u64 {
        let absent = ObjectId::of(&(i + 1_000_000).to_be_bytes());
        assert_eq!(head.lookup(&absent, reader(&obj, &reads)).unwrap(), None);
    }
}

#[test]
fn an_empty_index_finds_nothing() {
    let obj = encode(&Codec::plain(), Vec::new());
    let (head, all) = IndexHead::decode_all(&plain(), "i", &obj).unwrap();
    assert!(all.is_empty());
    let reads = Cell::new(0);
    assert_eq!(
        head.lookup(&ObjectId::of(b"x"), reader(&obj, &reads))
            .unwrap(),
        None
    );
    assert_eq!(reads.get(), 0);
}

#[test]
fn duplicates_keep_one_place() {
    let mut all = entries(10, 2);
    let mut again = all[3];
    again.pack = ObjectId::of(b"another pack");
    all.push(again);
    let (_, decoded) = IndexHead::decode_all(&plain(), "i", &encode(&Codec::plain(), all)).unwrap();
    assert_eq!(decoded.len(), 10);
}

#[test]
fn hostile_index_objects_are_damage() {
    let obj = encode(&Codec::plain(), entries(3000, 5)).to_vec();
    let check = |b: &[u8], what: &str| {
        let e = IndexHead::decode_all(&plain(), "index/x", b).unwrap_err();
        assert!(e.is_damage(), "{what}: {e}");
        assert!(e.to_string().contains("index/x"), "{what}: {e}");
    };
    check(&obj[..obj.len() - 1], "truncated");
    check(&[&obj[..], &[0u8; 52]].concat(), "extended");
    let mut b = obj.clone();
    b[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
    check(&b, "huge entry count");
    let mut b = obj.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    check(&b, "huge pack count");
    let mut b = obj.clone();
    b[30] ^= 1;
    check(&b, "head bit flip");
    let (head, _) = IndexHead::decode_all(&plain(), "index/x", &obj).unwrap();
    let mut b = obj.clone();
    let last = head.block_range(head.blocks() - 1).end as usize - 3;
    b[last] ^= 1;
    check(&b, "entry bit flip");
    let mut b = obj.clone();
    let last = b.len() - 3;
    b[last] ^= 1;
    check(&b, "table bit flip");
    // A table whose entry count disagrees with the head's, its sum made
    // to match: what a cut object would show gc.
    let mut b = obj.clone();
    let t = head.table_range();
    let (t0, t1) = (t.start as usize, t.end as usize);
    b[t0..t0 + 8].copy_from_slice(&2999u64.to_le_bytes());
    let sum = blake3::hash(&b[t0..t1 - 32]);
    b[t1 - 32..t1].copy_from_slice(sum.as_bytes());
    check(&b, "table count");
    check(b"XFI2", "short");
    check(b"", "empty");
    // Lengths no chunk can have, encoded with valid sums: refused before
    // a reader allocates for them; the largest chunk passes.
    use crate::chunker::LARGEST_CHUNK;
    for (stored, plain_len, ok) in [
        (100, LARGEST_CHUNK, true),
        (2 * LARGEST_CHUNK, 100, true),
        (100, LARGEST_CHUNK + 1, false),
        (2 * LARGEST_CHUNK + 1, 100, false),
        (100, u32::MAX, false),
    ] {
        let mut all = entries(10, 9);
        all[4].entry.stored_len = stored;
        all[4].entry.plain_len = plain_len;
        let b = encode(&Codec::plain(), all);
        let r = IndexHead::decode_all(&plain(), "index/x", &b);
        assert_eq!(r.is_ok(), ok, "{stored} stored, {plain_len} plain");
        if let Err(e) = r {
            assert!(e.is_damage() && e.to_string().contains("at most"), "{e}");
        }
    }
    // An offset whose range would overflow (review at stop 49: a panic
    // in a debug restore, a wrapped range in a release one).
    for (offset, ok) in [
        (MAX_PACK_OFFSET, true),
        (MAX_PACK_OFFSET + 1, false),
        (u64::MAX - 10, false),
    ] {
        let mut all = entries(10, 9);
        all[4].entry.offset = offset;
        let b = encode(&Codec::plain(), all);
        let r = IndexHead::decode_all(&plain(), "index/x", &b);
        assert_eq!(r.is_ok(), ok, "offset {offset}");
        if let Err(e) = r {
            assert!(e.is_damage() && e.to_string().contains("past"), "{e}");
        }
    }
}

#[test]
fn a_hostile_unsorted_index_cannot_make_a_lookup_loop() {
    // Blocks in descending order, each checksummed: the walk goes one
    // way and stops.
    let all = entries(4096, 3);
    let mut sorted = all.clone();
    sorted.sort_by_key(|e| e.entry.id);
    let obj = encode(&Codec::plain(), all);
    let (head, _) = IndexHead::decode_all(&plain(), "i", &obj).unwrap();
    let mut b = obj.to_vec();
    let (r0, r3) = (head.block_range(0), head.block_range(3));
    let (b0, b3) = (
        b[r0.start as usize..r0.end as usize].to_vec(),
        b[r3.start as usize..r3.end as usize].to_vec(),
    );
    b[r0.start as usize..r0.end as usize].copy_from_slice(&b3);
    b[r3.start as usize..r3.end as usize].copy_from_slice(&b0);
    // Re-seal the head with the swapped blocks' sums.
    let hl = head.head_len as usize;
    let sums = FIXED;
    let s0: [u8; 32] = b[sums..sums + 32].try_into().unwrap();
    let s3: [u8; 32] = b[sums + 96..sums + 128].try_into().unwrap();
    b[sums..sums + 32].copy_from_slice(&s3);
    b[sums + 96..sums + 128].copy_from_slice(&s0);
    let sum = blake3::hash(&b[..hl - 32]);
    b[hl - 32..hl].copy_from_slice(sum.as_bytes());
    assert!(
        IndexHead::decode_all(&plain(), "i", &b).is_err(),
        "order is checked across blocks"
    );
    let bytes = Bytes::from(b);
    let head = IndexHead::decode(&plain(), "i", &bytes[..hl], bytes.len() as u64).unwrap();
    let reads = Cell::new(0);
    for e in sorted.iter().step_by(97) {
        let _ = head.lookup(&e.entry.id, reader(&bytes, &reads)).unwrap();
    }
    assert!(reads.get() <= 4 * sorted.iter().step_by(97).count());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = IndexHead::decode_all(&plain(), "i", &bytes);
        let mut b = bytes.clone();
        if b.len() >= 4 {
            b[..4].copy_from_slice(MAGIC);
            let _ = IndexHead::decode_all(&plain(), "i", &b);
        }
    }

    #[test]
    fn random_sets_round_trip(n in 0usize..3000, packs in 1usize..9) {
        let all = entries(n, packs);
        let (_, got) = IndexHead::decode_all(&plain(), "i", &encode(&Codec::plain(), all.clone())).unwrap();
        let mut want = all;
        want.sort_by_key(|e| e.entry.id);
        prop_assert_eq!(got, want);
    }
}

fn sealed() -> Arc<Codec> {
    Arc::new(Codec::encrypted(
        crate::crypto::MasterKeys::generate(),
        crate::crypto::DataCipher::Aes256Gcm,
    ))
}

#[test]
fn a_sealed_index_hides_its_entries_and_each_block_opens_alone() {
    let codec = sealed();
    let all = entries(3000, 5);
    let obj = encode(&codec, all.clone());
    let name = index_name(&obj);
    let key = keys::index(&name);
    // The same entries give the same name (a rebuild writes nothing),
    // though the bytes differ (random nonces).
    let again = encode(&codec, all.clone());
    assert_eq!(index_name(&again), name);
    assert_ne!(again, obj);
    for e in &all {
        assert!(!obj.windows(32).any(|w| w == e.entry.id.as_bytes()));
        assert!(!obj.windows(32).any(|w| w == e.pack.as_bytes()));
    }
    assert_eq!(
        obj.len(),
        FIXED + 32 + 3000 * ENTRY_LEN + 3 * SEAL + 8 + 5 * 32 + SEAL,
        "overhead: the name, one seal per block and one for the table"
    );
    let (_, mut decoded) = IndexHead::decode_all(&codec, &key, &obj).unwrap();
    let mut want = all.clone();
    want.sort_by_key(|e| e.entry.id);
    decoded.sort_by_key(|e| e.entry.id);
    assert_eq!(decoded, want);
    // A ranged read of the head, then of single blocks.
    let size = obj.len() as u64;
    let len = IndexHead::head_len(&key, &obj[..64], size).unwrap() as usize;
    let head = IndexHead::decode(&codec, &key, &obj[..len], size).unwrap();
    assert_eq!((head.blocks(), head.pack_count()), (3, 5));
    assert_eq!(
        head.head_len,
        (FIXED + 32) as u64,
        "a head without the packs"
    );
    let reads = Cell::new(0);
    for e in all.iter().step_by(37) {
        assert_eq!(
            head.lookup(&e.entry.id, reader(&obj, &reads)).unwrap(),
            Some(*e)
        );
    }
    assert_eq!(
        head.lookup(&ObjectId::of(b"absent"), reader(&obj, &reads))
            .unwrap(),
        None
    );
}

#[test]
fn a_sealed_index_moved_edited_cut_or_mixed_is_damage_naming_it() {
    let codec = sealed();
    let all = entries(2500, 3);
    let obj = encode(&codec, all.clone());
    let key = keys::index(&index_name(&obj));
    let damaged = |c: &Arc<Codec>, bytes: &[u8], k: &str, what: &str| {
        let e = IndexHead::decode_all(c, k, bytes).unwrap_err();
        assert!(e.is_damage() && e.to_string().contains(k), "{what}: {e}");
    };
    damaged(&codec, &obj, &keys::index(&ObjectId::of(b"other")), "moved");
    let (head, _) = IndexHead::decode_all(&codec, &key, &obj).unwrap();
    let (r0, r1) = (head.block_range(0), head.block_range(1));
    let r = |r: &Range<u64>| r.start as usize..r.end as usize;
    let mut swapped = obj.to_vec();
    swapped[r(&r0)].copy_from_slice(&obj[r(&r1)]);
    swapped[r(&r1)].copy_from_slice(&obj[r(&r0)]);
    damaged(&codec, &swapped, &key, "blocks swapped");
    // A block of another object of the same shape.
    let shifted: Vec<IndexEntry> = all
        .iter()
        .map(|e| IndexEntry {
            entry: PackEntry {
                offset: e.entry.offset + 1,
                ..e.entry
            },
            ..*e
        })
        .collect();
    let other = encode(&codec, shifted);
    let mut mixed = obj.to_vec();
    mixed[r(&r1)].copy_from_slice(&other[r(&r1)]);
    damaged(&codec, &mixed, &key, "a foreign block");
    for i in (FIXED + 32..obj.len()).step_by(331) {
        let mut b = obj.to_vec();
        b[i] ^= 0x10;
        damaged(&codec, &b, &key, &format!("byte {i}"));
    }
    damaged(&codec, &obj[..obj.len() - 1], &key, "cut");
    // Another repository's keys; a plain codec; a plain object read by
    // an encrypted repository.
    damaged(&sealed(), &obj, &key, "other keys");
    damaged(&plain(), &obj, &key, "plain codec");
    let plain_obj = encode(&Codec::plain(), entries(10, 1));
    damaged(&codec, &plain_obj, "index/p", "not sealed");
}

/// In a shard object every id shares the prefix: a lookup still reads
/// about one block (interpolation on the digits after the prefix; before,
/// it walked from `a/16` of the way in, block by block).
#[test]
fn lookups_in_a_shard_object_read_about_one_block() {
    let all: Vec<IndexEntry> = entries(20_000, 37)
        .into_iter()
        .map(|mut e| {
            let mut id = *e.entry.id.as_bytes();
            id[0] = 0xa0 | (id[0] & 0x0f);
            e.entry.id = ObjectId::from_bytes(id);
            e
        })
        .collect();
    let obj = encode_in(&Codec::plain(), "a", all.clone());
    let key = keys::index_in("a", &index_name(&obj));
    let (head, _) = IndexHead::decode_all(&plain(), &key, &obj).unwrap();
    let reads = Cell::new(0);
    for e in &all {
        assert_eq!(
            head.lookup(&e.entry.id, reader(&obj, &reads)).unwrap(),
            Some(*e)
        );
    }
    let per = reads.get() as f64 / all.len() as f64;
    assert!(per < 1.2, "{per} block reads per lookup");
}
