//! The BLAKE3 of a whole disk image, computed one segment at a time in
//! parallel.
//!
//! BLAKE3 is a tree hash: a segment whose offset and size are powers of two
//! (in 1 KiB chunks) is a complete subtree, whose chaining value can be
//! computed on its own and merged later. So restore hashes each segment on
//! the thread that decompressed it and merges the values at the end; the
//! result equals `b3sum` of the image.

use blake3::hazmat::{self, ChainingValue, HasherExt, Mode};

/// What one segment contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentHash {
    /// The subtree chaining value of a segment of a multi-segment image.
    Subtree(ChainingValue),
    /// The final hash of an image that is a single segment.
    Whole(blake3::Hash),
}

/// Hashes segment bytes `data` found at `offset` of an image of `total`
/// bytes cut into `segment_size` segments (a power of two).
pub fn hash_segment(offset: u64, data: &[u8], segment_size: u64, total: u64) -> SegmentHash {
    if total <= segment_size {
        return SegmentHash::Whole(blake3::hash(data));
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    SegmentHash::Subtree(h.finalize_non_root())
}

/// Merges the per-segment hashes, in order, into the image's BLAKE3.
pub fn combine(segments: &[SegmentHash], segment_size: u64, total: u64) -> blake3::Hash {
    match segments {
        [] => blake3::hash(&[]),
        [SegmentHash::Whole(h)] => *h,
        _ => {
            let cvs: Vec<ChainingValue> = segments
                .iter()
                .map(|s| match s {
                    SegmentHash::Subtree(cv) => *cv,
                    // Only a one-segment image has a Whole hash.
                    SegmentHash::Whole(h) => *h.as_bytes(),
                })
                .collect();
            let (l, r) = split(&cvs, 0, total, segment_size);
            blake3::Hash::from_bytes(hazmat::merge_subtrees_root(&l, &r, Mode::Hash).into())
        }
    }
}

/// The two children of the subtree covering bytes `start..start + len`.
fn split(cvs: &[ChainingValue], start: u64, len: u64, seg: u64) -> (ChainingValue, ChainingValue) {
    // With power-of-two segments, every split point of a subtree longer
    // than one segment falls on a segment boundary.
    let left = hazmat::left_subtree_len(len);
    (
        subtree(cvs, start, left, seg),
        subtree(cvs, start + left, len - left, seg),
    )
}

fn subtree(cvs: &[ChainingValue], start: u64, len: u64, seg: u64) -> ChainingValue {
    if len <= seg {
        return cvs[(start / seg) as usize];
    }
    let (l, r) = split(cvs, start, len, seg);
    hazmat::merge_subtrees_non_root(&l, &r, Mode::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_segments(data: &[u8], seg: u64) -> blake3::Hash {
        let total = data.len() as u64;
        let hashes: Vec<_> = data
            .chunks(seg as usize)
            .enumerate()
            .map(|(i, d)| hash_segment(i as u64 * seg, d, seg, total))
            .collect();
        combine(&hashes, seg, total)
    }

    #[test]
    fn empty_and_single_segment() {
        assert_eq!(by_segments(&[], 4096), blake3::hash(&[]));
        assert_eq!(by_segments(b"abc", 4096), blake3::hash(b"abc"));
        let exact = vec![9u8; 4096];
        assert_eq!(by_segments(&exact, 4096), blake3::hash(&exact));
    }

    proptest! {
        #[test]
        fn equals_plain_blake3(len in 0usize..200_000, seg_pow in 10u32..15, seed: u8) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            prop_assert_eq!(by_segments(&data, 1 << seg_pow), blake3::hash(&data));
        }
    }
}
