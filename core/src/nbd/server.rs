//! The NBD server: several exports by name, several clients at once (a
//! task per connection, bounded requests and bytes in flight per client),
//! on a unix socket or a TCP address, until the caller's shutdown future
//! completes. A client that misbehaves or disappears ends its own
//! connection only; the server never prints, it reports [`ServerEvent`]s.
//!
//! Negotiation is in `server_options.rs`, transmission in
//! `server_requests.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::conn::{self, BoxRead, BoxWrite};
use super::proto::DEFAULT_MAX_PAYLOAD;
use super::{Export, NbdError, NbdUri, server_options, server_requests, unix_socket};

/// Limits of the server, per client where it says so. The defaults
/// bound payload memory to 32 clients x 32 MiB, whatever they send.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Connections served at once; more are closed at once.
    pub max_clients: usize,
    /// Requests of one client being served at once (the server stops
    /// reading that client's socket meanwhile).
    pub max_requests_per_client: usize,
    /// Bytes of read or write payload of one client in memory at once.
    pub max_bytes_per_client: u32,
    /// The largest read or write payload, advertised in
    /// `NBD_INFO_BLOCK_SIZE`; larger requests get `NBD_EINVAL`.
    pub max_payload: u32,
    /// How long a client may take to finish negotiating.
    pub handshake_timeout: Duration,
    /// How long a request may take to arrive whole once its first byte
    /// has (a write's payload: this plus its length at 64 KiB/s), and a
    /// reply to be taken by the client once the server writes it (this
    /// plus its length at 64 KiB/s). A client that stalls mid-request or
    /// stops reading its replies is disconnected, freeing its slot.
    /// Waiting between requests is not bounded: the kernel's NBD client
    /// behind a mounted `/dev/nbd*`, or qemu with an idle guest, sends
    /// nothing for hours and is a working client.
    pub request_timeout: Duration,
    /// Once the server is stopping, how long a connection may take to
    /// send the replies to the requests in flight. A client that does
    /// not read them (frozen, or a TCP peer gone without a reset) would
    /// otherwise hold the server up for as long as it stays connected.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_clients: 32,
            max_requests_per_client: 16,
            max_bytes_per_client: 32 << 20,
            max_payload: DEFAULT_MAX_PAYLOAD,
            handshake_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What happened to a connection, for the caller to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    Connected {
        client: u64,
        peer: String,
    },
    /// The connection ended; `error` says why when it was not a clean
    /// disconnect (a protocol violation, the client vanishing).
    Disconnected {
        client: u64,
        error: Option<String>,
    },
    /// A connection beyond `max_clients` was closed at once.
    Refused {
        peer: String,
    },
}

type EventSink = Arc<dyn Fn(ServerEvent) + Send + Sync>;

pub(crate) struct Inner {
    pub exports: BTreeMap<String, Arc<dyn Export>>,
    pub options: ServerOptions,
    events: Option<EventSink>,
    next_client: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("exports", &self.exports.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish()
    }
}

impl Inner {
    fn event(&self, e: ServerEvent) {
        if let Some(f) = &self.events {
            f(e);
        }
    }

    /// The export a client names. The empty name is the default export:
    /// one named "" if any, else the only export.
    pub fn export(&self, name: &str) -> Option<Arc<dyn Export>> {
        if let Some(e) = self.exports.get(name) {
            return Some(e.clone());
        }
        if name.is_empty() && self.exports.len() == 1 {
            return self.exports.values().next().cloned();
        }
        None
    }
}

/// Where the server listens.
#[derive(Debug)]
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl Listener {
    /// Listens on a new unix socket at `path`; an existing file there
    /// (a stale socket, a symlink, even a dangling one) is never replaced:
    /// the error names the path. Only the owner may connect (mode 0600,
    /// whatever the umask: exports are disk contents), from the moment the
    /// path exists: the socket is bound and restricted in a private
    /// directory (`.xfull-sock-*`, mode 0700, next to `path`, removed
    /// afterwards) and renamed into place (see `unix_socket.rs`). So the
    /// directory of `path` must let us create a directory in it, and the
    /// temporary path (that directory's path and 23 bytes more) must fit
    /// a unix socket address (107 bytes). The socket file is removed when
    /// [`Server::serve`] returns.
    pub fn bind_unix(path: &Path) -> Result<Listener, NbdError> {
        let listener = unix_socket::bind_private(path).map_err(|e| NbdError::Listen {
            address: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Listens on a TCP address such as `127.0.0.1:10809` (port 0 picks
    /// a free port; see [`Listener::address`]).
    pub async fn bind_tcp(address: &str) -> Result<Listener, NbdError> {
        let l = TcpListener::bind(address)
            .await
            .map_err(|e| NbdError::Listen {
                address: address.to_string(),
                message: e.to_string(),
            })?;
        Ok(Listener::Tcp(l))
    }

    /// The socket path or `host:port` actually bound.
    pub fn address(&self) -> String {
        match self {
            Listener::Unix { path, .. } => path.display().to_string(),
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|e| format!("(unknown: {e})")),
        }
    }

    /// The URI of `export` on this listener.
    pub fn uri(&self, export: &str) -> Result<NbdUri, NbdError> {
        match self {
            Listener::Unix { path, .. } => Ok(NbdUri::unix(path.clone(), export)),
            Listener::Tcp(_) => NbdUri::parse(&format!("nbd://{}/{export}", self.address())),
        }
    }

    async fn accept(&self) -> std::io::Result<(BoxRead, BoxWrite, String)> {
        match self {
            Listener::Unix { listener, path } => {
                let (s, _) = listener.accept().await?;
                let (r, w) = s.into_split();
                Ok((Box::new(r), Box::new(w), format!("unix:{}", path.display())))
            }
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                // Best effort: a socket that refuses it (its peer already
                // gone) fails at its first read, on its own connection.
                let _ = keep_alive(&s);
                let (r, w) = s.into_split();
                Ok((Box::new(r), Box::new(w), peer.to_string()))
            }
        }
    }
}

/// TCP keepalive: probes after [`KEEPALIVE_IDLE`] of silence, every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] unanswered ones end the
/// connection. The wait between requests is not bounded (an idle guest
/// is a working client), so a client whose host vanished without a
/// reset (power lost, a network cut) would otherwise hold its slot, and
/// `serve`'s lease on the point, for as long as the server runs. Its
/// kernel answers the probes of a live idle client, which is kept. A
/// dead one is dropped about two minutes after its last packet. The
/// kernel sends no probes while data it sent is unacknowledged (a reply
/// handed to the socket just before the peer vanished), so the same two
/// minutes are also the socket's user timeout (`TCP_USER_TIMEOUT`):
/// otherwise retransmissions would hold it for 15 to 30 minutes. A live
/// client acknowledges within that even when it reads slowly; one that
/// makes no progress at all for two minutes, even in the middle of a
/// large reply (which the request timeout alone would allow 60 s plus
/// its length at 64 KiB/s), is taken for dead.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_PROBES: u32 = 6;

fn keep_alive(s: &tokio::net::TcpStream) -> std::io::Result<()> {
    use rustix::net::sockopt;
    let dead_after = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES;
    sockopt::set_tcp_keepidle(s, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(s, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(s, KEEPALIVE_PROBES)?;
    sockopt::set_socket_keepalive(s, true)?;
    sockopt::set_tcp_user_timeout(s, dead_after.as_millis() as u32)?;
    Ok(())
}

/// Serves exports; cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct Server {
    inner: Arc<Inner>,
}

impl Server {
    pub fn new(exports: Vec<Arc<dyn Export>>, options: ServerOptions) -> Result<Server, NbdError> {
        let mut map = BTreeMap::new();
        for e in exports {
            let name = e.name().to_string();
            if map.insert(name.clone(), e).is_some() {
                return Err(NbdError::DuplicateExport { name });
            }
        }
        Ok(Server {
            inner: Arc::new(Inner {
                exports: map,
                options,
                events: None,
                next_client: AtomicU64::new(1),
            }),
        })
    }

    /// A server like this one that calls `f` for each connection event.
    pub fn on_event(self, f: impl Fn(ServerEvent) + Send + Sync + 'static) -> Server {
        Server {
            inner: Arc::new(Inner {
                exports: self.inner.exports.clone(),
                options: self.inner.options.clone(),
                events: Some(Arc::new(f)),
                next_client: AtomicU64::new(1),
            }),
        }
    }

    /// Accepts clients until `shutdown` completes, then stops accepting,
    /// lets every connection finish the requests it is serving, and
    /// returns once all are closed.
    pub async fn serve(
        &self,
        listener: Listener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NbdError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(self.inner.options.max_clients.max(1)));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (r, w, peer) = match accepted {
                        Ok(a) => a,
                        Err(_) => {
                            // Out of descriptors and the like: back off
                            // rather than spin; the listener stays.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        self.inner.event(ServerEvent::Refused { peer });
                        continue;
                    };
                    let inner = self.inner.clone();
                    let stop = stop_rx.clone();
                    conns.spawn(async move {
                        connection(inner, r, w, peer, stop).await;
                        drop(slot);
                    });
                }
            }
        }
        let _ = stop_tx.send(true);
        while conns.join_next().await.is_some() {}
        if let Listener::Unix { path, .. } = &listener {
            // Remove our socket, not whatever may have replaced it.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Serves one client over any byte stream until it disconnects;
    /// returns why the connection ended when it was not clean.
    pub async fn serve_stream<T>(&self, io: T) -> Option<String>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = conn::split(io);
        let (_tx, rx) = watch::channel(false);
        serve_connection(self.inner.clone(), r, w, rx).await.err()
    }
}

async fn connection(
    inner: Arc<Inner>,
    r: BoxRead,
    w: BoxWrite,
    peer: String,
    stop: watch::Receiver<bool>,
) {
    let client = inner.next_client.fetch_add(1, Ordering::Relaxed);
    inner.event(ServerEvent::Connected { client, peer });
    let res = serve_connection(inner.clone(), r, w, stop).await;
    inner.event(ServerEvent::Disconnected {
        client,
        error: res.err(),
    });
}

/// Negotiation, then transmission.
async fn serve_connection(
    inner: Arc<Inner>,
    r: BoxRead,
    w: BoxWrite,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (mut r, mut w) = conn::buffered(r, w);
    let timeout = inner.options.handshake_timeout;
    let negotiation =
        tokio::time::timeout(timeout, server_options::negotiate(&inner, &mut r, &mut w));
    let mut stopping = stop.clone();
    let session = tokio::select! {
        res = negotiation => res.map_err(|_| {
            format!("negotiation took longer than {} s", timeout.as_secs_f64())
        })??,
        // Whatever step of the handshake the client is at (even before
        // it sent its flags): it has nothing in flight, drop it.
        Ok(_) = stopping.wait_for(|s| *s) => return Ok(()),
    };
    match session {
        Some(session) => server_requests::transmit(inner, session, r, w, stop).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::ExportError;
    use tokio::io::AsyncReadExt;

    #[derive(Debug)]
    struct Empty;

    #[async_trait::async_trait]
    impl Export for Empty {
        fn name(&self) -> &str {
            ""
        }
        fn size(&self) -> u64 {
            4096
        }
        async fn read(&self, _: u64, len: u32) -> Result<bytes::Bytes, ExportError> {
            Ok(vec![0; len as usize].into())
        }
    }

    /// A client that connected but has not finished negotiating (here:
    /// not even sent its flags) has nothing in flight: stopping drops it
    /// rather than waiting for its handshake timeout.
    #[tokio::test]
    async fn stopping_drops_a_client_still_negotiating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let opts = ServerOptions {
            handshake_timeout: Duration::from_secs(3600),
            ..ServerOptions::default()
        };
        let server = Server::new(vec![Arc::new(Empty)], opts).unwrap();
        let listener = Listener::bind_unix(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        let mut idle = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut greeting = [0u8; 18];
        idle.read_exact(&mut greeting).await.unwrap();
        stop.send(()).unwrap();
        // A guard against a hang (the handshake timeout is an hour), not a
        // measure of speed.
        let done = tokio::time::timeout(Duration::from_secs(120), serving).await;
        assert!(done.is_ok(), "the server waited for the idle client");
        done.unwrap().unwrap().unwrap();
        drop(idle);
    }
}
