//! Pack objects: many compressed chunks in one object, self-describing.
//!
//! ```text
//! pack    := blob* trailer
//! blob    := a chunk as the codec stores it (`Codec::encode_chunk`: the
//!            chunk's frame, zstd-compressed, sealed under its chunk id
//!            in an encrypted repository)
//! trailer := table trailer_len:u32                        unencrypted
//!          | seal(Pack, "packs/..name", table) trailer_len:u32  encrypted
//! table   := "XFP1" count:u32 entry*count blake3:32
//! entry   := chunk id:32 offset:u64 stored_len:u32 plain_len:u32   (48 bytes)
//! ```
//!
//! In an encrypted repository the table is sealed under the metadata key
//! (`Codec::seal_meta`, 46 bytes per pack), bound to the pack's object
//! key: nobody without the metadata key learns which chunks a pack holds
//! or their lengths, and a trailer edited, cut, or moved from another pack
//! does not open (damage naming the pack). The name must exist before the
//! seal that is bound to it, so an encrypted pack is named by a keyed
//! hash (the id key) of the BLAKE3 of its blobs and its plain table
//! ([`PackWriter::finish`]), not by the hash of its stored bytes (blobs
//! are sealed with random nonces, so no two packs are equal anyway).
//! `trailer_len` stays plain so that one suffix read still finds the
//! table.
//!
//! Integers are little-endian. The trailer lists every blob in pack order;
//! its length is the pack's last 4 bytes, so one suffix read (a ranged GET
//! of the last few KiB, or of exactly `trailer_len` bytes once known)
//! gives the whole table, and the index can always be rebuilt from packs
//! alone. The BLAKE3 covers the table from its magic to the last entry.
//! A blob is exactly what a chunk object of format 1 was (frame, then
//! sealed by chunk id), so a ranged read of one blob opens alone, a blob
//! opens only under its own chunk id (blobs cannot be swapped within or
//! between packs), and gc can move a blob to another pack verbatim,
//! without any data key. The pack's name is the BLAKE3 of all its bytes
//! ([`pack_name`]).
//!
//! Nothing here trusts the bytes: every count and length is checked
//! against the pack's real size before anything is allocated, the blobs
//! must tile the data region exactly, and a blob is only ever returned
//! after its plaintext hashed to its chunk id.

use bytes::Bytes;

use crate::codec::Codec;
use crate::crypto::SealKind;
use crate::crypto::seal::META_OVERHEAD;
use crate::error::{Error, Result};
use crate::frame;
use crate::id::ObjectId;
use crate::keys;

const MAGIC: &[u8; 4] = b"XFP1";
/// Bytes per trailer entry.
/// Most bytes of a pack read whole (gc's rewrite): packs are sealed at
/// [`super::PACK_TARGET`] (32 MiB) plus one chunk and their trailer; 8
/// times that leaves room for any chunk size a config allows. A larger
/// object under a pack's name is damage, refused before it is read.
pub const MAX_PACK: u64 = 256 << 20;

pub const ENTRY_LEN: usize = 32 + 8 + 4 + 4;
/// A trailer without entries: magic, count, checksum, length.
pub const TRAILER_MIN: usize = 4 + 4 + 32 + 4;
/// The smallest blob: a chunk frame's header (5 bytes) and one byte (a
/// chunk is never empty); a bound used only to cap counts, so it may be
/// smaller than any real blob.
const BLOB_MIN: u64 = 6;

/// Where one chunk lies in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackEntry {
    pub id: ObjectId,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
}

impl PackEntry {
    /// The blob's byte range in the pack.
    pub fn range(&self) -> std::ops::Range<u64> {
        // Decoders bound the offset; saturating all the same, so a range
        // never wraps (it reads as past the pack's end: damage).
        self.offset..self.offset.saturating_add(u64::from(self.stored_len))
    }
}

/// The name of a pack of an unencrypted repository: the BLAKE3 of its
/// bytes (so a pack is put create-only and two equal packs are one
/// object). An encrypted repository's packs are named by a keyed hash
/// before their trailer is sealed ([`PackWriter::finish`]).
pub fn pack_name(pack: &[u8]) -> ObjectId {
    ObjectId::from_bytes(*blake3::hash(pack).as_bytes())
}

/// Builds one pack, chunk by chunk, in the order they are added.
#[derive(Debug, Default)]
pub struct PackWriter {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new() -> Self {
        PackWriter::default()
    }

    /// Frames, compresses (at `level`, 0: stored) and seals `plain`
    /// (whose id the caller computed) and appends it. CPU-bound.
    pub fn push(&mut self, codec: &Codec, id: ObjectId, plain: &[u8], level: i32) -> Result<()> {
        let blob = codec.encode_chunk(&id, plain, level)?;
        self.push_stored(id, plain.len(), &blob)
    }

    /// Appends a blob as stored (from [`Codec::encode_chunk`], or moved
    /// verbatim from another pack) of a chunk of `plain_len` bytes.
    pub fn push_stored(&mut self, id: ObjectId, plain_len: usize, blob: &[u8]) -> Result<()> {
        let plain_len = u32::try_from(plain_len)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::Internal(format!("chunk of {plain_len} bytes")))?;
        let stored_len = u32::try_from(blob.len())
            .ok()
            .filter(|n| u64::from(*n) >= BLOB_MIN)
            .ok_or_else(|| Error::Internal(format!("blob of {} bytes", blob.len())))?;
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(blob);
        self.entries.push(PackEntry {
            id,
            offset,
            stored_len,
            plain_len,
        });
        Ok(())
    }

    /// Bytes of blobs so far (the pack is this plus its trailer).
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pack's name, bytes and entries. The codec is the
    /// repository's (the trailer is metadata).
    pub fn finish(mut self, codec: &Codec) -> (ObjectId, Bytes, Vec<PackEntry>) {
        let mut table = Vec::with_capacity(TRAILER_MIN + self.entries.len() * ENTRY_LEN);
        table.extend_from_slice(MAGIC);
        table.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            table.extend_from_slice(e.id.as_bytes());
            table.extend_from_slice(&e.offset.to_le_bytes());
            table.extend_from_slice(&e.stored_len.to_le_bytes());
            table.extend_from_slice(&e.plain_len.to_le_bytes());
        }
        let sum = blake3::hash(&table);
        table.extend_from_slice(sum.as_bytes());
        if !codec.is_encrypted() {
            self.data.extend_from_slice(&table);
            self.data
                .extend_from_slice(&((table.len() + 4) as u32).to_le_bytes());
            let name = pack_name(&self.data);
            return (name, Bytes::from(self.data), self.entries);
        }
        // The seal is bound to the name, so the name comes first: keyed
        // (nothing about the content shows), over everything the pack
        // holds.
        let mut named = blake3::hash(&self.data).as_bytes().to_vec();
        named.extend_from_slice(&table);
        let name = codec.node_id(&named);
        let sealed = codec.seal_meta(SealKind::Pack, &keys::pack(&name), table);
        self.data.extend_from_slice(&sealed);
        self.data
            .extend_from_slice(&((sealed.len() + 4) as u32).to_le_bytes());
        (name, Bytes::from(self.data), self.entries)
    }
}

/// The trailer length a pack of `pack_size` bytes declares in its last 4
/// bytes (`last4`), checked against what a trailer of such a pack can be.
pub fn trailer_len(key: &str, pack_size: u64, last4: [u8; 4]) -> Result<u64> {
    let n = u64::from(u32::from_le_bytes(last4));
    // A sealed table is longer by its seal.
    let most = (TRAILER_MIN + META_OVERHEAD) as u64 + max_entries(pack_size) * ENTRY_LEN as u64;
    if n < TRAILER_MIN as u64 || n > pack_size || n > most {
        return Err(Error::corrupt(
            key,
            format!("declares a trailer of {n} bytes in a pack of {pack_size}"),
        ));
    }
    Ok(n)
}

/// The most entries a pack of this size can hold (each blob takes at
/// least 2 bytes, each entry 48).
fn max_entries(pack_size: u64) -> u64 {
    pack_size.saturating_sub(TRAILER_MIN as u64) / (BLOB_MIN + ENTRY_LEN as u64)
}

/// Decodes and checks a pack's trailer. `suffix` is the pack's last
/// `suffix.len()` bytes (at least the trailer; the whole pack will do) and
/// `pack_size` its real size (from a listing or the read). Chunks are at
/// most `max_chunk` bytes.
pub fn decode_trailer(
    codec: &Codec,
    key: &str,
    suffix: &[u8],
    pack_size: u64,
    max_chunk: u32,
) -> Result<Vec<PackEntry>> {
    let bad = |why: String| Error::corrupt(key, why);
    if suffix.len() < 4 || suffix.len() as u64 > pack_size {
        return Err(bad(format!(
            "{} bytes read from the end of a pack of {pack_size}",
            suffix.len()
        )));
    }
    let mut last4 = [0u8; 4];
    last4.copy_from_slice(&suffix[suffix.len() - 4..]);
    let len = trailer_len(key, pack_size, last4)? as usize;
    if len > suffix.len() {
        return Err(bad(format!(
            "trailer of {len} bytes, {} read",
            suffix.len()
        )));
    }
    let stored = &suffix[suffix.len() - len..suffix.len() - 4];
    // Sealed in an encrypted repository (bound to this pack's key), plain
    // otherwise; each refuses the other kind as damage.
    let t = codec.open_meta(SealKind::Pack, key, stored)?;
    let t = &t[..];
    let tlen = t.len();
    if tlen + 4 < TRAILER_MIN || t[..4] != MAGIC[..] {
        return Err(bad("no pack trailer (bad magic)".into()));
    }
    let body = &t[..tlen - 32];
    if blake3::hash(body).as_bytes()[..] != t[tlen - 32..] {
        return Err(bad("pack trailer checksum mismatch".into()));
    }
    let count = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
    if (count as u64) > max_entries(pack_size) || TRAILER_MIN + count * ENTRY_LEN != tlen + 4 {
        return Err(bad(format!(
            "trailer of {len} bytes declares {count} entries"
        )));
    }
    let data_end = pack_size - len as u64;
    let mut entries = Vec::with_capacity(count);
    let mut next = 0u64;
    for raw in body[8..].chunks_exact(ENTRY_LEN) {
        let e = parse_entry(raw);
        if e.offset != next
            || u64::from(e.stored_len) < BLOB_MIN
            || e.plain_len == 0
            || e.plain_len > max_chunk
            || e.range().end > data_end
        {
            return Err(bad(format!(
                "pack entry {} does not fit: blob at {} of {} bytes ({} plain), blobs end at {data_end}",
                entries.len(),
                e.offset,
                e.stored_len,
                e.plain_len
            )));
        }
        next = e.range().end;
        entries.push(e);
    }
    if next != data_end {
        return Err(bad(format!(
            "blobs end at {next}, the trailer starts at {data_end}"
        )));
    }
    let mut ids: Vec<&ObjectId> = entries.iter().map(|e| &e.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("a chunk listed twice".into()));
    }
    Ok(entries)
}

fn parse_entry(raw: &[u8]) -> PackEntry {
    let mut id = [0u8; 32];
    id.copy_from_slice(&raw[..32]);
    let u32_at = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let mut off = [0u8; 8];
    off.copy_from_slice(&raw[32..40]);
    PackEntry {
        id: ObjectId::from_bytes(id),
        offset: u64::from_le_bytes(off),
        stored_len: u32_at(40),
        plain_len: u32_at(44),
    }
}

/// Opens one blob (exactly `entry.stored_len` bytes) into `out`
/// (replacing what it held with the `entry.plain_len` bytes of plaintext)
/// and checks it against its chunk id. CPU-bound.
pub fn open_blob(
    codec: &Codec,
    key: &str,
    entry: &PackEntry,
    blob: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let len = entry.plain_len as usize;
    opened(codec, key, entry, blob, |what, framed| {
        frame::decode_chunk_into(what, framed, len, out)?;
        Ok(out.as_slice())
    })
}

/// [`open_blob`] straight into `out`, which must be exactly
/// `entry.plain_len` bytes (a restore's slot for the chunk). On failure
/// `out` holds anything.
pub fn open_blob_into(
    codec: &Codec,
    key: &str,
    entry: &PackEntry,
    blob: &[u8],
    out: &mut [u8],
) -> Result<()> {
    if out.len() != entry.plain_len as usize {
        return Err(Error::Internal(format!(
            "{key}: a slot of {} bytes for chunk {} of {}",
            out.len(),
            entry.id.short(),
            entry.plain_len
        )));
    }
    opened(codec, key, entry, blob, |what, framed| {
        frame::decode_chunk_into_slice(what, framed, out)?;
        Ok(&*out)
    })
}

/// Opens `blob` (its seal, if any) and has `decode` decode its frame
/// into the plaintext it returns, which must hash to the chunk's id.
fn opened<'o>(
    codec: &Codec,
    key: &str,
    entry: &PackEntry,
    blob: &[u8],
    decode: impl FnOnce(&str, &[u8]) -> Result<&'o [u8]>,
) -> Result<()> {
    let what = format!("{key} (chunk {})", entry.id.short());
    let bad = |why: String| Error::corrupt(what.clone(), why);
    if blob.len() != entry.stored_len as usize {
        return Err(bad(format!(
            "blob of {} bytes, the pack says {}",
            blob.len(),
            entry.stored_len,
        )));
    }
    let plain = codec
        .with_chunk(&entry.id, blob, |framed| decode(&what, framed))
        .map_err(|e| match e {
            // Damage found opening the seal names the chunk only.
            Error::Corrupt { key, reason } if key != what => bad(reason),
            e => e,
        })?;
    if codec.chunk_id(plain) != entry.id {
        return Err(bad("content does not match its id".into()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
