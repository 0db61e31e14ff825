//! The client's reader task: reads replies, matches them to requests by
//! cookie, assembles structured read replies (data and hole chunks in any
//! order) and block-status chunks, and completes requests. Any protocol
//! violation, or the server going away, fails the connection and every
//! request in flight with an error naming its export and offset.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::NbdError;
use super::client_state::{Failure, InFlight, Reply, Shared};
use super::conn::Reader;
use super::decode::{self, ErrorChunk, ReplyStart};
use super::error::Errno;
use super::proto::*;
use super::ranges::Coverage;

/// Error chunks carry a message of at most 4096 bytes plus a few fields;
/// anything longer is a broken server.
const MAX_ERROR_CHUNK: u32 = 6 + MAX_STRING as u32 + 8;

/// What the request a reply belongs to asked for (copied out of the
/// pending table so that it is not held locked while reading).
#[derive(Clone, Copy)]
struct Asked {
    cmd: u16,
    offset: u64,
    len: u32,
    context: Option<u32>,
}

/// A structured reply being assembled.
#[derive(Default)]
struct Partial {
    /// Read data: `buf.len()` bytes are initialised, the rest of the
    /// capacity (the request's length) is filled as chunks arrive.
    buf: BytesMut,
    coverage: Coverage,
    extents: Option<Vec<(u32, u32)>>,
    error: Option<ErrorChunk>,
}

impl Partial {
    /// Room for the whole read, in a recycled buffer when there is one.
    fn reserve(&mut self, shared: &Shared, len: usize) {
        if self.buf.capacity() < len {
            let mut b = shared.buffer(len);
            b.extend_from_slice(&self.buf);
            self.buf = b;
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, mut r: Reader) {
    let mut partial: HashMap<u64, Partial> = HashMap::new();
    let why = loop {
        if let Err(why) = reply(&shared, &mut r, &mut partial).await {
            break why;
        }
    };
    shared.fail(why);
}

fn io_failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Failure::Disconnected("the server closed the connection".into())
    } else {
        Failure::Disconnected(format!("reading from the server failed: {e}"))
    }
}

fn protocol(reason: impl Into<String>) -> Failure {
    Failure::Protocol(reason.into())
}

/// What the request `cookie` asked for; its reply has begun (the clock of
/// its reply bound starts with its first message).
fn asked(shared: &Shared, cookie: u64) -> Result<Asked, Failure> {
    let mut st = shared.lock();
    let failed = st.failed.clone();
    match st.pending.get_mut(&cookie) {
        Some(f) => {
            f.started.get_or_insert_with(std::time::Instant::now);
            Ok(Asked {
                cmd: f.cmd,
                offset: f.offset,
                len: f.len,
                context: f.context,
            })
        }
        None if failed.is_some() => Err(failed.unwrap_or(Failure::Closed)),
        None => Err(protocol(format!(
            "a reply to cookie {cookie}, which no request has"
        ))),
    }
}

fn complete(shared: &Shared, cookie: u64, result: Result<Reply, NbdError>) {
    let f: Option<InFlight> = shared.lock().pending.remove(&cookie);
    if let Some(f) = f {
        let _ = f.done.send(result);
    }
}

fn command_error(
    shared: &Shared,
    a: &Asked,
    errno: u32,
    message: String,
    at: Option<u64>,
) -> NbdError {
    NbdError::Command {
        export: shared.export.clone(),
        command: command_name(a.cmd),
        offset: at.unwrap_or(a.offset),
        len: a.len as u64,
        errno: Errno(errno),
        message,
    }
}

/// Reads `n` bytes appended to `buf` (whose capacity is reserved).
async fn read_append(
    shared: &Shared,
    r: &mut Reader,
    buf: &mut BytesMut,
    n: usize,
) -> Result<(), Failure> {
    let target = buf.len() + n;
    while buf.len() < target {
        let want = (target - buf.len()) as u64;
        let got = (&mut *r)
            .take(want)
            .read_buf(buf)
            .await
            .map_err(io_failure)?;
        if got == 0 {
            return Err(io_failure(std::io::ErrorKind::UnexpectedEof.into()));
        }
        shared.progress();
    }
    Ok(())
}

/// Places `n` bytes at `at` in `buf`: from the socket, or zeros when
/// `data` is false. Gaps before `at` are zero-filled (a later chunk must
/// cover them; coverage is checked at the end).
async fn place(
    shared: &Shared,
    r: &mut Reader,
    buf: &mut BytesMut,
    at: usize,
    n: usize,
    data: bool,
) -> Result<(), Failure> {
    if at > buf.len() {
        buf.resize(at, 0);
    }
    let inside = (buf.len() - at).min(n);
    if inside > 0 {
        let dst = &mut buf[at..at + inside];
        if data {
            r.read_exact(dst).await.map_err(io_failure)?;
            shared.progress();
        } else {
            dst.fill(0);
        }
    }
    let rest = n - inside;
    if rest > 0 {
        if data {
            read_append(shared, r, buf, rest).await?;
        } else {
            buf.resize(buf.len() + rest, 0);
        }
    }
    Ok(())
}

async fn read_vec(shared: &Shared, r: &mut Reader, n: u32) -> Result<Vec<u8>, Failure> {
    let mut v = vec![0u8; n as usize];
    r.read_exact(&mut v).await.map_err(io_failure)?;
    shared.progress();
    Ok(v)
}

/// Reads and handles one reply message (a simple reply or one chunk).
async fn reply(
    shared: &Shared,
    r: &mut Reader,
    partial: &mut HashMap<u64, Partial>,
) -> Result<(), Failure> {
    let mut start = [0u8; 16];
    r.read_exact(&mut start).await.map_err(io_failure)?;
    shared.progress();
    match decode::reply_start(&start).map_err(|m| protocol(m.0))? {
        ReplyStart::Simple { error, cookie } => {
            // One or the other per request (the spec): chunks already
            // taken would otherwise stay in `partial` for the life of the
            // connection, a buffer per request a hostile server ends so.
            if partial.contains_key(&cookie) {
                return Err(protocol(format!(
                    "a simple reply to cookie {cookie}, whose reply had begun in chunks"
                )));
            }
            simple(shared, r, error, cookie).await
        }
        ReplyStart::Structured {
            flags,
            kind,
            cookie,
        } => {
            let mut l = [0u8; 4];
            r.read_exact(&mut l).await.map_err(io_failure)?;
            let len = u32::from_be_bytes(l);
            if !shared.neg.structured {
                return Err(protocol("a structured reply, which was not negotiated"));
            }
            let a = asked(shared, cookie)?;
            let p = partial.entry(cookie).or_default();
            chunk(shared, r, &a, p, kind, len).await?;
            if flags & REPLY_FLAG_DONE != 0 {
                let p = partial.remove(&cookie).unwrap_or_default();
                let result = finish(shared, &a, p)?;
                complete(shared, cookie, result);
            }
            Ok(())
        }
    }
}

async fn simple(shared: &Shared, r: &mut Reader, error: u32, cookie: u64) -> Result<(), Failure> {
    let a = asked(shared, cookie)?;
    if error != 0 {
        let e = command_error(shared, &a, error, String::new(), None);
        complete(shared, cookie, Err(e));
        return Ok(());
    }
    let result = match a.cmd {
        CMD_READ => {
            // The length is the request's own: nothing the server chose.
            let mut buf = shared.buffer(a.len as usize);
            read_append(shared, r, &mut buf, a.len as usize).await?;
            Reply::Data(buf.freeze())
        }
        CMD_BLOCK_STATUS => return Err(protocol("a simple reply to block status")),
        _ => Reply::Done,
    };
    complete(shared, cookie, Ok(result));
    Ok(())
}

/// Handles one structured chunk of `len` payload bytes.
async fn chunk(
    shared: &Shared,
    r: &mut Reader,
    a: &Asked,
    p: &mut Partial,
    kind: u16,
    len: u32,
) -> Result<(), Failure> {
    let req_end = a.offset + a.len as u64;
    match kind {
        REPLY_TYPE_NONE if len == 0 => Ok(()),
        REPLY_TYPE_NONE => Err(protocol("a NONE chunk with a payload")),
        REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE if a.cmd != CMD_READ => Err(protocol(
            format!("a data chunk in reply to {}", command_name(a.cmd)),
        )),
        REPLY_TYPE_OFFSET_DATA => {
            if len < 9 || (len - 8) > a.len {
                return Err(protocol(format!(
                    "a data chunk of {len} bytes for a read of {}",
                    a.len
                )));
            }
            let mut o = [0u8; 8];
            r.read_exact(&mut o).await.map_err(io_failure)?;
            let off = decode::data_offset(&o);
            let n = (len - 8) as u64;
            if off < a.offset || off.saturating_add(n) > req_end {
                return Err(protocol(format!("data at offset {off} outside the read")));
            }
            p.coverage.insert(off, off + n).map_err(protocol)?;
            p.reserve(shared, a.len as usize);
            place(
                shared,
                r,
                &mut p.buf,
                (off - a.offset) as usize,
                n as usize,
                true,
            )
            .await
        }
        REPLY_TYPE_OFFSET_HOLE => {
            if len != 12 {
                return Err(protocol(format!("a hole chunk of {len} bytes")));
            }
            let b = read_vec(shared, r, len).await?;
            let (off, n) = decode::hole(&b).map_err(|m| protocol(m.0))?;
            if off < a.offset || off.saturating_add(n as u64) > req_end {
                return Err(protocol(format!("a hole at offset {off} outside the read")));
            }
            p.coverage.insert(off, off + n as u64).map_err(protocol)?;
            p.reserve(shared, a.len as usize);
            place(
                shared,
                r,
                &mut p.buf,
                (off - a.offset) as usize,
                n as usize,
                false,
            )
            .await
        }
        REPLY_TYPE_BLOCK_STATUS => {
            if a.cmd != CMD_BLOCK_STATUS {
                return Err(protocol(format!(
                    "block status in reply to {}",
                    command_name(a.cmd)
                )));
            }
            if len > 4 + 8 * MAX_STATUS_DESCRIPTORS as u32 {
                return Err(protocol(format!("a block-status chunk of {len} bytes")));
            }
            let b = read_vec(shared, r, len).await?;
            let (id, descriptors) = decode::block_status(&b).map_err(|m| protocol(m.0))?;
            if !shared.neg.contexts.iter().any(|(i, _)| *i == id) {
                return Err(protocol(format!(
                    "block status for context id {id}, never selected"
                )));
            }
            if Some(id) == a.context {
                if p.extents.is_some() {
                    return Err(protocol("two block-status chunks for one context"));
                }
                p.extents = Some(descriptors);
            }
            Ok(())
        }
        k if k & REPLY_TYPE_FLAG_ERROR != 0 => {
            if len > MAX_ERROR_CHUNK {
                return Err(protocol(format!("an error chunk of {len} bytes")));
            }
            let b = read_vec(shared, r, len).await?;
            let e = decode::error_chunk(k, &b).map_err(|m| protocol(m.0))?;
            if p.error.is_none() {
                p.error = Some(e);
            }
            Ok(())
        }
        k => Err(protocol(format!("an unknown chunk type {k}"))),
    }
}

/// The result of a completed structured reply.
fn finish(shared: &Shared, a: &Asked, p: Partial) -> Result<Result<Reply, NbdError>, Failure> {
    if let Some(e) = p.error {
        return Ok(Err(command_error(shared, a, e.errno, e.message, e.offset)));
    }
    match a.cmd {
        CMD_READ => {
            if p.coverage.covered() != a.len as u64 || p.buf.len() != a.len as usize {
                return Err(protocol(format!(
                    "a read of {} bytes answered with {} bytes",
                    a.len,
                    p.coverage.covered()
                )));
            }
            Ok(Ok(Reply::Data(p.buf.freeze())))
        }
        CMD_BLOCK_STATUS => match p.extents {
            Some(e) => Ok(Ok(Reply::Extents(e))),
            None => Err(protocol("block status without the context asked for")),
        },
        _ => Ok(Ok(Reply::Done)),
    }
}
