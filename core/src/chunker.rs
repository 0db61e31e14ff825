//! Content-defined chunking of one segment (FastCDC v2020).
//!
//! Cut points depend only on the bytes since the previous cut, and every
//! segment is chunked from its own start: so the chunks of a segment depend
//! only on that segment's bytes. That is what lets a backup reuse whole
//! segments, and re-chunk only around a change.

use std::ops::Range;

use fastcdc::v2020::FastCDC;
use serde::{Deserialize, Serialize};

/// FastCDC size limits (bytes), repository constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    /// See `docs/chunk-size.md` for the measurements behind this choice.
    fn default() -> Self {
        ChunkParams::from_avg(64 << 10)
    }
}

impl ChunkParams {
    /// The usual shape: min = avg/4, max = avg*4.
    pub fn from_avg(avg: u32) -> Self {
        ChunkParams {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let in_range = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max);
        let even = min % 2 == 0 && avg % 2 == 0 && max % 2 == 0;
        if !(in_range && even && min <= avg && avg <= max) {
            return Err(format!(
                "chunk sizes min {min} / avg {avg} / max {max} are not usable: need even \
                 sizes with min <= avg <= max, min {MINIMUM_MIN}..{MINIMUM_MAX}, \
                 avg {AVERAGE_MIN}..{AVERAGE_MAX}, max {MAXIMUM_MIN}..{MAXIMUM_MAX}"
            ));
        }
        Ok(())
    }
}

/// Calls `f(offset, length)` for each chunk of `data`, in order. The chunks
/// cover `data` exactly; an empty input has no chunk.
///
/// Zeros take a short cut. FastCDC decides a cut from the bytes between
/// `min` and `max` after the chunk's start only (the first `min` bytes are
/// not hashed), so wherever those bytes are all zero and more than `max`
/// bytes remain, the cut lands where it lands in zeros: the same offset
/// every time, found once per thread. A sparse disk is mostly such runs
/// (holes are zeros in memory), and checking for zeros runs at memory
/// speed while hashing them ran at about 1.5 GB/s: 11 ms per 16 MiB
/// segment. The chunks are exactly FastCDC's (property-tested below).
pub fn for_each_chunk(params: &ChunkParams, data: &[u8], f: impl FnMut(usize, usize)) {
    for_each_chunk_in(params, data, &Known::AllData, f)
}

/// What is known of where `data` may be non-zero.
#[derive(Clone, Copy, Debug)]
pub enum Known<'a> {
    /// Nothing: any byte may be non-zero.
    AllData,
    /// Only these ranges may hold non-zero bytes (sorted, disjoint): the
    /// rest is a hole of the source, zero without looking.
    Data(&'a [Range<usize>]),
}

impl Known<'_> {
    /// True when `r` is known to be all zeros without reading it.
    pub fn hole(&self, r: Range<usize>) -> bool {
        match self {
            Known::AllData => false,
            Known::Data(d) => {
                let i = d.partition_point(|x| x.end <= r.start);
                d.get(i).is_none_or(|x| x.start >= r.end)
            }
        }
    }

    /// True when `data[r]` is all zeros: known, or checked.
    pub fn zero(&self, data: &[u8], r: Range<usize>) -> bool {
        self.hole(r.clone()) || is_zero(&data[r])
    }
}

/// [`for_each_chunk`] over data whose holes are known: a zero window in a
/// hole is not even compared (a sparse disk's holes cost nothing).
pub fn for_each_chunk_in(
    params: &ChunkParams,
    data: &[u8],
    known: &Known<'_>,
    f: impl FnMut(usize, usize),
) {
    chunk_prefix(params, data, known, true, f);
}

/// [`for_each_chunk_in`] over a prefix of the segment that `data` starts
/// (at a cut) when `last` is false: chunks only as far as their cuts are
/// decided, i.e. while more than a maximum chunk remains (FastCDC looks
/// no further than that from a chunk's start, and only a shorter
/// remainder changes its decision), and returns where it stopped, the
/// start of the next chunk. Chunking the rest of the segment from there
/// gives exactly the chunks of the whole segment: so a segment can be
/// read in windows. With `last` it chunks all of `data`.
pub fn chunk_prefix(
    params: &ChunkParams,
    data: &[u8],
    known: &Known<'_>,
    last: bool,
    mut f: impl FnMut(usize, usize),
) -> usize {
    if data.is_empty() {
        return 0;
    }
    let (min, max) = (params.min as usize, params.max as usize);
    let cdc = FastCDC::new(data, min, params.avg as usize, max);
    let zero_cut = zero_cut(params);
    let mut at = 0;
    while at < data.len() {
        let remaining = data.len() - at;
        if !last && remaining <= max {
            break;
        }
        let end = if remaining > max && known.zero(data, at + min..at + max) {
            at + zero_cut
        } else {
            cdc.cut(at, remaining).1
        };
        f(at, end - at);
        at = end;
    }
    at
}

/// The length of the chunk FastCDC cuts at the start of `data`, which
/// starts at a cut and holds the rest of the segment or at least a
/// maximum chunk of it (FastCDC decides no further than that, so this is
/// the cut it makes over the whole segment). Bytes `min..max` all zero
/// take [`chunk_prefix`]'s short cut: re-chunking around a change in a
/// sparse disk walks through zero runs a maximum chunk at a time, and
/// hashing them was 19-23% of an incremental backup's CPU on a 2% series
/// (`perf`: 114 MB cut for 11 MB changed).
pub fn first_cut(params: &ChunkParams, data: &[u8]) -> usize {
    let (min, max) = (params.min as usize, params.max as usize);
    // With at least `max` bytes FastCDC scans exactly `min..max` (a longer
    // input is clamped to `max`), as for the zeros `zero_cut` measured.
    if data.len() >= max && is_zero(&data[min..max]) {
        return zero_cut(params);
    }
    FastCDC::new(data, min, params.avg as usize, max)
        .cut(0, data.len())
        .1
}

/// Where FastCDC cuts a chunk whose bytes from `min` to `max` are zeros
/// (at least `max` bytes remaining: a longer input is clamped to `max`),
/// per thread and parameters.
fn zero_cut(params: &ChunkParams) -> usize {
    thread_local! {
        static CUTS: std::cell::RefCell<Vec<(ChunkParams, usize)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    CUTS.with(|c| {
        if let Some((_, cut)) = c.borrow().iter().find(|(p, _)| p == params) {
            return *cut;
        }
        let zeros = vec![0u8; params.max as usize + 2];
        let cdc = FastCDC::new(
            &zeros,
            params.min as usize,
            params.avg as usize,
            params.max as usize,
        );
        let cut = cdc.cut(0, zeros.len()).1;
        c.borrow_mut().push((*params, cut));
        cut
    })
}

/// The largest chunk any repository can hold (FastCDC's largest maximum):
/// a decoder of stored lengths refuses more before anything is allocated
/// for it.
pub const LARGEST_CHUNK: u32 = fastcdc::v2020::MAXIMUM_MAX as u32;

/// True when every byte is zero (such chunks are stored as zero runs).
pub fn is_zero(data: &[u8]) -> bool {
    // Compared against a block of zeros: slice equality of bytes is a
    // `memcmp`, vectorised by the C library whatever this crate's
    // optimisation level (a loop over 16-byte words ran at about 2 GB/s in
    // the dev profile, and a sparse disk is mostly zeros to check).
    const BLOCK: usize = 64 << 10;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    data.chunks(BLOCK).all(|c| c == &ZEROS[..c.len()])
}

/// A segment for tests, from pieces `(kind, len, seed)`: kind 0 a hole,
/// 1 zeros the source calls data, 2 a constant byte, 3 random bytes
/// (xorshift from `seed`); and the ranges the source calls data
/// (joined where adjacent).
#[cfg(test)]
pub(crate) fn test_segment(pieces: &[(u8, usize, u64)]) -> (Vec<u8>, Vec<Range<usize>>) {
    let (mut data, mut ranges) = (Vec::new(), Vec::<Range<usize>>::new());
    for &(kind, len, seed) in pieces {
        if kind != 0 {
            match ranges.last_mut() {
                Some(r) if r.end == data.len() => r.end += len,
                _ => ranges.push(data.len()..data.len() + len),
            }
        }
        match kind {
            0 | 1 => data.resize(data.len() + len, 0),
            2 => data.resize(data.len() + len, 0x5a),
            _ => data.extend(crate::testing::xorshift_bytes(len, seed)),
        }
    }
    (data, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain FastCDC, as `for_each_chunk` was before the zero short cut.
    fn plain(params: &ChunkParams, data: &[u8]) -> Vec<(usize, usize)> {
        FastCDC::new(
            data,
            params.min as usize,
            params.avg as usize,
            params.max as usize,
        )
        .map(|c| (c.offset, c.length))
        .collect()
    }

    fn ours(params: &ChunkParams, data: &[u8]) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for_each_chunk(params, data, |o, l| v.push((o, l)));
        v
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Zero runs of every length, at every place, between random and
        /// constant bytes: the short cut gives FastCDC's chunks exactly.
        #[test]
        fn zeros_chunk_as_fastcdc_does(
            pieces in proptest::collection::vec((0u8..4, 1usize..300_000, proptest::prelude::any::<u64>()), 1..12),
            avg_shift in 12u32..17,
        ) {
            let params = ChunkParams::from_avg(1 << avg_shift);
            let (data, ranges) = test_segment(&pieces);
            proptest::prop_assert_eq!(ours(&params, &data), plain(&params, &data));
            // The same with the zero pieces of kind 0 known as holes (kind
            // 1 is zeros the source calls data).
            let mut known = Vec::new();
            for_each_chunk_in(&params, &data, &Known::Data(&ranges), |o, l| known.push((o, l)));
            proptest::prop_assert_eq!(known, plain(&params, &data));
        }

        /// Chunked in windows (each chunked as far as its cuts are
        /// decided, the rest carried into the next), a segment gives the
        /// chunks of the whole, with holes known or not.
        #[test]
        fn windows_chunk_as_the_whole_does(
            pieces in proptest::collection::vec((0u8..4, 1usize..200_000, proptest::prelude::any::<u64>()), 1..10),
            windows in proptest::collection::vec(1usize..300_000, 1..40),
            avg_shift in 12u32..16,
            holes in proptest::prelude::any::<bool>(),
        ) {
            let params = ChunkParams::from_avg(1 << avg_shift);
            let (data, ranges) = test_segment(&pieces);
            let mut got = Vec::new();
            let (mut base, mut fill, mut w) = (0, 0, 0);
            while base < data.len() {
                // A window holds more than a maximum chunk, or the end.
                fill = (fill.max(base) + windows[w % windows.len()] + params.max as usize)
                    .min(data.len());
                w += 1;
                let last = fill == data.len();
                let rel: Vec<Range<usize>> = ranges
                    .iter()
                    .filter(|r| r.end > base && r.start < fill)
                    .map(|r| r.start.max(base) - base..r.end.min(fill) - base)
                    .collect();
                let known = if holes { Known::Data(&rel) } else { Known::AllData };
                let used = chunk_prefix(&params, &data[base..fill], &known, last, |o, l| {
                    got.push((base + o, l))
                });
                proptest::prop_assert!(used > 0 || last);
                base += used;
                if last {
                    break;
                }
            }
            proptest::prop_assert_eq!(got, plain(&params, &data));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// `first_cut` is FastCDC's first chunk, zero runs or not, for
        /// inputs shorter than, as long as and longer than a maximum chunk.
        #[test]
        fn the_first_cut_is_fastcdcs_first_chunk(
            pieces in proptest::collection::vec((1u8..4, 1usize..300_000, proptest::prelude::any::<u64>()), 1..6),
            avg_shift in 12u32..17,
            cut_to in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let params = ChunkParams::from_avg(1 << avg_shift);
            let (data, _) = test_segment(&pieces);
            let max = params.max as usize;
            // Often exactly a maximum chunk, as the re-chunker reads.
            let len = match cut_to.index(3) {
                0 => data.len().min(max),
                _ => cut_to.index(data.len() + 1),
            };
            let data = &data[..len];
            let want = plain(&params, data).first().map_or(0, |c| c.1);
            proptest::prop_assert_eq!(first_cut(&params, data), want);
        }
    }

    #[test]
    fn the_first_cut_of_zeros_takes_the_short_cut() {
        let params = ChunkParams::default();
        let max = params.max as usize;
        for len in [0, 10, params.min as usize, max - 1, max, max + 1, 3 * max] {
            let zeros = vec![0u8; len];
            let want = plain(&params, &zeros).first().map_or(0, |c| c.1);
            assert_eq!(first_cut(&params, &zeros), want, "{len}");
        }
        // Data just past the zeros the short cut looks at changes nothing.
        let mut v = vec![0u8; max + 100];
        v[max + 1] = 1;
        assert_eq!(first_cut(&params, &v), plain(&params, &v)[0].1);
    }

    #[test]
    fn a_zero_run_between_data_chunks_as_fastcdc_does() {
        let params = ChunkParams::from_avg(128 << 10);
        let mut data = vec![0u8; 16 << 20];
        for i in 0..16 {
            data[i << 20 | 4096..i << 20 | 12288].fill(i as u8 + 1);
        }
        data[(16 << 20) - 1] = 7;
        assert_eq!(ours(&params, &data), plain(&params, &data));
        assert_eq!(ours(&params, &[0; 10]), plain(&params, &[0; 10]));
    }

    #[test]
    fn holes_are_known_by_their_data_ranges() {
        let d = [10..20, 30..40];
        let k = Known::Data(&d);
        assert!(k.hole(0..10) && k.hole(20..30) && k.hole(40..100) && k.hole(25..25));
        assert!(!k.hole(0..11) && !k.hole(19..30) && !k.hole(5..50) && !k.hole(39..41));
        assert!(!Known::AllData.hole(0..1));
        assert!(Known::AllData.zero(&[0; 4], 0..4));
        assert!(!Known::AllData.zero(&[0, 1], 0..2));
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
        for i in [0, 7, 16, 999] {
            let mut v = vec![0u8; 1000];
            v[i] = 1;
            assert!(!is_zero(&v), "{i}");
        }
    }

    #[test]
    fn params_validation() {
        ChunkParams::default().validate().unwrap();
        ChunkParams::from_avg(1 << 20).validate().unwrap();
        assert!(
            ChunkParams {
                min: 10,
                avg: 20,
                max: 30
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkParams {
                min: 8192,
                avg: 4096,
                max: 65536
            }
            .validate()
            .is_err()
        );
    }
}
