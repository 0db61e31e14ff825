//! The state a client connection shares between the tasks that send
//! requests, the reader task and the watchdog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::NbdError;
use super::client::ClientOptions;
use super::conn::Writer;
use super::handshake::Negotiated;
use super::proto::command_name;

/// Why a connection stopped working; every request then fails with an
/// error built from it.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    Disconnected(String),
    Protocol(String),
    /// Silence for this long (seconds); the server's name.
    Timeout {
        server: String,
        secs: f64,
    },
    /// A reply not whole within its bound (seconds).
    TooSlow {
        server: String,
        secs: f64,
    },
    Closed,
}

impl Failure {
    pub(crate) fn error(&self, export: &str, cmd: u16, offset: u64) -> NbdError {
        let export = export.to_string();
        let command = command_name(cmd);
        match self {
            Failure::Disconnected(reason) => NbdError::Disconnected {
                export,
                command,
                offset,
                reason: reason.clone(),
            },
            Failure::Protocol(reason) => NbdError::Protocol {
                export,
                command,
                offset,
                reason: reason.clone(),
            },
            Failure::Timeout { server, secs } => NbdError::Timeout {
                server: server.clone(),
                export,
                command,
                offset,
                secs: *secs,
            },
            Failure::TooSlow { server, secs } => NbdError::ReplyTooSlow {
                server: server.clone(),
                export,
                command,
                offset,
                secs: *secs,
            },
            Failure::Closed => NbdError::Disconnected {
                export,
                command,
                offset,
                reason: "the connection was closed".into(),
            },
        }
    }
}

/// What a finished request hands back.
#[derive(Debug)]
pub(crate) enum Reply {
    Data(Bytes),
    /// Block-status descriptors (length, flags) for the wanted context,
    /// starting at the request's offset.
    Extents(Vec<(u32, u32)>),
    Done,
}

/// A request waiting for its reply. The permits are released when the
/// reply is complete, not when the caller stops waiting: the bound holds
/// even for abandoned requests.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub cmd: u16,
    pub offset: u64,
    pub len: u32,
    /// Block status: the context id whose extents the caller wants.
    pub context: Option<u32>,
    /// When the first message of its reply arrived: from then on the
    /// reply must be whole within [`reply_bound`].
    pub started: Option<Instant>,
    pub done: oneshot::Sender<Result<Reply, NbdError>>,
    pub _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub next_cookie: u64,
    pub pending: HashMap<u64, InFlight>,
    pub failed: Option<Failure>,
}

pub(crate) struct Shared {
    /// The server's address, for errors.
    pub server: String,
    pub export: String,
    pub neg: Negotiated,
    pub options: ClientOptions,
    pub writer: tokio::sync::Mutex<Writer>,
    pub state: Mutex<State>,
    pub requests: Arc<Semaphore>,
    pub bytes: Arc<Semaphore>,
    pub epoch: Instant,
    /// Milliseconds since `epoch` of the last sign of life from the
    /// server (or of the first request after an idle period).
    pub last_progress: AtomicU64,
    /// Read buffers given back ([`Shared::recycle`]): reusing them spares
    /// the page faults and zeroing of fresh memory for every reply, which
    /// cost about a fifth of the client's CPU.
    pub pool: Mutex<Vec<BytesMut>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("export", &self.export)
            .field("negotiated", &self.neg)
            .finish()
    }
}

impl Shared {
    pub(crate) fn progress(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_progress.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn idle(&self) -> Duration {
        let ms = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(ms.saturating_sub(self.last_progress.load(Ordering::Relaxed)))
    }

    /// An empty buffer of at least `len` bytes' capacity.
    pub(crate) fn buffer(&self, len: usize) -> BytesMut {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(b) if b.capacity() >= len => b,
            _ => BytesMut::with_capacity(len),
        }
    }

    /// Takes a read buffer back when nothing else refers to it. The pool
    /// holds at most one buffer per request in flight.
    pub(crate) fn recycle(&self, data: Bytes) {
        if let Ok(mut b) = data.try_into_mut() {
            b.clear();
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < self.options.max_requests.max(1) {
                pool.push(b);
            }
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection failed (the first reason wins) and fails
    /// every request in flight.
    pub(crate) fn fail(&self, why: Failure) {
        let pending: Vec<InFlight> = {
            let mut st = self.lock();
            if st.failed.is_none() {
                st.failed = Some(why);
            }
            st.pending.drain().map(|(_, f)| f).collect()
        };
        let why = self.lock().failed.clone().unwrap_or(Failure::Closed);
        for f in pending {
            let _ = f.done.send(Err(why.error(&self.export, f.cmd, f.offset)));
        }
    }
}

/// The slowest a reply may arrive, past the timeout, before it is taken
/// for a trickle. Far below any disk or network a backup reads from: a
/// 1 MiB read may take the timeout plus a second.
pub(crate) const MIN_REPLY_RATE: u64 = 1 << 20;

/// How long a reply may take from its first message to its last: the
/// timeout, and its payload at [`MIN_REPLY_RATE`]. Silence is bounded by
/// the timeout alone, but any byte resets that; a server sending a byte
/// now and then would hold a request (and a backup) for ever.
pub(crate) fn reply_bound(timeout: Duration, cmd: u16, len: u32) -> Duration {
    let payload = if cmd == super::proto::CMD_READ {
        len
    } else {
        0
    };
    timeout + Duration::from_secs_f64(payload as f64 / MIN_REPLY_RATE as f64)
}

/// Fails the connection when requests wait and the server has said
/// nothing for the timeout, or when a reply that began is not whole
/// within its [`reply_bound`].
pub(crate) async fn watchdog(shared: Arc<Shared>, reader: tokio::task::AbortHandle) {
    let timeout = shared.options.timeout;
    let tick = (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let server = shared.server.clone();
    loop {
        tokio::time::sleep(tick).await;
        let (waiting, overdue) = {
            let st = shared.lock();
            if st.failed.is_some() {
                return;
            }
            let overdue = st.pending.values().find_map(|f| {
                let bound = reply_bound(timeout, f.cmd, f.len);
                let late = f.started.is_some_and(|t| t.elapsed() > bound);
                late.then_some(bound)
            });
            (!st.pending.is_empty(), overdue)
        };
        let why = match overdue {
            Some(bound) => Failure::TooSlow {
                server,
                secs: bound.as_secs_f64(),
            },
            None if waiting && shared.idle() >= timeout => Failure::Timeout {
                server,
                secs: timeout.as_secs_f64(),
            },
            None => continue,
        };
        reader.abort();
        shared.fail(why);
        return;
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    #[test]
    fn a_frozen_read_buffer_comes_back_whole() {
        // What the pool relies on: a reply's Bytes turns back into its
        // buffer, capacity intact, once nothing else refers to it.
        let mut b = BytesMut::with_capacity(1 << 20);
        b.resize(1 << 20, 7);
        let frozen = b.freeze();
        let back = frozen.try_into_mut().unwrap();
        assert!(back.capacity() >= 1 << 20);
        let mut b = BytesMut::with_capacity(4096);
        b.resize(4096, 1);
        let frozen = b.freeze();
        let _other = frozen.clone();
        assert!(frozen.try_into_mut().is_err(), "shared: not reused");
    }
}
