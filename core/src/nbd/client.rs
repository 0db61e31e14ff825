//! The NBD client: one connection, many requests in flight.
//!
//! Requests are written by whichever task makes them (the write half sits
//! behind a lock); one reader task demultiplexes replies by cookie
//! (`client_reader.rs`) and a watchdog fails everything when the server
//! stays silent too long, or sends a reply too slowly to be a working
//! one. Two semaphores bound what is in flight: the number of requests
//! and the bytes their replies may carry, so memory stays bounded
//! whatever the export size. Every reply length is checked
//! against its request before anything is allocated.

use std::ops::Range;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::client_state::{Failure, InFlight, Reply, Shared, State, watchdog};
use super::conn::{self, BoxRead, BoxWrite};
use super::handshake::{Handshake, negotiate, within};
use super::proto::*;
use super::{Extent, NbdError, NbdUri, client_reader, push_extent};

/// Tuning of a connection. The defaults suit reading a local disk.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Largest read request (rounded down to the server's minimum block
    /// and capped by its maximum payload).
    pub request_size: u32,
    /// Requests in flight at once.
    pub max_requests: usize,
    /// Bytes of read replies in flight at once (at least one request).
    pub max_bytes: u32,
    /// How long the server may stay silent while requests wait (and how
    /// long the handshake may take) before the connection is failed. A
    /// reply, once begun, must also be whole within this plus its length
    /// at 1 MiB/s, however steadily its bytes come: a server trickling a
    /// byte now and then would otherwise hold a request for ever.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_size: 1 << 20,
            max_requests: 16,
            max_bytes: 32 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A connection to one export. Cheap to share (`&Client` is enough for
/// every operation; calls from several tasks run concurrently).
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    watchdog: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        self.watchdog.abort();
    }
}

impl Client {
    /// Connects with default options and selects `contexts` (e.g.
    /// [`super::BASE_ALLOCATION`], a dirty bitmap's context): each must
    /// exist, or the error lists those that do.
    pub async fn connect(uri: &NbdUri, contexts: &[&str]) -> Result<Client, NbdError> {
        Client::connect_with(uri, contexts, ClientOptions::default()).await
    }

    pub async fn connect_with(
        uri: &NbdUri,
        contexts: &[&str],
        options: ClientOptions,
    ) -> Result<Client, NbdError> {
        let server = uri.target.to_string();
        let (r, w) = within(&server, options.timeout, conn::connect(&uri.target)).await?;
        Client::start(r, w, server, &uri.export, contexts, options).await
    }

    /// The same over any byte stream; `server` names it in errors.
    pub async fn connect_stream<T>(
        io: T,
        server: &str,
        export: &str,
        contexts: &[&str],
        options: ClientOptions,
    ) -> Result<Client, NbdError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = conn::split(io);
        Client::start(r, w, server.to_string(), export, contexts, options).await
    }

    async fn start(
        r: BoxRead,
        w: BoxWrite,
        server: String,
        export: &str,
        contexts: &[&str],
        options: ClientOptions,
    ) -> Result<Client, NbdError> {
        let (mut r, mut w) = conn::buffered(r, w);
        let neg = within(&server, options.timeout, async {
            let mut h =
                Handshake::start(&mut r, &mut w, server.clone(), export.to_string()).await?;
            let res = negotiate(&mut h, contexts).await;
            if res.is_err() {
                h.abort().await;
            }
            res
        })
        .await?;
        let shared = Arc::new(Shared {
            server,
            export: export.to_string(),
            requests: Arc::new(Semaphore::new(options.max_requests.max(1))),
            bytes: Arc::new(Semaphore::new(options.max_bytes.max(1) as usize)),
            neg,
            options,
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(State::default()),
            epoch: Instant::now(),
            last_progress: AtomicU64::new(0),
            pool: Mutex::new(Vec::new()),
        });
        let reader = tokio::spawn(client_reader::run(shared.clone(), r));
        let watchdog = tokio::spawn(watchdog(shared.clone(), reader.abort_handle()));
        Ok(Client {
            shared,
            reader,
            watchdog,
        })
    }

    pub fn export(&self) -> &str {
        &self.shared.export
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.shared.neg.size
    }

    /// (minimum, preferred, maximum payload) as the server advertised
    /// them (1, 4096, 32 MiB when it did not).
    pub fn block_sizes(&self) -> (u32, u32, u32) {
        let n = &self.shared.neg;
        (n.min_block, n.preferred_block, n.max_payload)
    }

    pub fn is_read_only(&self) -> bool {
        self.shared.neg.flags & TFLAG_READ_ONLY != 0
    }

    /// Whether the server agreed to structured replies (without them,
    /// reads use simple replies and block status is unavailable).
    pub fn structured_replies(&self) -> bool {
        self.shared.neg.structured
    }

    /// The metadata contexts selected at connect.
    pub fn contexts(&self) -> Vec<String> {
        self.shared
            .neg
            .contexts
            .iter()
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn check_range(&self, cmd: u16, offset: u64, len: u64) -> Result<(), NbdError> {
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(NbdError::OutOfRange {
                export: self.shared.export.clone(),
                command: command_name(cmd),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    /// The size of read requests: a multiple of the minimum block, at
    /// most the maximum payload.
    fn request_size(&self) -> u64 {
        let n = &self.shared.neg;
        let min = n.min_block.max(1) as u64;
        let want = (self.shared.options.request_size as u64)
            .min(n.max_payload as u64)
            .min(self.shared.options.max_bytes.max(1) as u64);
        (want / min * min).max(min)
    }

    /// Reads `len` bytes at `offset`: one request when it fits, else
    /// [`Client::read_at`] into a new buffer.
    pub async fn read(&self, offset: u64, len: usize) -> Result<Bytes, NbdError> {
        self.check_range(CMD_READ, offset, len as u64)?;
        let min = self.shared.neg.min_block.max(1) as u64;
        if len as u64 <= self.request_size()
            && offset.is_multiple_of(min)
            && (len as u64).is_multiple_of(min)
        {
            if len == 0 {
                return Ok(Bytes::new());
            }
            return self.read_request(offset, len as u32).await;
        }
        let mut buf = BytesMut::zeroed(len);
        self.read_at(offset, &mut buf).await?;
        Ok(buf.freeze())
    }

    /// Fills `buf` from `offset`: split into aligned requests of at most
    /// the request size, issued concurrently (within the in-flight
    /// bounds). On error, the error of the first failed request (naming
    /// its offset) is returned and `buf` is partly filled.
    pub async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let len = buf.len() as u64;
        self.check_range(CMD_READ, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let min = self.shared.neg.min_block.max(1) as u64;
        let end = offset + len;
        let start = offset / min * min;
        let stop = end.div_ceil(min).saturating_mul(min).min(self.size());
        let step = self.request_size();
        let pieces = (0..(stop - start).div_ceil(step)).map(|i| {
            let s = start + i * step;
            (s, (stop - s).min(step) as u32)
        });
        let mut replies = futures::stream::iter(pieces)
            .map(|(s, n)| async move { (s, self.read_request(s, n).await) })
            .buffer_unordered(self.shared.options.max_requests.max(1));
        while let Some((s, data)) = replies.next().await {
            let data = data?;
            // Copy the part of [s, s+n) that lies in [offset, end).
            let from = s.max(offset);
            let to = (s + data.len() as u64).min(end);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - s) as usize..(to - s) as usize]);
            }
            self.shared.recycle(data);
        }
        Ok(())
    }

    /// Reads `range` in order as a stream of (offset, bytes) pieces of
    /// the request size, keeping requests in flight ahead of the consumer
    /// (within the in-flight bounds): a sequential reader that never
    /// waits for the pipeline to drain, unlike successive `read_at`s.
    /// Unaligned edges are read as [`Client::read`] reads them.
    pub fn read_stream(
        &self,
        range: Range<u64>,
    ) -> impl futures::Stream<Item = Result<(u64, Bytes), NbdError>> + '_ {
        let step = self.request_size();
        let start = range.start;
        let end = range.end.max(start);
        // Cut points: the range's ends and the aligned steps between.
        let first = (start / step + 1) * step;
        let cuts = std::iter::once(start)
            .chain((first..end).step_by(step as usize))
            .chain(std::iter::once(end));
        let pieces: Vec<(u64, u64)> = cuts
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| (w[0], w[1] - w[0]))
            .filter(|(_, n)| *n > 0)
            .collect();
        futures::stream::iter(pieces)
            .map(move |(off, len)| async move { self.read(off, len as usize).await.map(|b| (off, b)) })
            .buffered(self.shared.options.max_requests.max(1))
    }

    /// Gives a buffer returned by [`Client::read`] back for reuse by later
    /// reads (when nothing else refers to it): optional, it saves the
    /// cost of fresh memory for every reply in a long sequential read.
    pub fn recycle(&self, data: Bytes) {
        self.shared.recycle(data);
    }

    async fn read_request(&self, offset: u64, len: u32) -> Result<Bytes, NbdError> {
        match self.request(CMD_READ, offset, len, None, len).await? {
            Reply::Data(b) => Ok(b),
            _ => Err(Failure::Protocol("a read ended without data".into()).error(
                &self.shared.export,
                CMD_READ,
                offset,
            )),
        }
    }

    /// The extents of `range` in `context` (negotiated at connect): the
    /// range is covered exactly, adjacent extents with equal flags merged.
    /// Servers may answer shorter ranges than asked: this asks again
    /// from where the answer stopped.
    pub async fn block_status(
        &self,
        context: &str,
        range: Range<u64>,
    ) -> Result<Vec<Extent>, NbdError> {
        let export = &self.shared.export;
        let Some(&(id, _)) = self.shared.neg.contexts.iter().find(|(_, n)| n == context) else {
            return Err(NbdError::ContextNotNegotiated {
                export: export.clone(),
                context: context.to_string(),
            });
        };
        self.check_range(
            CMD_BLOCK_STATUS,
            range.start,
            range.end.saturating_sub(range.start),
        )?;
        let min = self.shared.neg.min_block.max(1) as u64;
        // Block-status lengths need no payload, but stay aligned and
        // within 32 bits.
        let max_len = u32::MAX as u64 / min * min;
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let a = pos / min * min;
            let stop = range.end.div_ceil(min).saturating_mul(min).min(self.size());
            let want = (stop - a).min(max_len) as u32;
            let descriptors = match self.request(CMD_BLOCK_STATUS, a, want, Some(id), 0).await? {
                Reply::Extents(d) => d,
                _ => vec![],
            };
            let mut cur = a;
            for (len, flags) in descriptors {
                let (s, e) = (cur.max(pos), cur.saturating_add(len as u64).min(range.end));
                if s < e {
                    push_extent(&mut out, Extent { len: e - s, flags });
                }
                cur = cur.saturating_add(len as u64);
                if cur >= range.end {
                    break;
                }
            }
            if cur <= pos {
                return Err(Failure::Protocol(format!(
                    "block status for {context} ended before offset {pos}"
                ))
                .error(export, CMD_BLOCK_STATUS, pos));
            }
            pos = cur.min(range.end);
        }
        Ok(out)
    }

    /// Asks the server to make written data durable.
    pub async fn flush(&self) -> Result<(), NbdError> {
        if self.shared.neg.flags & TFLAG_SEND_FLUSH == 0 {
            return Err(NbdError::Unsupported {
                export: self.shared.export.clone(),
                what: "flush",
            });
        }
        self.request(CMD_FLUSH, 0, 0, None, 0).await.map(|_| ())
    }

    /// Sends one request and waits for its reply. `reply_bytes` are
    /// reserved from the in-flight byte budget until the reply is read.
    async fn request(
        &self,
        cmd: u16,
        offset: u64,
        len: u32,
        context: Option<u32>,
        reply_bytes: u32,
    ) -> Result<Reply, NbdError> {
        let s = &self.shared;
        // The semaphores are never closed, so acquiring cannot fail.
        let req = s.requests.clone().acquire_owned().await;
        let bytes = match reply_bytes {
            0 => None,
            n => Some(
                s.bytes
                    .clone()
                    .acquire_many_owned(n.min(s.options.max_bytes.max(1)))
                    .await,
            ),
        };
        let (Ok(req), Ok(bytes)) = (req, bytes.transpose()) else {
            return Err(Failure::Closed.error(&s.export, cmd, offset));
        };
        let (tx, rx) = oneshot::channel();
        let cookie = {
            let mut st = s.lock();
            if let Some(f) = &st.failed {
                return Err(f.error(&s.export, cmd, offset));
            }
            if st.pending.is_empty() {
                // Time spent idle before this request is not silence.
                s.progress();
            }
            let cookie = st.next_cookie;
            st.next_cookie = st.next_cookie.wrapping_add(1);
            st.pending.insert(
                cookie,
                InFlight {
                    cmd,
                    offset,
                    len,
                    context,
                    started: None,
                    done: tx,
                    _permits: (req, bytes),
                },
            );
            cookie
        };
        let header = RequestHeader {
            flags: 0,
            command: cmd,
            cookie,
            offset,
            len,
        }
        .encode();
        let sent = {
            let mut w = s.writer.lock().await;
            tokio::time::timeout(s.options.timeout, async {
                w.write_all(&header).await?;
                w.flush().await
            })
            .await
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => s.fail(Failure::Disconnected(format!(
                "sending a request failed: {e}"
            ))),
            Err(_) => s.fail(Failure::Timeout {
                server: s.server.clone(),
                secs: s.options.timeout.as_secs_f64(),
            }),
        }
        rx.await
            .unwrap_or_else(|_| Err(Failure::Closed.error(&s.export, cmd, offset)))
    }

    /// Ends the connection the polite way (`NBD_CMD_DISC`), once replies
    /// still on their way have arrived.
    pub async fn close(self) -> Result<(), NbdError> {
        let s = &self.shared;
        let deadline = Instant::now() + s.options.timeout;
        while !s.lock().pending.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if s.lock().failed.is_some() {
            return Ok(());
        }
        s.lock().failed = Some(Failure::Closed);
        let header = RequestHeader {
            flags: 0,
            command: CMD_DISC,
            cookie: u64::MAX,
            offset: 0,
            len: 0,
        }
        .encode();
        let mut w = s.writer.lock().await;
        let _ = tokio::time::timeout(s.options.timeout, async {
            w.write_all(&header).await?;
            w.flush().await?;
            w.shutdown().await
        })
        .await;
        Ok(())
    }
}
