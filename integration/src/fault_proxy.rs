//! Endpoints that misbehave, for tests:
//! - [`FaultProxy::start`] breaks a fraction of the connections to an S3
//!   server: it closes them at once, or answers their first request with
//!   503 Slow Down or 500, and forwards the others untouched. A client that
//!   retries properly still gets every request through.
//! - [`FaultProxy::with_rule`] answers the requests a rule picks itself
//!   (e.g. 403 InvalidObjectState for chunk GETs, or 503 for everything)
//!   and forwards the others.
//! - [`Blackhole`] drops every SYN; [`Silent`] accepts connections and
//!   never answers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A request a rule answers itself: its method and path (with the query).
pub type Rule = fn(method: &str, path: &str) -> Option<Vec<u8>>;

#[derive(Debug)]
pub struct FaultProxy {
    pub endpoint: String,
    faults: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`host:port`), breaking `percent` of the
    /// connections.
    pub fn start(upstream: &str, percent: u32, seed: u64) -> FaultProxy {
        let upstream = upstream.to_string();
        let mut rng = StdRng::seed_from_u64(seed);
        FaultProxy::serve(move |client, faults| {
            if rng.random_range(0..100) < percent {
                faults.fetch_add(1, Ordering::SeqCst);
                let kind = rng.random_range(0..3);
                std::thread::spawn(move || break_connection(client, kind));
            } else if let Ok(server) = TcpStream::connect(&upstream) {
                pipe(client, server);
            }
        })
    }

    /// Answers the requests `rule` picks with what it returns and forwards
    /// the others to `upstream` (`host:port`; with `None`, the rule must
    /// answer everything). Each connection carries one request (forwarded
    /// ones get `Connection: close`), so every request meets the rule.
    pub fn with_rule(upstream: Option<&str>, rule: Rule) -> FaultProxy {
        let upstream = upstream.map(str::to_string);
        FaultProxy::serve(move |client, faults| {
            let (upstream, faults) = (upstream.clone(), faults.clone());
            std::thread::spawn(move || one_request(client, upstream.as_deref(), rule, &faults));
        })
    }

    /// Accepts connections on a loopback port and hands each to `handle`
    /// with the fault counter, until dropped.
    fn serve(mut handle: impl FnMut(TcpStream, &Arc<AtomicU64>) + Send + 'static) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let (faults, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let handle = {
            let (faults, stop) = (faults.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((c, _)) => {
                            let _ = c.set_nonblocking(false);
                            handle(c, &faults);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        FaultProxy {
            endpoint,
            faults,
            stop,
            listener: Some(handle),
        }
    }

    /// Connections broken (or requests answered by the rule) so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }
}

/// An S3 error answer: `status` is e.g. `503 Slow Down`.
pub fn s3_error(status: &str, code: &str) -> Vec<u8> {
    let body = format!("<Error><Code>{code}</Code><Message>injected by the test</Message></Error>");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads a request head (up to the blank line), byte by byte so that
/// nothing of the body is consumed.
fn read_head(c: &mut TcpStream) -> Vec<u8> {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match c.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let _ = c.set_read_timeout(None);
    head
}

fn one_request(mut client: TcpStream, upstream: Option<&str>, rule: Rule, faults: &AtomicU64) {
    let head = read_head(&mut client);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if let Some(answer) = rule(method, path) {
        faults.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(&answer);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Some(mut server) = upstream.and_then(|u| TcpStream::connect(u).ok()) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    // Ask the server to close after its answer, so the client's next
    // request comes on a new connection and meets the rule.
    let kept: Vec<&str> = text
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    let head = format!("{}\r\nConnection: close\r\n\r\n", kept.join("\r\n"));
    if server.write_all(head.as_bytes()).is_ok() {
        pipe(client, server);
    }
}

fn break_connection(mut c: TcpStream, kind: u32) {
    if kind == 0 {
        // Drop the connection before any answer.
        let _ = c.shutdown(Shutdown::Both);
        return;
    }
    // Read the request head, then answer with an error and close.
    read_head(&mut c);
    let answer = if kind == 1 {
        s3_error("503 Slow Down", "SlowDown")
    } else {
        s3_error("500 Internal Server Error", "InternalError")
    };
    let _ = c.write_all(&answer);
    let _ = c.shutdown(Shutdown::Both);
}

fn pipe(client: TcpStream, server: TcpStream) {
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    copy(client, server);
    copy(s2, c2);
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
    }
}

/// A loopback port whose accept queue is full, so the kernel drops every
/// further SYN: to a client, a host that never answers (a firewall that
/// drops, a wrong address).
#[derive(Debug)]
pub struct Blackhole {
    pub endpoint: String,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // Linux queues backlog+1 connections and then drops SYNs.
        rustix::net::listen(&listener, 1).expect("listen with backlog 1");
        let addr = listener.local_addr().expect("address");
        let queued = (0..4)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
            .collect();
        let probe = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        assert!(
            probe.is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
            "the full accept queue still takes connections: not a blackhole"
        );
        Blackhole {
            endpoint: format!("http://{addr}"),
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A server that accepts connections and never reads or answers.
#[derive(Debug)]
pub struct Silent {
    pub endpoint: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((c, _)) => held.push(c),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Silent {
            endpoint,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
