//! A TCP proxy for tests that breaks a fraction of the connections to an
//! S3 server: it closes them at once, or answers their first request with
//! 503 Slow Down or 500, and forwards the others untouched. A client that
//! retries properly still gets every request through.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let (faults, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let upstream = upstream.to_string();
        let handle = {
            let (faults, stop) = (faults.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                    };
                    let _ = client.set_nonblocking(false);
                    if rng.random_range(0..100) < percent {
                        faults.fetch_add(1, Ordering::SeqCst);
                        let kind = rng.random_range(0..3);
                        std::thread::spawn(move || break_connection(client, kind));
                    } else if let Ok(server) = TcpStream::connect(&upstream) {
                        pipe(client, server);
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

    /// Connections broken so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }
}

fn break_connection(mut c: TcpStream, kind: u32) {
    if kind == 0 {
        // Drop the connection before any answer.
        let _ = c.shutdown(Shutdown::Both);
        return;
    }
    // Read the request head, then answer with an error and close.
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match c.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let answer: &[u8] = if kind == 1 {
        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 67\r\nConnection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>injected</Message></Error>\r\n"
    } else {
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: 73\r\nConnection: close\r\n\r\n<Error><Code>InternalError</Code><Message>injected</Message></Error>\r\n"
    };
    let _ = c.write_all(answer);
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
