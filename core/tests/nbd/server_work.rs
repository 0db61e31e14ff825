//! A connection that ends badly (a protocol violation, the client gone)
//! does not cut off the export's work on the requests it was serving: an
//! export future dropped at an await can leave work it started running
//! (an overlay's blocking write) after its locks are released, to land
//! over a later write.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{Notify, Semaphore};
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{Export, ExportError, Server, ServerOptions};

/// A writable export whose writes say when they start, then wait for the
/// test to let them finish.
#[derive(Debug)]
struct Gated {
    started: Notify,
    gate: Semaphore,
    finished: AtomicBool,
}

#[async_trait]
impl Export for Gated {
    fn name(&self) -> &str {
        ""
    }
    fn size(&self) -> u64 {
        1 << 20
    }
    async fn read(&self, _: u64, len: u32) -> Result<Bytes, ExportError> {
        Ok(vec![0; len as usize].into())
    }
    fn writable(&self) -> bool {
        true
    }
    async fn write(&self, _: u64, _: Bytes) -> Result<(), ExportError> {
        self.started.notify_one();
        let _ = self.gate.acquire().await;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The server's end of the stream, counting the bytes the server has
/// taken from it, so the test knows when it has read a request.
struct Counted {
    io: DuplexStream,
    taken: Arc<(AtomicU64, Notify)>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.taken.0.fetch_add(n, Ordering::SeqCst);
            self.taken.1.notify_one();
        }
        res
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A single-threaded runtime: the server handles the bad header in the
/// same poll that reads it, so once the test sees it read, the server
/// has already reacted, and the gate opens only after that.
#[tokio::test(flavor = "current_thread")]
async fn a_bad_request_does_not_cut_off_a_write_in_progress() {
    let export = Arc::new(Gated {
        started: Notify::new(),
        gate: Semaphore::new(0),
        finished: AtomicBool::new(false),
    });
    let server = Server::new(vec![export.clone()], ServerOptions::default()).unwrap();
    let (mut c, theirs) = tokio::io::duplex(1 << 20);
    let taken = Arc::new((AtomicU64::new(0), Notify::new()));
    let io = Counted {
        io: theirs,
        taken: taken.clone(),
    };
    let serving = tokio::spawn(async move { server.serve_stream(io).await });

    go(&mut c).await;

    let write = RequestHeader {
        flags: 0,
        command: CMD_WRITE,
        cookie: 1,
        offset: 0,
        len: 4096,
    };
    c.write_all(&write.encode()).await.unwrap();
    c.write_all(&[7; 4096]).await.unwrap();
    export.started.notified().await;
    // A request with a bad magic: the connection is over.
    let read_so_far = taken.0.load(Ordering::SeqCst);
    c.write_all(&[0xee; REQUEST_HEADER_LEN]).await.unwrap();
    while taken.0.load(Ordering::SeqCst) < read_so_far + REQUEST_HEADER_LEN as u64 {
        taken.1.notified().await;
    }
    export.gate.add_permits(1);
    let why = serving.await.unwrap();
    assert!(
        why.as_deref().is_some_and(|w| w.contains("magic")),
        "{why:?}"
    );
    assert!(
        export.finished.load(Ordering::SeqCst),
        "the write in progress was dropped halfway when the connection ended"
    );
}

/// An export that panics (a bug, but one of a peer's making if the peer
/// found it) on reads.
#[derive(Debug)]
struct Panicky;

#[async_trait]
impl Export for Panicky {
    fn name(&self) -> &str {
        ""
    }
    fn size(&self) -> u64 {
        1 << 20
    }
    async fn read(&self, offset: u64, _: u32) -> Result<Bytes, ExportError> {
        panic!("a bug met at offset {offset}");
    }
}

/// A request whose task fails (here the export panics) ends the
/// connection at once: the client sees it closed instead of waiting for
/// ever for a reply that will not come. Before, the failure was noticed
/// only when the client sent its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_panics_closes_the_connection_at_once() {
    let server = Server::new(vec![Arc::new(Panicky)], ServerOptions::default()).unwrap();
    let (mut c, theirs) = tokio::io::duplex(1 << 20);
    let serving = tokio::spawn(async move { server.serve_stream(theirs).await });
    go(&mut c).await;
    let read = RequestHeader {
        flags: 0,
        command: CMD_READ,
        cookie: 1,
        offset: 4096,
        len: 4096,
    };
    c.write_all(&read.encode()).await.unwrap();
    // A guard against a hang, not a measure of speed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        c.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the connection stayed open with the request unanswered"
    );
    let why = serving.await.unwrap();
    assert!(
        why.as_deref().is_some_and(|w| w.contains("panicked")),
        "{why:?}"
    );
}

/// The client's side of the handshake up to transmission: the default
/// export, no structured replies.
async fn go(c: &mut tokio::io::DuplexStream) {
    let mut greeting = [0u8; 18];
    c.read_exact(&mut greeting).await.unwrap();
    c.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .await
        .unwrap();
    let go = encode_go_request("", &[]);
    c.write_all(&encode_option_header(OPT_GO, go.len() as u32))
        .await
        .unwrap();
    c.write_all(&go).await.unwrap();
    loop {
        let mut h = [0u8; 20];
        c.read_exact(&mut h).await.unwrap();
        let r = xfull_core::nbd::decode::option_reply(&h).unwrap();
        let mut d = vec![0u8; r.len as usize];
        c.read_exact(&mut d).await.unwrap();
        if r.reply == REP_ACK {
            break;
        }
        assert_eq!(r.reply, REP_INFO);
    }
}
