//! The touched-segment audit's claim (`audit::verify_kept`): when it
//! passes, the re-chunked entries are exactly a whole-segment chunking of
//! the current bytes, whatever writes the change source missed (near
//! parent cuts, where they decide cuts, or anywhere), zero runs and
//! resizes included. Written by a review of the check; 200,000 cases
//! there found no counterexample.

use std::ops::Range;

use proptest::prelude::*;

use super::audit::verify_kept;
use super::incremental::tests::{image_with, params};
use super::incremental::{Rechunked, rechunk};
use super::segment::chunk_segment;
use crate::codec::Codec;
use crate::node::Entry;
use crate::source::DiskSource;

/// The re-chunking tests' image, with longer zero runs (whole chunks).
fn image(seed: u64, len: usize) -> Vec<u8> {
    image_with(seed, len, 12_000)
}

fn rechunk_of(parent: &[Entry], new: &[u8], changes: Vec<Range<u64>>) -> Rechunked {
    let set = crate::changes::ExtentSet::from_ranges(changes);
    rechunk(
        &params(),
        &Codec::plain(),
        parent,
        new.len() as u64,
        set.ranges(),
        |off, buf| {
            buf.copy_from_slice(&new[off as usize..off as usize + buf.len()]);
            Ok(buf.len() as u64)
        },
    )
    .unwrap()
}

fn audit(new: &[u8], r: &Rechunked) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk");
    std::fs::write(&p, new).unwrap();
    let src = DiskSource::open(&p).unwrap();
    match verify_kept(&src, &Codec::plain(), &params(), 0, &r.entries, &r.kept) {
        Ok(_) => true,
        Err(crate::error::Error::AuditMismatch { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

fn bounds(entries: &[Entry]) -> Vec<u64> {
    let mut b = vec![0u64];
    for e in entries {
        b.push(b.last().unwrap() + e.len());
    }
    b
}

/// A position for an unreported write: near a parent boundary (the
/// bytes that decide cuts) or anywhere.
fn pos(b: &[u64], pick: u64, delta: i64, len: usize) -> usize {
    let p = if pick.is_multiple_of(3) {
        pick as usize / 3
    } else {
        b[(pick as usize / 3) % b.len()] as i64 as usize
    };
    ((p as i64 + delta).max(0) as usize).min(len.saturating_sub(1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A parent chunked canonically, reported and unreported writes: if
    /// verify_kept passes, the entries are the whole segment's chunks.
    #[test]
    fn verify_kept_passing_means_canonical(
        seed in any::<u64>(),
        old_len in 1usize..40_000,
        resize in prop_oneof![Just(0i64), -3000i64..3000],
        reported in proptest::collection::vec((0u64..40_000, 1u64..600, any::<u8>()), 0..4),
        lies in proptest::collection::vec((any::<u64>(), -3i64..4, any::<u8>(), any::<bool>()), 1..4),
    ) {
        let p = params();
        let old = image(seed, old_len);
        let parent = chunk_segment(&p, &Codec::plain(), &old).entries;
        let b = bounds(&parent);
        let new_len = (old_len as i64 + resize).max(1) as usize;
        let mut new = old.clone();
        new.resize(new_len, 0);
        let mut changes = Vec::new();
        for &(off, len, v) in &reported {
            let s = (off as usize) % new_len;
            let e = (s + len as usize).min(new_len);
            for (i, x) in new[s..e].iter_mut().enumerate() {
                *x = v.wrapping_add(i as u8).wrapping_mul(3);
            }
            changes.push(s as u64..e as u64);
        }
        for &(pick, delta, v, zero) in &lies {
            let i = pos(&b, pick % (3 * new_len as u64 + 3 * b.len() as u64), delta, new_len);
            new[i] = if zero { 0 } else { v };
        }
        let r = rechunk_of(&parent, &new, changes);
        prop_assert_eq!(r.entries.len(), r.kept.len());
        let ok = audit(&new, &r);
        if ok {
            let full = chunk_segment(&p, &Codec::plain(), &new).entries;
            prop_assert_eq!(&r.entries, &full);
        }
    }
}
