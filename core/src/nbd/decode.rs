//! Every decoder of bytes that come from the peer, as pure functions over
//! slices whose length the caller has already bounded. They never panic
//! on any input (fuzzed in `fuzz/fuzz_targets/nbd_*.rs`, property-tested
//! in `core/tests/nbd/decoders.rs`) and say what is malformed.

use super::proto::*;

/// What is wrong with bytes the peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed<T>(msg: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(msg.into()))
}

/// A cursor over a byte slice: every read checks the length first.
struct Cursor<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Cursor { b, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return malformed(format!("{} is truncated", self.what));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// A string whose 32-bit length comes first.
    fn string32(&mut self) -> Result<String, Malformed> {
        let n = self.u32()? as usize;
        if n > MAX_STRING {
            return malformed(format!(
                "{}: a string of {n} bytes (at most {MAX_STRING})",
                self.what
            ));
        }
        utf8(self.take(n)?, self.what)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
    fn end(&self) -> Result<(), Malformed> {
        if self.b.is_empty() {
            Ok(())
        } else {
            malformed(format!("{} has {} extra bytes", self.what, self.b.len()))
        }
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, Malformed> {
    if b.len() > MAX_STRING {
        return malformed(format!("{what}: a string of {} bytes", b.len()));
    }
    String::from_utf8(b.to_vec()).map_err(|_| Malformed(format!("{what}: a string is not UTF-8")))
}

/// A human-readable message from the peer: lossy, control characters
/// replaced (it ends up on a terminal), at most [`MAX_STRING`] bytes.
pub fn message(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_STRING)];
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

// ---- client side: what servers send ----

/// The server's greeting (18 bytes): its handshake flags.
pub fn greeting(b: &[u8; 18]) -> Result<u16, Malformed> {
    let mut c = Cursor::new(b, "greeting");
    if c.u64()? != NBDMAGIC {
        return malformed("not an NBD server (no NBDMAGIC greeting)");
    }
    match c.u64()? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => {
            return malformed("the server speaks oldstyle negotiation, which is not supported");
        }
        m => return malformed(format!("unknown negotiation magic {m:#x}")),
    }
    let flags = c.u16()?;
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return malformed("the server does not support fixed newstyle negotiation");
    }
    Ok(flags)
}

/// An option reply header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReply {
    pub option: u32,
    pub reply: u32,
    pub len: u32,
}

pub fn option_reply(b: &[u8; 20]) -> Result<OptionReply, Malformed> {
    let mut c = Cursor::new(b, "option reply");
    if c.u64()? != OPTION_REPLY_MAGIC {
        return malformed("bad option reply magic");
    }
    Ok(OptionReply {
        option: c.u32()?,
        reply: c.u32()?,
        len: c.u32()?,
    })
}

/// One `NBD_REP_INFO` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Info {
    Export {
        size: u64,
        flags: u16,
    },
    BlockSize {
        min: u32,
        preferred: u32,
        max: u32,
    },
    Name(String),
    Description(String),
    /// An information type this client does not know (ignored).
    Unknown(u16),
}

pub fn info(b: &[u8]) -> Result<Info, Malformed> {
    let mut c = Cursor::new(b, "NBD_REP_INFO");
    let kind = c.u16()?;
    let info = match kind {
        INFO_EXPORT => Info::Export {
            size: c.u64()?,
            flags: c.u16()?,
        },
        INFO_BLOCK_SIZE => Info::BlockSize {
            min: c.u32()?,
            preferred: c.u32()?,
            max: c.u32()?,
        },
        INFO_NAME => return Ok(Info::Name(message(c.rest()))),
        INFO_DESCRIPTION => return Ok(Info::Description(message(c.rest()))),
        other => return Ok(Info::Unknown(other)),
    };
    c.end()?;
    Ok(info)
}

/// `NBD_REP_META_CONTEXT`: a context id and name.
pub fn meta_context(b: &[u8]) -> Result<(u32, String), Malformed> {
    let mut c = Cursor::new(b, "NBD_REP_META_CONTEXT");
    let id = c.u32()?;
    let name = utf8(c.rest(), "NBD_REP_META_CONTEXT")?;
    Ok((id, name))
}

/// `NBD_REP_SERVER`: an export name (details after it are ignored).
pub fn server_entry(b: &[u8]) -> Result<String, Malformed> {
    let mut c = Cursor::new(b, "NBD_REP_SERVER");
    c.string32()
}

/// The start of a transmission reply: simple replies are 16 bytes,
/// structured chunk headers 20 (the last 4 are the payload length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStart {
    Simple {
        error: u32,
        cookie: u64,
    },
    /// Read the 4-byte payload length next.
    Structured {
        flags: u16,
        kind: u16,
        cookie: u64,
    },
}

pub fn reply_start(b: &[u8; 16]) -> Result<ReplyStart, Malformed> {
    let mut c = Cursor::new(b, "reply");
    match c.u32()? {
        SIMPLE_REPLY_MAGIC => Ok(ReplyStart::Simple {
            error: c.u32()?,
            cookie: c.u64()?,
        }),
        STRUCTURED_REPLY_MAGIC => Ok(ReplyStart::Structured {
            flags: c.u16()?,
            kind: c.u16()?,
            cookie: c.u64()?,
        }),
        m => malformed(format!("bad reply magic {m:#x}")),
    }
}

/// An error chunk (`NBD_REPLY_TYPE_ERROR`, `_ERROR_OFFSET` or an unknown
/// type with the error bit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorChunk {
    pub errno: u32,
    pub message: String,
    pub offset: Option<u64>,
}

pub fn error_chunk(kind: u16, b: &[u8]) -> Result<ErrorChunk, Malformed> {
    let mut c = Cursor::new(b, "error chunk");
    let errno = c.u32()?;
    let n = c.u16()? as usize;
    let msg = c.take(n)?;
    let offset = if kind == REPLY_TYPE_ERROR_OFFSET {
        Some(c.u64()?)
    } else {
        None
    };
    if errno == 0 {
        return malformed("an error chunk with error 0");
    }
    Ok(ErrorChunk {
        errno,
        message: message(msg),
        offset,
    })
}

/// The 8-byte offset that starts an `OFFSET_DATA` payload.
pub fn data_offset(b: &[u8; 8]) -> u64 {
    u64::from_be_bytes(*b)
}

/// An `OFFSET_HOLE` payload: offset and (nonzero) length.
pub fn hole(b: &[u8]) -> Result<(u64, u32), Malformed> {
    let mut c = Cursor::new(b, "hole chunk");
    let offset = c.u64()?;
    let len = c.u32()?;
    c.end()?;
    if len == 0 {
        return malformed("a hole chunk of length 0");
    }
    Ok((offset, len))
}

/// A `BLOCK_STATUS` payload: the context id and its (length, flags)
/// descriptors, each of nonzero length.
pub fn block_status(b: &[u8]) -> Result<(u32, Vec<(u32, u32)>), Malformed> {
    if b.len() < 12 || !(b.len() - 4).is_multiple_of(8) {
        return malformed(format!(
            "a block-status chunk of {} bytes (4 + a positive multiple of 8)",
            b.len()
        ));
    }
    let n = (b.len() - 4) / 8;
    if n > MAX_STATUS_DESCRIPTORS {
        return malformed(format!("a block-status chunk of {n} descriptors"));
    }
    let mut c = Cursor::new(b, "block-status chunk");
    let id = c.u32()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = c.u32()?;
        let flags = c.u32()?;
        if len == 0 {
            return malformed("a block-status descriptor of length 0");
        }
        out.push((len, flags));
    }
    Ok((id, out))
}

// ---- server side: what clients send ----

/// The client's flags after the greeting: only the two defined flags,
/// and no-zeroes only if the server offered it.
pub fn client_flags(flags: u32, offered: u16) -> Result<u32, Malformed> {
    let known = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
    if flags & !known != 0 {
        return malformed(format!("unknown client flags {flags:#x}"));
    }
    if flags & FLAG_C_NO_ZEROES != 0 && offered & FLAG_NO_ZEROES == 0 {
        return malformed("client flag NO_ZEROES that the server did not offer");
    }
    Ok(flags)
}

/// An option request header: the option and the length of its data.
pub fn option_header(b: &[u8; 16]) -> Result<(u32, u32), Malformed> {
    let mut c = Cursor::new(b, "option");
    if c.u64()? != IHAVEOPT {
        return malformed("bad option magic");
    }
    Ok((c.u32()?, c.u32()?))
}

/// `GO`/`INFO` data: the export name and the information requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoRequest {
    pub export: String,
    pub infos: Vec<u16>,
}

pub fn go_request(b: &[u8]) -> Result<GoRequest, Malformed> {
    let mut c = Cursor::new(b, "NBD_OPT_GO");
    let export = c.string32()?;
    let n = c.u16()? as usize;
    let mut infos = Vec::with_capacity(n.min(b.len() / 2));
    for _ in 0..n {
        infos.push(c.u16()?);
    }
    c.end()?;
    Ok(GoRequest { export, infos })
}

/// `SET_META_CONTEXT`/`LIST_META_CONTEXT` data: export and queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaContextRequest {
    pub export: String,
    pub queries: Vec<String>,
}

pub fn meta_context_request(b: &[u8]) -> Result<MetaContextRequest, Malformed> {
    let mut c = Cursor::new(b, "meta context option");
    let export = c.string32()?;
    let n = c.u32()? as usize;
    // Each query takes at least its 4-byte length: bounds the allocation.
    let mut queries = Vec::with_capacity(n.min(b.len() / 4));
    for _ in 0..n {
        queries.push(c.string32()?);
    }
    c.end()?;
    Ok(MetaContextRequest { export, queries })
}

/// A transmission request header.
pub fn request_header(b: &[u8; REQUEST_HEADER_LEN]) -> Result<RequestHeader, Malformed> {
    let mut c = Cursor::new(b, "request");
    if c.u32()? != REQUEST_MAGIC {
        return malformed("bad request magic");
    }
    Ok(RequestHeader {
        flags: c.u16()?,
        command: c.u16()?,
        cookie: c.u64()?,
        offset: c.u64()?,
        len: c.u32()?,
    })
}
