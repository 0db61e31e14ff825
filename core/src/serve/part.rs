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
        let mut at = self.start;
        for e in &self.entries {
            let (from, to) = (at.max(offset), (at + e.len()).min(end));
            at += e.len();
            if from >= to {
                continue;
            }
            if e.chunk().is_none() {
                push_zeroes(out, to - from);
            } else {
                let (a, b) = ((from - self.start) as usize, (to - self.start) as usize);
                out.push(ReadPiece::Data(data.slice(a..b)));
            }
            if at >= end {
                break;
            }
        }
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
