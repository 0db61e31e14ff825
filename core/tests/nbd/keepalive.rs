//! A TCP client's host that vanishes without a reset (power lost, a
//! network cut) must not hold its connection for good: the wait between
//! requests is unbounded by design, so the server turns on TCP keepalive
//! for every client it accepts. Checked in the kernel's own table of the
//! accepted socket (`/proc/net/tcp`: its keepalive timer runs, due within
//! the idle time), since a vanished peer cannot be made on loopback.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use xfull_core::nbd::server::KEEPALIVE_IDLE;
use xfull_core::nbd::{Listener, Server, ServerOptions};

use crate::exports::MemExport;

/// (timer kind, seconds until it fires) of the IPv4 socket from
/// `local` to `remote`, from `/proc/net/tcp` (kind 2: keepalive).
fn timer(local: u16, remote: u16) -> Option<(u32, f64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
        // State 01: established (not an old connection's TIME_WAIT).
        if port(f[1]) == local && port(f[2]) == remote && f[3] == "01" {
            let (kind, when) = f[5].split_once(':').unwrap();
            // `when` is in clock ticks (USER_HZ, 100 on Linux).
            let when = u64::from_str_radix(when, 16).unwrap() as f64 / 100.0;
            return Some((kind.parse().unwrap(), when));
        }
    }
    None
}

#[tokio::test]
async fn an_accepted_tcp_client_is_probed_when_idle() {
    let listener = Listener::bind_tcp("127.0.0.1:0").await.unwrap();
    let port: u16 = listener
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = Server::new(
        vec![MemExport::new("e", vec![0; 1 << 20], false)],
        ServerOptions::default(),
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The greeting: the server accepted (and set up) this connection.
    let mut greeting = [0u8; 18];
    c.read_exact(&mut greeting).await.unwrap();
    let mine = c.local_addr().unwrap().port();
    // The greeting's ACK may still be due (a retransmit timer, kind 1);
    // then nothing is in flight and only keepalive can run a timer.
    let mut seen = None;
    for _ in 0..200 {
        seen = timer(port, mine);
        if matches!(seen, Some((2, _))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some((2, when)) = seen else {
        panic!("no keepalive timer on the accepted socket: {seen:?}");
    };
    assert!(
        when > 0.0 && when <= KEEPALIVE_IDLE.as_secs_f64(),
        "keepalive due in {when} s, idle time {KEEPALIVE_IDLE:?}"
    );
    drop(c);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
