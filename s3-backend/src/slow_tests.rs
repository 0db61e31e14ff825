//! Uploads over a slow link, against a server on a loopback port that
//! reads request bodies at a set rate: timeouts bound silence, not size
//! (`client.rs`). The timeouts are shrunk (answer 2 s, stall 2 s, attempt
//! 3 s, floor 256 KiB/s, 1 MiB in transit) so that this takes seconds,
//! not minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use xfull_core::backend::{Backend, BackendError, PutMode};

use crate::client::Timeouts;
use crate::{S3Backend, S3Options};

const SHRUNK: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    answer: Duration::from_secs(2),
    stall: Duration::from_secs(2),
    attempt: Duration::from_secs(3),
    operation: Duration::from_secs(6),
    upload_floor: 256 << 10,
    in_transit: 1 << 20,
};

/// What the server does with a request.
#[derive(Clone, Copy)]
enum Then {
    /// Reads the body, answers 200.
    Answer,
    /// Reads the body, says nothing.
    Silent,
    /// Reads this much of the body, then nothing more.
    StopReading(u64),
}

/// A server that reads each request's body at `rate` bytes a second, then
/// does what `then` says.
struct SlowServer {
    endpoint: String,
    /// Request heads read, attempts included.
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowServer {
    async fn start(rate: u64, then: Then) -> SlowServer {
        let socket = TcpSocket::new_v4().unwrap();
        // A small receive window, so the client's bytes wait on the
        // server's reads, as on a slow link.
        socket.set_recv_buffer_size(16 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, rate, then, seen.clone()));
            }
        });
        SlowServer {
            endpoint,
            requests,
            task,
        }
    }

    /// A backend on this server with the shrunk timeouts.
    async fn backend(&self) -> S3Backend {
        self.backend_with(SHRUNK).await
    }

    async fn backend_with(&self, timeouts: Timeouts) -> S3Backend {
        let opts = S3Options {
            bucket: "b".into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("k".into(), "s".into())),
            ..S3Options::default()
        };
        S3Backend::with_parts(opts, None, timeouts).await.unwrap()
    }
}

/// Serves the requests of one connection.
async fn serve(mut conn: TcpStream, rate: u64, then: Then, requests: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut conn, &mut buf).await else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let length: u64 = header("content-length:").map_or(0, |v| v.parse().unwrap());
        if header("expect:").is_some_and(|v| v == "100-continue")
            && conn
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let mut left = length - (buf.len() - head_end) as u64;
        buf.clear();
        // Paced by the clock: each read may return less than asked.
        let (start, mut read) = (tokio::time::Instant::now(), 0u64);
        let mut chunk = vec![0u8; 64 << 10];
        while left > 0 {
            if matches!(then, Then::StopReading(n) if read >= n) {
                std::future::pending::<()>().await;
            }
            let want = chunk.len().min(left as usize);
            match conn.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => (left, read) = (left - n as u64, read + n as u64),
            }
            let due = Duration::from_secs_f64(read as f64 / rate as f64);
            tokio::time::sleep_until(start + due).await;
        }
        if matches!(then, Then::Silent) {
            std::future::pending::<()>().await;
        }
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\n\r\n";
        if conn.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads until the end of a request head; returns where its body starts.
async fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut piece = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        match conn.read(&mut piece).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    }
}

/// A 16 MiB upload at 2 MiB/s takes 8 s: longer than the answer timeout
/// (2 s) and the attempt timeout without the body (3 s), but it moves all
/// the time, above the floor, so it succeeds in one attempt. The body is
/// larger than the socket buffers hold: taken whole at once (one piece),
/// its answer would be due 6 s after the start (2 s, plus 1 MiB in
/// transit at the floor), before the server has read it.
#[tokio::test]
async fn an_upload_slower_than_the_answer_timeout_succeeds_while_it_moves() {
    let server = SlowServer::start(2 << 20, Then::Answer).await;
    let b = server.backend().await;
    let body = Bytes::from(vec![7u8; 16 << 20]);
    b.put("pack", body, PutMode::Overwrite).await.unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 1, "one attempt");
}

/// A server that takes the whole body and never answers is given up on
/// after two attempts, with the message for a silent server.
#[tokio::test]
async fn a_server_that_takes_the_body_and_never_answers_fails() {
    let server = SlowServer::start(64 << 20, Then::Silent).await;
    let b = server.backend().await;
    let body = Bytes::from(vec![7u8; 64 << 10]);
    let e = b.put("pack", body, PutMode::Overwrite).await.unwrap_err();
    assert!(matches!(e, BackendError::Transient { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("went silent")
            && text.contains("no response within")
            && text.contains("2 attempts"),
        "{text}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

/// A server that stops reading mid-body: the body stalls once the socket
/// buffers are full, and the upload fails on that, not on a timeout that
/// waits for the whole body.
#[tokio::test]
async fn an_upload_the_server_stops_reading_fails_as_stalled() {
    let server = SlowServer::start(64 << 20, Then::StopReading(1 << 20)).await;
    let b = server.backend().await;
    // Larger than what the kernel buffers on both sides can hold.
    let body = Bytes::from(vec![7u8; 24 << 20]);
    let e = b.put("pack", body, PutMode::Overwrite).await.unwrap_err();
    assert!(matches!(e, BackendError::Transient { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("went silent") && text.contains("upload stalled"),
        "{text}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
}

/// The S3 client's own read timeout is off (uploads are timed here); the
/// loader's, which credential providers' clients (STS, SSO) use, is not.
#[tokio::test]
async fn only_the_s3_clients_read_timeout_is_off() {
    let server = SlowServer::start(1 << 20, Then::Answer).await;
    let b = server.backend_with(Timeouts::DEFAULT).await;
    let t = b.client.config().timeout_config().unwrap();
    assert_eq!(t.read_timeout(), None);
    assert_eq!(t.connect_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(
        t.operation_attempt_timeout(),
        Some(Duration::from_secs(300))
    );
    assert_eq!(t.operation_timeout(), Some(Duration::from_secs(600)));
    let loader = Timeouts::DEFAULT.loader();
    assert_eq!(loader.read_timeout(), Some(Duration::from_secs(30)));
}
