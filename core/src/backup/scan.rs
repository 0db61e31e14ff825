//! Reading and chunking one segment in windows.
//!
//! A full scan used to read a whole segment into one buffer, so the
//! backup's memory grew with the segment size: (cores + 6) segments, 512
//! MiB at 64 MiB segments on 2 cores. Larger segments mean fewer node
//! objects (one per touched segment, most of an incremental backup's
//! PUTs), so memory must not be what caps them. A segment is read here
//! [`WINDOW`] bytes at a time into a buffer the worker keeps: each window
//! is chunked as far as its cuts are decided (`chunker::chunk_prefix`),
//! the undecided tail (less than a maximum chunk) is carried to the
//! front, and the next window is read behind it. The chunks are exactly
//! those of the whole segment (property-tested in the chunker and below).
//! A segment of one window is read and chunked as before.

use std::ops::Range;

use crate::chunker::{ChunkParams, Known};
use crate::codec::Codec;
use crate::error::Result;
use crate::source::DiskSource;

use super::segment::{ChunkedSegment, chunk_prefix_in};

/// Bytes of a segment read at once (more when the maximum chunk is over
/// half of it, so that every window decides at least one cut).
pub(super) const WINDOW: usize = 16 << 20;

/// The window for these chunk sizes.
pub(super) fn window(params: &ChunkParams) -> usize {
    WINDOW.max(2 * params.max as usize)
}

/// A worker's window buffer. Bytes outside `dirty` are zero, so that a
/// hole of the source costs no memory traffic: only what an earlier
/// window put there is cleared, and nothing when a window is read whole.
#[derive(Debug, Default)]
pub(super) struct WindowBuf {
    buf: Vec<u8>,
    dirty: Vec<Range<usize>>,
}

/// One window's chunks, in segment order.
pub(super) struct Piece<'a> {
    /// The window's bytes; `chunks.offsets` index into them.
    pub data: &'a [u8],
    pub chunks: ChunkedSegment,
    /// Bytes read from the source for this window.
    pub read: u64,
    /// Bytes of the segment its chunks cover.
    pub covered: u64,
}

impl WindowBuf {
    /// Makes `region` zero except where `reads` (sorted, inside it) will
    /// be read, and records what may be non-zero afterwards.
    fn prepare(&mut self, region: Range<usize>, reads: &[Range<usize>]) {
        if self.buf.len() < region.end {
            self.buf.resize(region.end, 0);
        }
        let whole = reads.len() == 1 && reads[0] == region;
        let mut kept = Vec::with_capacity(self.dirty.len() + reads.len());
        for d in &self.dirty {
            let inside = d.start.max(region.start)..d.end.min(region.end);
            if !whole && inside.start < inside.end {
                self.buf[inside].fill(0);
            }
            for part in [
                d.start..d.end.min(region.start),
                d.start.max(region.end)..d.end,
            ] {
                if part.start < part.end {
                    kept.push(part);
                }
            }
        }
        kept.extend(reads.iter().cloned());
        self.dirty = kept;
    }

    /// Moves `from..to` to the front (a window's undecided tail).
    fn carry(&mut self, from: usize, to: usize) {
        self.buf.copy_within(from..to, 0);
        self.dirty.push(0..to - from);
        self.dirty.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(self.dirty.len());
        for r in self.dirty.drain(..) {
            match merged.last_mut() {
                Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.dirty = merged;
    }
}

/// `ranges` (sorted, disjoint) clipped to `span`, shifted by `-base`.
fn clip(ranges: &[Range<usize>], span: Range<usize>, base: usize) -> Vec<Range<usize>> {
    ranges
        .iter()
        .filter(|r| r.end > span.start && r.start < span.end)
        .map(|r| r.start.max(span.start) - base..r.end.min(span.end) - base)
        .collect()
}

/// Reads a segment of `len` bytes whose data lies only in `data`
/// (segment-relative, sorted, disjoint: the rest is a hole, zero unread)
/// window by window, `step` bytes at a time ([`window`]), and calls
/// `each` with every window's chunks in order. `read(offset, buf,
/// ranges)` fills the parts `ranges` (segment offsets, inside `offset..
/// offset + buf.len()`) of `buf`, which starts at segment offset
/// `offset`, and returns the bytes it read.
#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    wb: &mut WindowBuf,
    params: &ChunkParams,
    codec: &Codec,
    step: usize,
    len: usize,
    data: &[Range<usize>],
    mut read: impl FnMut(usize, &mut [u8], &[Range<usize>]) -> Result<u64>,
    mut each: impl FnMut(Piece<'_>) -> Result<()>,
) -> Result<()> {
    // The segment offset of the buffer's first byte, and how many bytes
    // from there the buffer holds already (a carried tail).
    let (mut base, mut carry) = (0usize, 0usize);
    loop {
        let from = base + carry;
        let to = (from + step).min(len);
        let end = to - base;
        let segment_reads = clip(data, from..to, 0);
        let reads: Vec<Range<usize>> = segment_reads
            .iter()
            .map(|r| r.start - base..r.end - base)
            .collect();
        wb.prepare(carry..end, &reads);
        let got = read(from, &mut wb.buf[carry..end], &segment_reads)?;
        let last = to == len;
        let known = clip(data, base..to, base);
        let window = &wb.buf[..end];
        let (chunks, used) = chunk_prefix_in(params, codec, window, &Known::Data(&known), last);
        each(Piece {
            data: window,
            chunks,
            read: got,
            covered: used as u64,
        })?;
        if last {
            return Ok(());
        }
        wb.carry(used, end);
        carry = end - used;
        base += used;
    }
}

/// [`scan`] of the segment of `source` at `start`, `len` bytes, in
/// windows of [`window`]; `data`: where it holds data (segment-relative),
/// asked of the source if not given.
#[allow(clippy::too_many_arguments)]
pub(super) fn scan_source(
    wb: &mut WindowBuf,
    source: &DiskSource,
    params: &ChunkParams,
    codec: &Codec,
    start: u64,
    len: usize,
    data: Option<Vec<Range<usize>>>,
    each: impl FnMut(Piece<'_>) -> Result<()>,
) -> Result<()> {
    let data = match data {
        Some(d) => d,
        None => relative(&source.data_ranges(start..start + len as u64)?, start),
    };
    let read = |off: usize, buf: &mut [u8], ranges: &[Range<usize>]| {
        let abs: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| start + r.start as u64..start + r.end as u64)
            .collect();
        source.read_ranges_at(start + off as u64, buf, &abs)
    };
    scan(wb, params, codec, window(params), len, &data, read, each)
}

/// `ranges` of the disk, relative to a segment starting at `start`, with
/// adjacent ones joined (an NBD server may report a run in pieces).
pub(super) fn relative(ranges: &[Range<u64>], start: u64) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let r = (r.start - start) as usize..(r.end - start) as usize;
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
