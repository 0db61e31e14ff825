//! Object framing: every stored object starts with a header naming its
//! kind and format version, so readers refuse what they do not know
//! instead of misreading it.
//!
//! ```text
//! magic    4 bytes   "XF" + kind letter + version digit, e.g. "XFC1"
//! codec    1 byte    0 = stored, 1 = zstd
//! checksum 32 bytes  BLAKE3 of the plaintext; only for kinds whose key is
//!                    not their hash (config, manifest)
//! payload  ...       the plaintext, encoded by the codec
//! ```
//!
//! Chunks and nodes carry no checksum: their key is the BLAKE3 of their
//! plaintext, which readers check instead.

use std::cell::RefCell;
use std::io::Read;

use crate::error::{Error, Result};

/// The kinds of stored objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Chunk,
    Node,
    Manifest,
    /// A backup session's lease.
    Lease,
    /// A sweep's start or done marker.
    Marker,
    /// A record of a damaged object (`damage/...`).
    Damage,
}

impl Kind {
    const fn magic(self) -> [u8; 4] {
        match self {
            Kind::Config => *b"XFR1",
            Kind::Chunk => *b"XFC1",
            Kind::Node => *b"XFN1",
            Kind::Manifest => *b"XFM1",
            Kind::Lease => *b"XFL1",
            Kind::Marker => *b"XFG1",
            Kind::Damage => *b"XFD1",
        }
    }

    const fn checksummed(self) -> bool {
        matches!(
            self,
            Kind::Config | Kind::Manifest | Kind::Lease | Kind::Marker | Kind::Damage
        )
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Config => "repository config",
            Kind::Chunk => "chunk",
            Kind::Node => "node",
            Kind::Manifest => "manifest",
            Kind::Lease => "lease",
            Kind::Marker => "gc marker",
            Kind::Damage => "damage record",
        }
    }

    fn header_len(self) -> usize {
        5 + if self.checksummed() { 32 } else { 0 }
    }
}

pub(crate) const CODEC_STORED: u8 = 0;
pub(crate) const CODEC_ZSTD: u8 = 1;

/// Frames `plain` as an object of `kind`, compressed at `level` (0 stores
/// it uncompressed).
pub fn encode(kind: Kind, plain: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(kind.header_len() + plain.len() / 2 + 64);
    out.extend_from_slice(&kind.magic());
    if level == 0 {
        out.push(CODEC_STORED);
    } else {
        out.push(CODEC_ZSTD);
    }
    if kind.checksummed() {
        out.extend_from_slice(blake3::hash(plain).as_bytes());
    }
    if level == 0 {
        out.extend_from_slice(plain);
    } else {
        compress_into(plain, level, &mut out)?;
    }
    Ok(out)
}

/// The most bytes an object of at most `plain` bytes of plaintext is
/// stored as: zstd's bound for incompressible input (under n/256 + 64
/// bytes more), the frame's header and, if sealed, the seal's, with room
/// to spare. Readers fetch metadata with this as the most they take
/// ([`crate::backend::Backend::get_at_most`]).
pub fn max_stored(plain: usize) -> u64 {
    let plain = plain as u64;
    plain.saturating_add(plain / 128).saturating_add(4 << 10)
}

/// Reads the frame of an object stored under `key`; returns the plaintext,
/// at most `limit` bytes (a bound against decompression bombs).
pub fn decode(kind: Kind, key: &str, framed: &[u8], limit: usize) -> Result<Vec<u8>> {
    let (codec, checksum, payload) = split(kind, key, framed)?;
    let plain = match codec {
        CODEC_STORED => {
            if payload.len() > limit {
                return Err(Error::corrupt(key, format!("larger than {limit} bytes")));
            }
            payload.to_vec()
        }
        CODEC_ZSTD => {
            // Frames written by xfull record their size: decompress in one
            // call with this thread's reused context (creating one per
            // object is costly), after checking the size against the limit.
            if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(payload) {
                if n > limit as u64 {
                    return Err(Error::corrupt(
                        key,
                        format!("decompresses to more than {limit} bytes"),
                    ));
                }
                let mut out = Vec::with_capacity(n as usize);
                let got = decode_zstd_into(key, payload, &mut out)?;
                if got != out.len() {
                    return Err(Error::corrupt(
                        key,
                        format!("holds {got} bytes, its header says {n}"),
                    ));
                }
                return check_sum(key, checksum, out);
            }
            let mut out = Vec::new();
            let decoder = zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| Error::corrupt(key, format!("zstd: {e}")))?;
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::corrupt(key, format!("zstd: {e}")))?;
            if out.len() > limit {
                return Err(Error::corrupt(
                    key,
                    format!("decompresses to more than {limit} bytes"),
                ));
            }
            out
        }
        other => return Err(unknown_codec(kind, other)),
    };
    check_sum(key, checksum, plain)
}

fn check_sum(key: &str, checksum: Option<&[u8]>, plain: Vec<u8>) -> Result<Vec<u8>> {
    if let Some(sum) = checksum
        && blake3::hash(&plain).as_bytes() != sum
    {
        return Err(Error::corrupt(key, "checksum mismatch"));
    }
    Ok(plain)
}

/// Decompresses a zstd frame into `out` (a slice, or a `Vec`'s spare
/// capacity) with this thread's reused context; returns the bytes it
/// holds.
pub(crate) fn decode_zstd_into<C>(key: &str, payload: &[u8], out: &mut C) -> Result<usize>
where
    C: zstd::zstd_safe::WriteBuf + ?Sized,
{
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let zerr = |e: std::io::Error| Error::corrupt(key, format!("zstd: {e}"));
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(zerr)?);
        }
        let Some(d) = slot.as_mut() else {
            return Err(Error::Internal("zstd decompressor missing".into()));
        };
        // The frame may hold more than `out`: decompress_to_buffer then
        // fails instead of writing past the slice (or the capacity).
        d.decompress_to_buffer(payload, out).map_err(zerr)
    })
}

/// Streams the plaintext of an object stored under `key` to `read`
/// without holding it whole (a manifest's may be hundreds of MB). At most
/// `limit` bytes are decompressed. Once `read` returns, the rest of the
/// plaintext is read too and the checksum checked over all of it: a
/// checksum mismatch or a decompression failure is reported instead of
/// `read`'s own result, as [`decode`] reports it before any parsing.
pub fn decode_stream<T>(
    kind: Kind,
    key: &str,
    framed: &[u8],
    limit: usize,
    read: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let (codec, checksum, payload) = split(kind, key, framed)?;
    let source: Box<dyn Read + '_> = match codec {
        CODEC_STORED if payload.len() > limit => {
            return Err(Error::corrupt(key, format!("larger than {limit} bytes")));
        }
        CODEC_STORED => Box::new(payload),
        CODEC_ZSTD => Box::new(
            zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| Error::corrupt(key, format!("zstd: {e}")))?,
        ),
        other => return Err(unknown_codec(kind, other)),
    };
    let mut plain = Checked {
        source,
        key,
        limit: limit as u64,
        read: 0,
        hasher: blake3::Hasher::new(),
        fault: None,
    };
    // Parsers read a few bytes at a time: buffer above the decompressor.
    let result = read(&mut std::io::BufReader::with_capacity(64 << 10, &mut plain));
    let drained = std::io::copy(&mut plain, &mut std::io::sink());
    if let Some(fault) = plain.fault.take() {
        return Err(fault);
    }
    drained.map_err(|e| Error::corrupt(key, format!("reading: {e}")))?;
    if let Some(sum) = checksum
        && plain.hasher.finalize().as_bytes() != sum
    {
        return Err(Error::corrupt(key, "checksum mismatch"));
    }
    result
}

/// A plaintext stream that hashes what passes and stops past its limit;
/// the first failure is kept to be reported as what it is.
struct Checked<'a> {
    source: Box<dyn Read + 'a>,
    key: &'a str,
    limit: u64,
    read: u64,
    hasher: blake3::Hasher,
    fault: Option<Error>,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fault.is_some() {
            return Err(std::io::Error::other("the object is damaged"));
        }
        let n = match self.source.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.fault = Some(Error::corrupt(self.key, format!("zstd: {e}")));
                return Err(e);
            }
        };
        self.read += n as u64;
        if self.read > self.limit {
            self.fault = Some(Error::corrupt(
                self.key,
                format!("decompresses to more than {} bytes", self.limit),
            ));
            return Err(std::io::Error::other("decompresses past its limit"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

thread_local! {
    // zstd contexts are costly to set up (tables of about a megabyte):
    // each thread keeps one of each instead of making one per chunk.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

pub(crate) fn compress_into(plain: &[u8], level: i32, out: &mut Vec<u8>) -> Result<()> {
    let fail = |e: std::io::Error| Error::Internal(format!("zstd compression failed: {e}"));
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).map_err(fail)?));
        }
        let Some((_, c)) = slot.as_mut() else {
            return Err(Error::Internal("zstd compressor missing".into()));
        };
        let start = out.len();
        out.resize(start + zstd::zstd_safe::compress_bound(plain.len()), 0);
        let n = c
            .compress_to_buffer(plain, &mut out[start..])
            .map_err(fail)?;
        out.truncate(start + n);
        Ok(())
    })
}

/// Decodes a chunk whose plaintext length `len` is known (from its node
/// or its index entry) into `out`, replacing what it held. Does not check
/// the id: see [`crate::placement`].
///
/// zstd writes into the buffer's spare capacity, so it is not zeroed
/// first: a restore opens every chunk it writes, and zeroing each before
/// decompressing over it was 5% of a restore's CPU (`perf`, 2026-12-05).
/// `len` comes from a decoded node or index entry, both bounded by the
/// largest chunk. A frame holding more than the capacity fails to
/// decompress rather than grow the buffer.
pub fn decode_chunk_into(key: &str, framed: &[u8], len: usize, out: &mut Vec<u8>) -> Result<()> {
    let (codec, _, payload) = split(Kind::Chunk, key, framed)?;
    let wrong = |n: usize| Error::corrupt(key, format!("holds {n} bytes, its node says {len}"));
    out.clear();
    match codec {
        CODEC_STORED if payload.len() == len => {
            out.extend_from_slice(payload);
            Ok(())
        }
        CODEC_STORED => Err(wrong(payload.len())),
        CODEC_ZSTD => {
            out.reserve_exact(len);
            match decode_zstd_into(key, payload, out)? {
                n if n == len => Ok(()),
                n => Err(wrong(n)),
            }
        }
        other => Err(unknown_codec(Kind::Chunk, other)),
    }
}

/// Decodes a chunk straight into `out`, exactly its plaintext's length
/// (a restore's slot for it in the part it writes). Does not check the
/// id. On failure `out` holds anything.
pub fn decode_chunk_into_slice(key: &str, framed: &[u8], out: &mut [u8]) -> Result<()> {
    let (codec, _, payload) = split(Kind::Chunk, key, framed)?;
    let len = out.len();
    let wrong = |n: usize| Error::corrupt(key, format!("holds {n} bytes, its node says {len}"));
    match codec {
        CODEC_STORED if payload.len() == len => {
            out.copy_from_slice(payload);
            Ok(())
        }
        CODEC_STORED => Err(wrong(payload.len())),
        CODEC_ZSTD => match decode_zstd_into(key, payload, out)? {
            n if n == len => Ok(()),
            n => Err(wrong(n)),
        },
        other => Err(unknown_codec(Kind::Chunk, other)),
    }
}

/// [`decode_chunk_into`] into a new buffer.
pub fn decode_chunk(key: &str, framed: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_chunk_into(key, framed, len, &mut out)?;
    Ok(out)
}

fn unknown_codec(kind: Kind, codec: u8) -> Error {
    Error::UnsupportedFormat {
        what: format!("a {} object", kind.name()),
        found: format!("codec {codec}"),
        supported: "codecs 0 and 1".into(),
    }
}

type Split<'a> = (u8, Option<&'a [u8]>, &'a [u8]);

fn split<'a>(kind: Kind, key: &str, framed: &'a [u8]) -> Result<Split<'a>> {
    if framed.len() < kind.header_len() {
        return Err(Error::corrupt(key, "shorter than its header"));
    }
    let magic = &framed[..4];
    let want = kind.magic();
    if magic[..3] != want[..3] {
        return Err(Error::corrupt(
            key,
            format!("not a {} object (magic {:?})", kind.name(), magic),
        ));
    }
    if magic[3] != want[3] {
        return Err(Error::UnsupportedFormat {
            what: format!("{} object {key}", kind.name()),
            found: format!("version {}", magic[3] as char),
            supported: format!("version {}", want[3] as char),
        });
    }
    let codec = framed[4];
    let (checksum, payload) = if kind.checksummed() {
        (Some(&framed[5..37]), &framed[37..])
    } else {
        (None, &framed[5..])
    };
    Ok((codec, checksum, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_codec() {
        let data = b"some plaintext that compresses, compresses, compresses".repeat(10);
        for kind in [
            Kind::Config,
            Kind::Chunk,
            Kind::Node,
            Kind::Manifest,
            Kind::Lease,
            Kind::Marker,
            Kind::Damage,
        ] {
            for level in [0, 3] {
                let framed = encode(kind, &data, level).unwrap();
                assert_eq!(decode(kind, "k", &framed, 1 << 20).unwrap(), data);
            }
        }
        let framed = encode(Kind::Chunk, &data, 3).unwrap();
        assert_eq!(decode_chunk("k", &framed, data.len()).unwrap(), data);
        assert!(decode_chunk("k", &framed, data.len() - 1).is_err());
    }

    /// A reused buffer (a copy reuses one per run) holds exactly the new
    /// chunk, whatever it held before, stored or compressed; a frame
    /// holding more than the chunk's length is damage even when the
    /// buffer's capacity would take it.
    #[test]
    fn decodes_into_a_reused_buffer_exactly() {
        let big = b"an earlier, longer chunk ".repeat(400);
        let small = b"the chunk now".repeat(20);
        for level in [0, 3] {
            let mut out = Vec::new();
            let framed = encode(Kind::Chunk, &big, level).unwrap();
            decode_chunk_into("k", &framed, big.len(), &mut out).unwrap();
            let framed = encode(Kind::Chunk, &small, level).unwrap();
            decode_chunk_into("k", &framed, small.len(), &mut out).unwrap();
            assert_eq!(out, small);
            let err = decode_chunk_into("k", &framed, small.len() - 1, &mut out).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(out.capacity() > small.len());
        }
    }

    #[test]
    fn refuses_wrong_kind_version_and_damage() {
        let framed = encode(Kind::Manifest, b"abc", 3).unwrap();
        assert!(matches!(
            decode(Kind::Node, "k", &framed, 100),
            Err(Error::Corrupt { .. })
        ));
        let mut v2 = framed.clone();
        v2[3] = b'9';
        assert!(matches!(
            decode(Kind::Manifest, "k", &v2, 100),
            Err(Error::UnsupportedFormat { .. })
        ));
        let mut flipped = encode(Kind::Manifest, b"abc", 0).unwrap();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode(Kind::Manifest, "k", &flipped, 100),
            Err(Error::Corrupt { .. })
        ));
        let big = encode(Kind::Node, &[7u8; 5000], 3).unwrap();
        assert!(decode(Kind::Node, "k", &big, 4999).is_err());
        assert!(decode(Kind::Node, "k", b"XF", 10).is_err());
    }

    fn stream(framed: &[u8], limit: usize, want: usize) -> Result<Vec<u8>> {
        decode_stream(Kind::Manifest, "k", framed, limit, |r| {
            let mut out = vec![0u8; want];
            r.read_exact(&mut out)
                .map_err(|e| Error::corrupt("k", format!("short: {e}")))?;
            Ok(out)
        })
    }

    #[test]
    fn streams_check_the_limit_and_the_checksum_of_all_the_plaintext() {
        let data = b"plaintext, plaintext, plaintext".repeat(1000);
        for level in [0, 3] {
            let framed = encode(Kind::Manifest, &data, level).unwrap();
            // Reading part of it still checks all of it.
            assert_eq!(stream(&framed, data.len(), 10).unwrap(), data[..10]);
            let e = stream(&framed, data.len() - 1, 10).unwrap_err();
            assert!(e.to_string().contains("than"), "{e}");
            let mut flipped = encode(Kind::Manifest, &data, level).unwrap();
            *flipped.last_mut().unwrap() ^= 1;
            let e = stream(&flipped, data.len(), 10).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        }
        // The reader's own error is reported when the object is sound.
        let framed = encode(Kind::Manifest, b"abc", 3).unwrap();
        let e = stream(&framed, 100, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = stream(&encode(Kind::Node, &data, 0).unwrap(), data.len(), 1).unwrap_err();
        assert!(e.to_string().contains("not a manifest"), "{e}");
    }
}
