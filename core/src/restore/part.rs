//! Restoring a segment in parts of at most 16 MiB: fetch its node once,
//! then for each part the chunks it overlaps, decompressed and verified
//! into the part's buffer, and the part hashed.
//!
//! Why parts: a restore keeps several units in flight, each read
//! (compressed) and decompressed whole, so its memory was a few segments:
//! 430 MiB at 16 MiB segments, over 800 MiB at 64 MiB
//! (`bench/results/segment-size.md`). Parts of a power-of-two size,
//! aligned in the image, keep that bound whatever the segment size, and
//! each part is a complete BLAKE3 subtree, hashed on its own thread like
//! a segment was (`image_hash`). A chunk that straddles two parts is
//! fetched by both (about one chunk per 16 MiB). A segment of 16 MiB or
//! less is one part: restored exactly as before. Failures are named as
//! `segment.rs` says.

use std::sync::Arc;

use super::DamagedRange;
use super::segment::{Fetched, Object, Opened, Piece, RestoredPart, SegmentCtx};
use crate::error::{Error, Result};
use crate::image_hash::{self, SegmentHash};
use crate::node::Entry;
use crate::placement::fetch::FetchError;
use crate::placement::fetch_into::Ask;
use crate::task::blocking;

/// The largest part (a power of two).
pub(crate) const PART: u64 = 16 << 20;

/// The part size of disks cut into `segment_size` segments (both powers
/// of two, so parts tile segments and the image).
pub(super) fn part_size(segment_size: u64) -> u64 {
    segment_size.min(PART)
}

/// Adds `r` to `ranges` (in disk order), joined to the last one when it
/// continues it for the same object across a part boundary inside a
/// segment of `segment_size` bytes: a damaged chunk that straddles two
/// parts is one range, as it was when segments were restored whole.
pub(super) fn push_damaged(ranges: &mut Vec<DamagedRange>, r: DamagedRange, segment_size: u64) {
    let inside =
        r.offset.is_multiple_of(part_size(segment_size)) && !r.offset.is_multiple_of(segment_size);
    match ranges.last_mut() {
        Some(last)
            if inside
                && last.offset + last.length == r.offset
                && last.object == r.object
                && last.reason == r.reason =>
        {
            last.length += r.length;
        }
        _ => ranges.push(r),
    }
}

/// A segment's node as restore uses it.
#[derive(Debug)]
pub(super) struct SegmentNode {
    /// Its entries: empty for a segment stored as zeros, or a damaged
    /// node with `ignore_damage`.
    pub entries: Vec<Entry>,
    /// The damage met reading it (with `ignore_damage`).
    pub damaged: Vec<DamagedRange>,
}

/// One chunk's share of a part.
#[derive(Clone, Copy, Debug)]
struct Share {
    entry: Entry,
    /// Where in the image the share starts.
    at: u64,
    /// Where in the chunk.
    skip: u64,
    len: u64,
}

/// A part of a segment, ready to restore.
#[derive(Debug)]
pub(super) struct Part {
    start: u64,
    len: u64,
    shares: Vec<Share>,
    /// Damage met before the part's chunks (its segment's node).
    damaged: Vec<DamagedRange>,
}

/// Cuts the entries of a segment at `start`, `len` bytes, into parts of
/// `unit` bytes (the last may be shorter).
fn split(entries: &[Entry], start: u64, len: u64, unit: u64) -> Vec<Part> {
    let end = start + len;
    let mut parts = Vec::new();
    // The first entry the next part can overlap, and where it starts.
    let (mut j, mut s) = (0usize, start);
    let mut a = start;
    while a < end {
        let b = (a + unit).min(end);
        let mut shares = Vec::new();
        while j < entries.len() && s < b {
            let e = entries[j];
            let e_end = s + e.len();
            let from = s.max(a);
            shares.push(Share {
                entry: e,
                at: from,
                skip: from - s,
                len: e_end.min(b) - from,
            });
            if e_end > b {
                break; // it goes on in the next part
            }
            j += 1;
            s = e_end;
        }
        parts.push(Part {
            start: a,
            len: b - a,
            shares,
            damaged: Vec::new(),
        });
        a = b;
    }
    parts
}

impl SegmentCtx {
    /// Segment `i`'s node: its entries (empty for zeros, or a damaged node
    /// with `ignore_damage`) and the damage met reading it.
    pub(super) async fn node_of(&self, i: usize) -> Result<SegmentNode> {
        let range = self.d.segment_range(i);
        let len = range.end - range.start;
        let mut damaged = Vec::new();
        let entries = match self.d.segments[i] {
            None => Vec::new(),
            Some(id) => match self.entries(id, len).await {
                Ok(entries) => entries,
                Err(e) => {
                    // No node, no chunk boundaries: the whole segment.
                    damaged.push(self.tolerate(range.start, len, Object::Node(id), e)?);
                    Vec::new()
                }
            },
        };
        Ok(SegmentNode { entries, damaged })
    }

    /// Segment `i`'s parts, its node fetched once.
    pub(super) async fn parts(self: Arc<Self>, i: usize) -> Result<Vec<Part>> {
        let node = self.node_of(i).await?;
        let mut parts = self.split_segment(i, &node.entries);
        if let Some(first) = parts.first_mut() {
            first.damaged = node.damaged;
        }
        Ok(parts)
    }

    /// Part `j` of segment `i`, whose node is `node`. The node's damage
    /// goes with every part: a reader of any of them must learn of it.
    pub(super) fn part_of(&self, i: usize, node: &SegmentNode, j: usize) -> Option<Part> {
        let mut part = self.split_segment(i, &node.entries).into_iter().nth(j)?;
        part.damaged = node.damaged.clone();
        Some(part)
    }

    fn split_segment(&self, i: usize, entries: &[Entry]) -> Vec<Part> {
        let range = self.d.segment_range(i);
        let unit = part_size(self.d.segment_size);
        split(entries, range.start, range.end - range.start, unit)
    }

    /// Restores one part: one batched lookup and coalesced pack reads for
    /// its chunks, each opened and checked against its id straight into
    /// its place in the part's buffer (a chunk only partly in the part,
    /// into one of its own), then the part hashed.
    pub(super) async fn restore_part(self: Arc<Self>, part: Part) -> Result<RestoredPart> {
        if part.shares.iter().all(|s| s.entry.chunk().is_none()) {
            return blocking("restore task", move || self.zeros_part(part)).await;
        }
        let asks = part
            .shares
            .iter()
            .filter_map(|sh| {
                let id = sh.entry.chunk()?;
                let whole = sh.skip == 0 && sh.len == sh.entry.len();
                let off = (sh.at - part.start) as usize;
                let slot = whole.then(|| off..off + sh.len as usize);
                Some(Ask { id, slot })
            })
            .collect();
        let buf = self.buffers.take(part.len as usize);
        let (buf, opened) = match self.fetch_into(asks, buf).await {
            Ok(o) => o,
            Err(FetchError {
                chunk: Some(id),
                error,
            }) => {
                // Where the chunk the store failed on lies in the image.
                let at = part.shares.iter().find(|s| s.entry.chunk() == Some(id));
                let at = at.map_or(part.start, |s| s.at);
                return Err(self.fail(at, Object::Chunk(id), error));
            }
            Err(FetchError { chunk: None, error }) => return Err(error),
        };
        let mut opened = opened.into_iter();
        let mut raw = Vec::with_capacity(part.shares.len());
        for sh in &part.shares {
            let e = sh.entry;
            let item = match e.chunk() {
                None => Fetched::Zeros,
                Some(id) => match opened.next() {
                    Some(Ok(Opened::Placed)) => Fetched::Placed,
                    Some(Ok(Opened::Own(plain))) if plain.len() as u64 == e.len() => {
                        Fetched::Plain(plain)
                    }
                    Some(Ok(Opened::Own(plain))) => Fetched::Damaged(self.tolerate(
                        sh.at,
                        sh.len,
                        Object::Chunk(id),
                        Error::corrupt(
                            crate::keys::chunk(&id),
                            format!("holds {} bytes, its node says {}", plain.len(), e.len()),
                        ),
                    )?),
                    Some(Err(err)) => {
                        Fetched::Damaged(self.tolerate(sh.at, sh.len, Object::Chunk(id), err)?)
                    }
                    None => return Err(Error::Internal("a fetch answered too few chunks".into())),
                },
            };
            raw.push(item);
        }
        blocking("restore task", move || self.assemble(part, buf, raw)).await?
    }

    /// The image hash of the part at `start` holding `data`, if asked for.
    fn part_hash(&self, start: u64, data: &[u8]) -> Option<SegmentHash> {
        let (unit, total) = (part_size(self.d.segment_size), self.d.size);
        self.image_hash
            .then(|| image_hash::hash_segment(start, data, unit, total))
    }

    /// A part with no chunk: zeros, hashed.
    fn zeros_part(&self, part: Part) -> RestoredPart {
        RestoredPart {
            hash: self.part_hash(part.start, &self.zeros[..part.len as usize]),
            piece: Piece::Zeros {
                start: part.start,
                len: part.len,
            },
            damaged: part.damaged,
        }
    }

    /// The part's buffer (`buf`, its chunks with a slot already in place)
    /// completed: the other chunks copied in, zeros where there is no
    /// data; the part hashed.
    fn assemble(&self, part: Part, mut buf: Vec<u8>, raw: Vec<Fetched>) -> Result<RestoredPart> {
        let Part {
            start,
            shares,
            mut damaged,
            ..
        } = part;
        for (sh, fetched) in shares.iter().zip(raw) {
            let off = (sh.at - start) as usize;
            let piece = &mut buf[off..off + sh.len as usize];
            match fetched {
                Fetched::Placed => {}
                Fetched::Plain(plain) => {
                    let skip = sh.skip as usize;
                    piece.copy_from_slice(&plain[skip..skip + sh.len as usize]);
                }
                Fetched::Damaged(r) => {
                    piece.fill(0);
                    damaged.push(r);
                }
                Fetched::Zeros => piece.fill(0),
            }
        }
        damaged.sort_by_key(|r| r.offset);
        let entries = shares
            .iter()
            .map(|s| Entry(s.len as u32, s.entry.1))
            .collect();
        Ok(RestoredPart {
            hash: self.part_hash(start, &buf),
            piece: Piece::Data {
                start,
                buf,
                entries,
            },
            damaged,
        })
    }
}

#[cfg(test)]
#[path = "part_tests.rs"]
mod tests;
