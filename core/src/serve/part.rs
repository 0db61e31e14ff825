//! A served part as the cache holds it.

use bytes::Bytes;

use crate::nbd::ReadPiece;
use crate::node::Entry;
use crate::restore::{DamagedRange, PartData};

/// One part of a served disk: its bytes (or zeros), its zero runs and
/// its damaged ranges, as disk offsets (a damaged node's range is its
/// whole segment, beyond the part).
#[derive(Debug)]
pub(crate) struct CachedPart {
    pub start: u64,
    pub len: u64,
    pub data: Option<Bytes>,
    pub entries: Vec<Entry>,
    pub damaged: Vec<DamagedRange>,
}

impl CachedPart {
    pub fn new(start: u64, len: u64, d: PartData) -> CachedPart {
        CachedPart {
            start,
            len,
            data: d.data.map(Bytes::from),
            entries: d.entries,
            damaged: d.damaged,
        }
    }

    /// What it costs the cache.
    pub fn weight(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.len() as u64)
            + 40 * (self.entries.len() + self.damaged.len()) as u64
            + 128
    }

    /// The first damaged range overlapping `offset..end`, if any.
    pub fn damage_in(&self, offset: u64, end: u64) -> Option<&DamagedRange> {
        self.damaged
            .iter()
            .find(|r| r.offset < end && offset < r.offset + r.length)
    }

    /// Bytes `offset..end` (inside the part) as pieces: zero runs (of
    /// the node, or a whole zero part) as [`ReadPiece::Zeroes`], so the
    /// server sends them as hole chunks.
    pub fn pieces(&self, offset: u64, end: u64, out: &mut Vec<ReadPiece>) {
        let Some(data) = &self.data else {
            push_zeroes(out, end - offset);
            return;
        };
        // Adjacent chunks lie side by side in the part's buffer: one
        // piece for each run of them, so that whether a reply shares the
        // buffer or copies is decided on what it holds of the part, not
        // chunk by chunk (where every piece is small and all were copied).
        let mut run: Option<std::ops::Range<usize>> = None;
        let mut at = self.start;
        for e in &self.entries {
            let (from, to) = (at.max(offset), (at + e.len()).min(end));
            at += e.len();
            if from >= to {
                continue;
            }
            let (a, b) = ((from - self.start) as usize, (to - self.start) as usize);
            if e.chunk().is_none() {
                if let Some(r) = run.take() {
                    out.push(ReadPiece::Data(share_or_copy(data, r)));
                }
                push_zeroes(out, to - from);
            } else {
                run = match run {
                    Some(r) if r.end == a => Some(r.start..b),
                    Some(r) => {
                        out.push(ReadPiece::Data(share_or_copy(data, r)));
                        Some(a..b)
                    }
                    None => Some(a..b),
                };
            }
            if at >= end {
                break;
            }
        }
        if let Some(r) = run {
            out.push(ReadPiece::Data(share_or_copy(data, r)));
        }
    }
}

/// `data[range]` for a reply: a slice sharing the part's buffer when it
/// is at least a quarter of it, else a copy. A reply waiting for a client
/// that does not read keeps what it holds alive after the cache let the
/// part go, and the server bounds a client's replies by their payload
/// bytes: shared, a 4 KiB reply kept a 16 MiB part (16 stalled replies,
/// 256 MiB per client; found in review). So a reply holds at most four
/// times its payload.
fn share_or_copy(data: &Bytes, range: std::ops::Range<usize>) -> Bytes {
    if range.len() >= data.len() / 4 {
        data.slice(range)
    } else {
        Bytes::copy_from_slice(&data[range])
    }
}

fn push_zeroes(out: &mut Vec<ReadPiece>, n: u64) {
    // Reads are at most the maximum payload (32 MiB), far below u32.
    if let Some(ReadPiece::Zeroes(z)) = out.last_mut() {
        *z += n as u32;
    } else {
        out.push(ReadPiece::Zeroes(n as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(len: usize) -> CachedPart {
        CachedPart {
            start: 0,
            len: len as u64,
            data: Some(Bytes::from(vec![7u8; len])),
            entries: vec![Entry(len as u32, Some(crate::id::ObjectId::of(b"c")))],
            damaged: Vec::new(),
        }
    }

    /// Whether `piece` lies in `part`'s buffer.
    fn shares(part: &CachedPart, piece: &ReadPiece) -> bool {
        let (ReadPiece::Data(b), Some(d)) = (piece, &part.data) else {
            return false;
        };
        let whole = d.as_ptr() as usize..d.as_ptr() as usize + d.len();
        whole.contains(&(b.as_ptr() as usize))
    }

    #[test]
    fn small_pieces_are_copied_so_a_reply_never_keeps_a_whole_part() {
        let p = part(16 << 20);
        let mut out = Vec::new();
        p.pieces(4096, 8192, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!shares(&p, &out[0]), "a 4 KiB piece kept the 16 MiB part");
        assert_eq!(out[0].len(), 4096);
        out.clear();
        p.pieces(0, 8 << 20, &mut out);
        assert!(shares(&p, &out[0]), "half the part: shared, not copied");
    }

    /// A read over many adjacent chunks is one piece of the part, so a
    /// large read shares the buffer even though each chunk is small; a
    /// zero run between chunks splits it.
    #[test]
    fn adjacent_chunks_are_one_piece() {
        let mut p = part(16 << 20);
        let chunk = Entry(64 << 10, Some(crate::id::ObjectId::of(b"c")));
        p.entries = vec![chunk; 256];
        p.entries[128] = Entry(64 << 10, None);
        let mut out = Vec::new();
        p.pieces(0, 16 << 20, &mut out);
        assert_eq!(out.len(), 3, "chunks, the zero run, chunks");
        assert!(shares(&p, &out[0]) && shares(&p, &out[2]));
        assert_eq!(out.iter().map(ReadPiece::len).sum::<u64>(), 16 << 20);
        assert!(matches!(out[1], ReadPiece::Zeroes(n) if n == 64 << 10));
    }
}
