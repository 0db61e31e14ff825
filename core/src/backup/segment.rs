//! Turning one segment's bytes into node entries.

use crate::chunker::{ChunkParams, for_each_chunk, is_zero};
use crate::id::ObjectId;
use crate::node::Entry;

/// The entries of a segment, with where each one lies in the segment.
#[derive(Debug, Default)]
pub struct ChunkedSegment {
    pub entries: Vec<Entry>,
    pub offsets: Vec<usize>,
}

impl ChunkedSegment {
    /// True when the segment holds no data at all.
    pub fn is_all_zero(&self) -> bool {
        self.entries.iter().all(|e| e.1.is_none())
    }
}

/// Chunks and hashes a segment; all-zero chunks become zero entries.
pub fn chunk_segment(params: &ChunkParams, data: &[u8]) -> ChunkedSegment {
    let mut out = ChunkedSegment::default();
    for_each_chunk(params, data, |off, len| {
        let piece = &data[off..off + len];
        let id = (!is_zero(piece)).then(|| ObjectId::of(piece));
        // Chunks are at most 16 MiB (FastCDC's limit), so the length fits.
        out.entries.push(Entry(len as u32, id));
        out.offsets.push(off);
    });
    out
}
