use std::ops::Range;

use proptest::prelude::*;

use super::{WindowBuf, scan};
use crate::backup::segment::chunk_segment_in;
use crate::chunker::{ChunkParams, Known, test_segment};
use crate::codec::Codec;
use crate::node::Entry;

/// Scans `data` in windows of `step` with `wb`, reading only `ranges`:
/// the entries with their segment offsets, bytes read, bytes covered.
fn windowed(
    wb: &mut WindowBuf,
    params: &ChunkParams,
    step: usize,
    data: &[u8],
    ranges: &[Range<usize>],
) -> (Vec<(usize, Entry)>, u64, u64) {
    let (mut out, mut read, mut covered) = (Vec::new(), 0, 0);
    let mut at = 0;
    scan(
        wb,
        params,
        &Codec::plain(),
        step,
        data.len(),
        ranges,
        |off, buf, rs| {
            let mut n = 0;
            for r in rs {
                assert!(r.start >= off && r.end <= off + buf.len(), "{r:?} outside");
                buf[r.start - off..r.end - off].copy_from_slice(&data[r.clone()]);
                n += (r.end - r.start) as u64;
            }
            Ok(n)
        },
        |p| {
            for (e, o) in p.chunks.entries.iter().zip(&p.chunks.offsets) {
                assert_eq!(
                    e.1.is_some(),
                    p.data[*o..*o + e.len() as usize].iter().any(|b| *b != 0)
                );
                out.push((at + o, *e));
            }
            at += p.covered as usize;
            read += p.read;
            covered += p.covered;
            Ok(())
        },
    )
    .unwrap();
    (out, read, covered)
}

fn whole(params: &ChunkParams, data: &[u8], ranges: &[Range<usize>]) -> Vec<(usize, Entry)> {
    let c = chunk_segment_in(params, &Codec::plain(), data, &Known::Data(ranges));
    c.offsets.into_iter().zip(c.entries).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Several segments through one buffer (so holes meet bytes an
    /// earlier window left there): each gives the chunks of the whole
    /// segment, reads exactly its data ranges and covers it once.
    #[test]
    fn windows_give_the_chunks_of_the_whole_segment(
        segments in prop::collection::vec(
            prop::collection::vec((0u8..4, 1usize..150_000, any::<u64>()), 1..8), 1..4),
        extra in 0usize..100_000,
        avg_shift in 12u32..15,
    ) {
        let params = ChunkParams::from_avg(1 << avg_shift);
        let step = 2 * params.max as usize + extra;
        let mut wb = WindowBuf::default();
        for pieces in &segments {
            let (data, ranges) = test_segment(pieces);
            let (got, read, covered) = windowed(&mut wb, &params, step, &data, &ranges);
            prop_assert_eq!(got, whole(&params, &data, &ranges));
            prop_assert_eq!(read, ranges.iter().map(|r| (r.end - r.start) as u64).sum::<u64>());
            prop_assert_eq!(covered, data.len() as u64);
        }
    }
}

#[test]
fn a_segment_of_one_window_is_read_once_whole() {
    let params = ChunkParams::from_avg(4096);
    let (data, ranges) = test_segment(&[(3, 200_000, 7)]);
    let mut reads = 0;
    scan(
        &mut WindowBuf::default(),
        &params,
        &Codec::plain(),
        super::window(&params),
        data.len(),
        &ranges,
        |off, buf, rs| {
            reads += 1;
            assert_eq!((off, buf.len(), rs), (0, data.len(), &ranges[..]));
            buf.copy_from_slice(&data);
            Ok(buf.len() as u64)
        },
        |p| {
            assert_eq!(p.covered, data.len() as u64);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(reads, 1);
}

#[test]
fn a_failed_read_stops_the_scan() {
    let params = ChunkParams::from_avg(4096);
    let (data, ranges) = test_segment(&[(3, 300_000, 9)]);
    let mut windows = 0;
    let err = scan(
        &mut WindowBuf::default(),
        &params,
        &Codec::plain(),
        2 * params.max as usize,
        data.len(),
        &ranges,
        |off, buf, _| {
            if off > 0 {
                return Err(crate::error::Error::Internal("read failed".into()));
            }
            buf.copy_from_slice(&data[..buf.len()]);
            Ok(buf.len() as u64)
        },
        |_| {
            windows += 1;
            Ok(())
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("read failed"), "{err}");
    assert_eq!(windows, 1);
}
