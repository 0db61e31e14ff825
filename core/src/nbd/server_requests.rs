//! The server's transmission phase for one client: requests are read in
//! order (write payloads with them), checked against the export and the
//! limits, and served concurrently by tasks that write their replies
//! whole under the write lock. A bad request gets an error reply and the
//! connection goes on; only a broken framing (bad magic), the client
//! vanishing or a request that failed (its reply not sent, the export
//! panicked) ends it, at once. The export's work on the requests in
//! flight is never cut off, whatever ends the connection; when the
//! server stops, their replies are given up on once the client has not
//! taken them for the drain timeout (a client that stopped reading must
//! not keep the server from stopping). The replies are written by
//! `server_replies.rs`.
//!
//! Deadlines (`ServerOptions::request_timeout`): a request must arrive
//! whole once its first byte has, and a reply be taken by the client once
//! written, or the connection ends and frees its slot (a few stalled
//! clients would otherwise lock everyone out). The wait for the next
//! request is not bounded: a kernel client behind a mounted `/dev/nbd*`
//! or qemu with an idle guest sends nothing for hours, and cutting it off
//! would fail the guest's next I/O.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::conn::{Reader, Writer};
use super::decode;
use super::error::Errno;
use super::proto::*;
use super::server::Inner;
use super::server_options::Session;
use super::server_replies::{read, send, send_error, status};
use super::{Export, ExportError};

/// What every request task of a connection shares.
pub(super) struct Ctx {
    pub export: Arc<dyn Export>,
    pub structured: bool,
    pub allocation: bool,
    pub max_payload: u32,
    /// `ServerOptions::request_timeout`.
    pub request_timeout: Duration,
    pub writer: Mutex<Writer>,
    /// Set when the server is stopping and this client has not taken its
    /// replies within the drain timeout, or when the connection failed:
    /// replies are abandoned.
    pub abandoned: watch::Receiver<bool>,
}

/// The slowest a client may send a write's payload or take a reply,
/// past the request timeout. Low, because clients may be far away (a TCP
/// client over a slow link): a 32 MiB payload may take the timeout plus
/// 512 s. It bounds a stalled client, it does not police throughput.
const MIN_CLIENT_RATE: u64 = 64 << 10;

/// How long `bytes` may take to cross to or from the client.
pub(super) fn transfer_bound(timeout: Duration, bytes: u64) -> Duration {
    timeout + Duration::from_secs_f64(bytes as f64 / MIN_CLIENT_RATE as f64)
}

/// Why a connection ends when its replies are abandoned.
pub(super) const ABANDONED: &str = "the server stopped and the client was not taking its replies";

/// A checked request, ready to serve.
enum Job {
    Fail(Errno, String),
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: Bytes,
        fua: bool,
    },
    Zero {
        offset: u64,
        len: u32,
        may_trim: bool,
        fua: bool,
    },
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Flush,
    Status {
        offset: u64,
        len: u32,
        one: bool,
    },
}

pub(crate) async fn transmit(
    inner: Arc<Inner>,
    session: Session,
    mut r: Reader,
    w: Writer,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let opts = &inner.options;
    // Data chunks carry 8 bytes more than their payload in a u32.
    let max_payload = opts.max_payload.clamp(4096, 1 << 30);
    let (abandon, abandoned) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        export: session.export,
        structured: session.structured,
        allocation: session.allocation,
        max_payload,
        request_timeout: opts.request_timeout,
        writer: Mutex::new(w),
        abandoned,
    });
    let requests = Arc::new(Semaphore::new(opts.max_requests_per_client.max(1)));
    let budget = opts.max_bytes_per_client.max(max_payload);
    let bytes = Arc::new(Semaphore::new(budget as usize));
    let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
    // A request that fails (its reply cannot be sent, the export
    // panicked) ends the connection at once, also while the loop waits
    // for the next request: else a client waiting for that reply and a
    // server waiting for the client's next request wait for ever.
    let (failing, mut failed) = tokio::sync::mpsc::channel::<String>(1);
    let mut stop = stop.clone();
    let end = loop {
        if let Some(e) = reap(&mut tasks) {
            break Err(e);
        }
        // The whole intake of a request (header, a slot, memory, a write's
        // payload) gives way to shutdown: a client stalled mid-payload
        // must not hold the server up, and what was half read is dropped
        // with the connection.
        let next = next_request(&ctx, &mut r, &requests, &bytes, budget);
        let (req, job, permits) = tokio::select! {
            n = next => match n {
                Ok(Some(n)) => n,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = stop.wait_for(|s| *s) => break Ok(()),
            Some(e) = failed.recv() => break Err(e),
        };
        let ctx = ctx.clone();
        let failure = Failure {
            tx: failing.clone(),
            why: Some(PANICKED.into()),
        };
        tasks.spawn(async move {
            let res = serve(&ctx, req.cookie, job).await;
            drop(permits);
            failure.ended(&res);
            res
        });
    };
    if end.is_err() {
        // The connection is over, but the export's work is not cut off
        // at an await: an overlay write dropped there leaves its blocking
        // write running after the overlay's lock is released, to land
        // over a later write (of another connection). Only the replies
        // are given up.
        let _ = abandon.send(true);
        while tasks.join_next().await.is_some() {}
        return end;
    }
    // A clean end (DISC, EOF, shutdown): finish the requests in flight.
    // The export's work always completes (an overlay write is never cut
    // in half); sending the replies is bounded once the server stops.
    let drain = opts.drain_timeout;
    let deadline = async move {
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain).await;
    };
    tokio::pin!(deadline);
    let mut abandoned = false;
    let mut end = end;
    loop {
        tokio::select! {
            res = tasks.join_next() => match res {
                Some(res) => if let Err(e) = flatten(res) {
                    end = end.and(Err(e));
                },
                None => break,
            },
            _ = &mut deadline, if !abandoned => {
                abandoned = true;
                let _ = abandon.send(true);
            }
        }
    }
    if !abandoned {
        let close = async {
            let mut w = ctx.writer.lock().await;
            let _ = w.flush().await;
            let _ = w.shutdown().await;
        };
        tokio::select! {
            _ = close => {}
            _ = &mut deadline => end = end.and(Err(ABANDONED.into())),
        }
    }
    end
}

/// Reads and checks the next request, holding a request slot and its
/// memory. `Ok(None)`: the client disconnected (`NBD_CMD_DISC` or EOF).
async fn next_request(
    ctx: &Ctx,
    r: &mut Reader,
    requests: &Arc<Semaphore>,
    bytes: &Arc<Semaphore>,
    budget: u32,
) -> Result<Option<(RequestHeader, Job, Permits)>, String> {
    // Waiting for a request to begin is not bounded (see the top).
    match r.fill_buf().await {
        Ok([]) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(format!("reading a request: {e}")),
    }
    let mut h = [0u8; REQUEST_HEADER_LEN];
    let timeout = ctx.request_timeout;
    match tokio::time::timeout(timeout, r.read_exact(&mut h)).await {
        Ok(Ok(_)) => {}
        // A client may drop the connection without NBD_CMD_DISC.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(format!("reading a request: {e}")),
        Err(_) => {
            return Err(format!(
                "a request header was not whole {} s after its first byte",
                timeout.as_secs_f64()
            ));
        }
    }
    let req = decode::request_header(&h).map_err(|m| m.0)?;
    if req.command == CMD_DISC {
        return Ok(None);
    }
    // Waiting for a slot stops reading this client: backpressure.
    let slot = requests
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| e.to_string())?;
    let want = match req.command {
        CMD_READ | CMD_WRITE => req.len.min(budget),
        _ => 0,
    };
    let mem = bytes
        .clone()
        .acquire_many_owned(want)
        .await
        .map_err(|e| e.to_string())?;
    let job = prepare(ctx, r, &req).await?;
    Ok(Some((req, job, (slot, mem))))
}

type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

const PANICKED: &str = "the export panicked serving a request";

/// Tells the connection that a request failed: its error when it ends
/// ([`Failure::ended`]), "panicked" when its task unwinds instead (the
/// reason is sent on drop unless taken).
struct Failure {
    tx: tokio::sync::mpsc::Sender<String>,
    why: Option<String>,
}

impl Failure {
    fn ended(mut self, res: &Result<(), String>) {
        drop(self.why.take());
        if let Err(e) = res {
            // Full: another failure already ends the connection.
            let _ = self.tx.try_send(e.clone());
        }
    }
}

impl Drop for Failure {
    fn drop(&mut self) {
        if let Some(why) = self.why.take() {
            let _ = self.tx.try_send(why);
        }
    }
}

fn flatten(res: Result<Result<(), String>, tokio::task::JoinError>) -> Result<(), String> {
    match res {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(PANICKED.into()),
        Err(_) => Ok(()),
    }
}

/// Collects finished tasks; a failed reply means the client is gone.
fn reap(tasks: &mut JoinSet<Result<(), String>>) -> Option<String> {
    while let Some(res) = tasks.try_join_next() {
        if let Err(e) = flatten(res) {
            return Some(e);
        }
    }
    None
}

/// Checks a request and reads a write's payload. `Err` only for what
/// ends the connection (the socket failing).
async fn prepare(ctx: &Ctx, r: &mut Reader, req: &RequestHeader) -> Result<Job, String> {
    let e = &ctx.export;
    let size = e.size();
    let end = req.offset.checked_add(req.len as u64);
    let inside = end.is_some_and(|end| end <= size);
    let writable = e.writable();
    let fua_ok = if writable { CMD_FLAG_FUA } else { 0 };
    let allowed = match req.command {
        CMD_WRITE_ZEROES => fua_ok | CMD_FLAG_NO_HOLE,
        CMD_BLOCK_STATUS => fua_ok | CMD_FLAG_REQ_ONE,
        _ => fua_ok,
    };
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let fail = |errno, msg: String| Ok(Job::Fail(errno, msg));
    if req.command == CMD_WRITE {
        // The payload follows whatever the answer: read it (or skip it)
        // to stay in step with the client.
        let bad = if !writable {
            Some((Errno::EPERM, "the export is read-only".to_string()))
        } else if req.flags & !allowed != 0 {
            Some((Errno::EINVAL, format!("unsupported flags {:#x}", req.flags)))
        } else if req.len > ctx.max_payload {
            Some((
                Errno::EINVAL,
                format!("a write of {} bytes (at most {})", req.len, ctx.max_payload),
            ))
        } else if !inside {
            Some((
                Errno::ENOSPC,
                format!("a write past the end of the export ({size} bytes)"),
            ))
        } else {
            None
        };
        // A client stalled mid-payload would hold its slot for ever.
        let bound = transfer_bound(ctx.request_timeout, req.len as u64);
        let late = |_| {
            format!(
                "a write payload of {} bytes was not whole within {} s",
                req.len,
                bound.as_secs_f64()
            )
        };
        let io = |e: std::io::Error| format!("reading a write payload: {e}");
        if let Some((errno, msg)) = bad {
            let mut skip = (&mut *r).take(req.len as u64);
            let mut sink = tokio::io::sink();
            let copy = tokio::io::copy(&mut skip, &mut sink);
            tokio::time::timeout(bound, copy)
                .await
                .map_err(late)?
                .map_err(io)?;
            return fail(errno, msg);
        }
        let mut data = BytesMut::zeroed(req.len as usize);
        tokio::time::timeout(bound, r.read_exact(&mut data))
            .await
            .map_err(late)?
            .map_err(io)?;
        return Ok(Job::Write {
            offset: req.offset,
            data: data.freeze(),
            fua,
        });
    }
    if req.flags & !allowed != 0 {
        return fail(Errno::EINVAL, format!("unsupported flags {:#x}", req.flags));
    }
    let past_end = || format!("past the end of the export ({size} bytes)");
    Ok(match req.command {
        CMD_READ if req.len > ctx.max_payload => Job::Fail(
            Errno::EINVAL,
            format!("a read of {} bytes (at most {})", req.len, ctx.max_payload),
        ),
        CMD_READ if !inside => Job::Fail(Errno::EINVAL, past_end()),
        CMD_READ => Job::Read {
            offset: req.offset,
            len: req.len,
        },
        CMD_FLUSH => Job::Flush,
        CMD_TRIM | CMD_WRITE_ZEROES if !writable => {
            Job::Fail(Errno::EPERM, "the export is read-only".into())
        }
        CMD_TRIM if !inside => Job::Fail(Errno::EINVAL, past_end()),
        CMD_TRIM => Job::Trim {
            offset: req.offset,
            len: req.len,
            fua,
        },
        CMD_WRITE_ZEROES if !inside => Job::Fail(Errno::ENOSPC, past_end()),
        CMD_WRITE_ZEROES => Job::Zero {
            offset: req.offset,
            len: req.len,
            may_trim: req.flags & CMD_FLAG_NO_HOLE == 0,
            fua,
        },
        CMD_BLOCK_STATUS if !ctx.structured || !ctx.allocation => {
            Job::Fail(Errno::EINVAL, "no metadata context was selected".into())
        }
        CMD_BLOCK_STATUS if req.len == 0 || !inside => Job::Fail(Errno::EINVAL, past_end()),
        CMD_BLOCK_STATUS => Job::Status {
            offset: req.offset,
            len: req.len,
            one: req.flags & CMD_FLAG_REQ_ONE != 0,
        },
        other => Job::Fail(Errno::EINVAL, format!("unsupported command {other}")),
    })
}

/// Serves one request and writes its reply. `Err`: the reply could not
/// be sent (the client is gone).
async fn serve(ctx: &Ctx, cookie: u64, job: Job) -> Result<(), String> {
    let e = &ctx.export;
    let done = |res: Result<(), ExportError>| res.map_err(|x| (x.errno(), x.to_string()));
    let outcome = match job {
        Job::Fail(errno, msg) => Err((errno, msg)),
        Job::Read { offset, len } => return read(ctx, cookie, offset, len).await,
        Job::Status { offset, len, one } => return status(ctx, cookie, offset, len, one).await,
        Job::Write { offset, data, fua } => {
            let res = e.write(offset, data).await;
            done(if fua { and_flush(e, res).await } else { res })
        }
        Job::Zero {
            offset,
            len,
            may_trim,
            fua,
        } => {
            let res = e.write_zeroes(offset, len, may_trim).await;
            done(if fua { and_flush(e, res).await } else { res })
        }
        Job::Trim { offset, len, fua } => {
            let res = e.trim(offset, len).await;
            done(if fua { and_flush(e, res).await } else { res })
        }
        Job::Flush => done(e.flush().await),
    };
    match outcome {
        Ok(()) => send(ctx, &[&encode_simple_reply(0, cookie)]).await,
        Err((errno, msg)) => send_error(ctx, cookie, errno, &msg).await,
    }
}

async fn and_flush(e: &Arc<dyn Export>, res: Result<(), ExportError>) -> Result<(), ExportError> {
    res?;
    e.flush().await
}
