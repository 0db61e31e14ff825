use super::{Part, push_damaged, split};
use crate::id::ObjectId;
use crate::node::Entry;
use crate::restore::DamagedRange;

fn entries(lens: &[u32]) -> Vec<Entry> {
    lens.iter()
        .enumerate()
        .map(|(i, &l)| Entry(l, (i % 3 != 2).then(|| ObjectId::of(&[i as u8]))))
        .collect()
}

/// Every part is tiled by its shares, each share lies inside its entry,
/// and the parts' shares of each entry add up to the entry.
fn check(parts: &[Part], es: &[Entry], start: u64, len: u64, unit: u64) {
    let mut at = start;
    let mut covered = vec![0u64; es.len()];
    let starts: Vec<u64> = es
        .iter()
        .scan(start, |s, e| {
            let here = *s;
            *s += e.len();
            Some(here)
        })
        .collect();
    for p in parts {
        assert_eq!(p.start, at);
        assert!(p.len <= unit && p.len > 0);
        assert_eq!(p.start % unit, start % unit, "parts are aligned");
        let mut pos = p.start;
        for sh in &p.shares {
            assert_eq!(sh.at, pos, "shares tile the part");
            let k = starts.iter().rposition(|&s| s <= sh.at).unwrap();
            assert_eq!(es[k], sh.entry);
            assert_eq!(sh.skip, sh.at - starts[k]);
            assert!(sh.skip + sh.len <= sh.entry.len());
            covered[k] += sh.len;
            pos += sh.len;
        }
        if !p.shares.is_empty() {
            assert_eq!(pos, p.start + p.len, "shares cover the part");
        }
        at += p.len;
    }
    assert_eq!(at, start + len);
    let lens: Vec<u64> = es.iter().map(Entry::len).collect();
    assert_eq!(covered, lens);
}

#[test]
fn a_segment_of_one_part_keeps_its_entries() {
    let es = entries(&[100, 200, 50]);
    let parts = split(&es, 1024, 350, 1024);
    assert_eq!(parts.len(), 1);
    let got: Vec<Entry> = parts[0].shares.iter().map(|s| s.entry).collect();
    assert_eq!(got, es);
    assert!(
        parts[0]
            .shares
            .iter()
            .all(|s| s.skip == 0 && s.len == s.entry.len())
    );
    check(&parts, &es, 1024, 350, 1024);
}

#[test]
fn parts_split_straddling_chunks_and_tile_the_segment() {
    // Chunk edges on, before and after part edges, and a chunk longer
    // than a part.
    let es = entries(&[64, 36, 100, 1, 199, 300, 99, 1]);
    let len: u64 = es.iter().map(Entry::len).sum();
    for unit in [1, 2, 64, 100, 128, 256, 1024] {
        let parts = split(&es, 4096, len, unit);
        assert_eq!(parts.len() as u64, len.div_ceil(unit), "unit {unit}");
        check(&parts, &es, 4096, len, unit);
    }
}

#[test]
fn a_segment_without_entries_is_parts_of_zeros() {
    let parts = split(&[], 0, 300, 128);
    assert_eq!(
        parts.iter().map(|p| p.len).collect::<Vec<_>>(),
        [128, 128, 44]
    );
    assert!(parts.iter().all(|p| p.shares.is_empty()));
}

fn range(offset: u64, length: u64, object: &str) -> DamagedRange {
    DamagedRange {
        offset,
        length,
        object: object.into(),
        reason: "bad".into(),
    }
}

/// A chunk straddling two parts of a segment is one range; the same
/// object met again elsewhere (next to itself inside a part, or across a
/// segment boundary), or another object, stays a range of its own.
#[test]
fn damaged_ranges_join_only_across_a_part_boundary_inside_a_segment() {
    let (seg, part) = (64u64 << 20, 16u64 << 20);
    let mut v = Vec::new();
    push_damaged(&mut v, range(part - 100, 100, "chunk a"), seg);
    push_damaged(&mut v, range(part, 50, "chunk a"), seg);
    assert_eq!(v, [range(part - 100, 150, "chunk a")]);
    push_damaged(&mut v, range(part + 50, 150, "chunk a"), seg);
    push_damaged(&mut v, range(2 * part, 10, "chunk b"), seg);
    push_damaged(&mut v, range(seg - 10, 10, "node n"), seg);
    push_damaged(&mut v, range(seg, 10, "node n"), seg);
    assert_eq!(v.len(), 5, "{v:?}");
    // Segments of one part: nothing is joined, as before parts.
    let mut w = Vec::new();
    push_damaged(&mut w, range(part - 100, 100, "chunk a"), part);
    push_damaged(&mut w, range(part, 50, "chunk a"), part);
    assert_eq!(w.len(), 2);
}
