//! Turning one segment's bytes into node entries.

use bytes::Bytes;

use crate::chunker::{ChunkParams, Known, chunk_prefix};
use crate::codec::Codec;
use crate::error::Result;
use crate::id::ObjectId;
use crate::node::{Entry, Node};

/// The entries of a segment, with where each one lies in the segment.
#[derive(Debug, Default)]
pub struct ChunkedSegment {
    pub entries: Vec<Entry>,
    pub offsets: Vec<usize>,
}

/// Chunks and hashes a segment; all-zero chunks become zero entries.
pub fn chunk_segment(params: &ChunkParams, codec: &Codec, data: &[u8]) -> ChunkedSegment {
    chunk_segment_in(params, codec, data, &Known::AllData)
}

/// [`chunk_segment`] of a segment whose holes are known (`known`): zeros
/// there are neither scanned for the cut nor checked chunk by chunk.
pub fn chunk_segment_in(
    params: &ChunkParams,
    codec: &Codec,
    data: &[u8],
    known: &Known<'_>,
) -> ChunkedSegment {
    chunk_prefix_in(params, codec, data, known, true).0
}

/// [`chunk_segment_in`] of a window that starts at a cut of its segment:
/// only as far as the cuts are decided unless `last` (see
/// [`chunk_prefix`]); also returns where the next chunk starts.
pub fn chunk_prefix_in(
    params: &ChunkParams,
    codec: &Codec,
    data: &[u8],
    known: &Known<'_>,
    last: bool,
) -> (ChunkedSegment, usize) {
    let mut out = ChunkedSegment::default();
    let used = chunk_prefix(params, data, known, last, |off, len| {
        let piece = &data[off..off + len];
        let id = (!known.zero(data, off..off + len)).then(|| codec.chunk_id(piece));
        // Chunks are at most 16 MiB (FastCDC's limit), so the length fits.
        out.entries.push(Entry(len as u32, id));
        out.offsets.push(off);
    });
    (out, used)
}

/// A segment ready to be stored: its node and the chunks asked for.
#[derive(Debug)]
pub struct SealedSegment {
    pub node_id: ObjectId,
    pub node: Vec<u8>,
    /// (id, plain length, stored bytes) of the chunks `want` picked.
    pub chunks: Vec<(ObjectId, usize, Bytes)>,
}

/// Chunks a segment and encodes (frames, compresses, seals) the chunks
/// `want` picks, as a backup would have stored them. CPU-bound.
pub fn seal_segment(
    params: &ChunkParams,
    codec: &Codec,
    zstd_level: i32,
    data: &[u8],
    want: impl Fn(&ObjectId) -> bool,
) -> Result<SealedSegment> {
    let seg = chunk_segment(params, codec, data);
    let mut chunks = Vec::new();
    for (e, off) in seg.entries.iter().zip(&seg.offsets) {
        if let Some(id) = e.1.filter(&want) {
            let piece = &data[*off..*off + e.len() as usize];
            chunks.push((id, piece.len(), codec.encode_chunk(&id, piece, zstd_level)?));
        }
    }
    let (node_id, node) = Node {
        entries: seg.entries,
    }
    .to_plain(codec)?;
    Ok(SealedSegment {
        node_id,
        node,
        chunks,
    })
}
