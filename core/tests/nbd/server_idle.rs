//! Clients that hold a connection slot without doing their part: silent
//! in the handshake, stalled in the middle of a request, or not taking
//! their replies. Each is disconnected after its deadline and its slot
//! goes to the next client; a client merely idle between requests (a
//! mounted `/dev/nbd*`, qemu with an idle guest) is kept.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{Client, ServerEvent, ServerOptions};

use crate::exports::MemExport;
use crate::tools::{Served, serve};

/// One client at a time, and short deadlines.
fn one_slot() -> ServerOptions {
    ServerOptions {
        max_clients: 1,
        handshake_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    }
}

fn served(dir: &std::path::Path) -> Served {
    serve(
        dir,
        vec![
            MemExport::new("ro", vec![5; 4 << 20], false),
            MemExport::new("rw", vec![5; 4 << 20], true),
        ],
        one_slot(),
    )
}

/// A raw client through the handshake (`NBD_OPT_EXPORT_NAME`), ready to
/// send requests by hand.
async fn negotiated(s: &Served, export: &str) -> UnixStream {
    let mut c = UnixStream::connect(&s.socket).await.unwrap();
    let mut g = [0u8; 18];
    c.read_exact(&mut g).await.unwrap();
    c.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .await
        .unwrap();
    c.write_all(&encode_option_header(OPT_EXPORT_NAME, export.len() as u32))
        .await
        .unwrap();
    c.write_all(export.as_bytes()).await.unwrap();
    let mut info = [0u8; 10];
    c.read_exact(&mut info).await.unwrap();
    c
}

fn request(command: u16, cookie: u64, offset: u64, len: u32) -> [u8; REQUEST_HEADER_LEN] {
    RequestHeader {
        flags: 0,
        command,
        cookie,
        offset,
        len,
    }
    .encode()
}

/// Waits for the server to drop its first client, returns why. A guard
/// against the hang these tests are about, not a measure of speed: the
/// deadlines are 0.3 s (plus 1 s for 64 KiB of reply), the guard 30 s.
async fn first_client_dropped(s: &Served) -> Option<String> {
    for _ in 0..3000 {
        let events = s.events.lock().unwrap().clone();
        for e in events {
            if let ServerEvent::Disconnected { client: 1, error } = e {
                return error;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the first client still held its slot after 30 s");
}

/// The next client gets the slot and is served.
async fn slot_is_free(s: &Served) {
    let c = Client::connect(&s.uri("ro"), &[]).await.unwrap();
    assert_eq!(&c.read(0, 3).await.unwrap()[..], &[5, 5, 5]);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_in_the_handshake_is_dropped_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = served(dir.path());
    let mut c = UnixStream::connect(&s.socket).await.unwrap();
    let mut g = [0u8; 18];
    c.read_exact(&mut g).await.unwrap();
    let why = first_client_dropped(&s).await.unwrap_or_default();
    assert!(why.contains("negotiation took longer"), "{why}");
    slot_is_free(&s).await;
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_left_half_sent_is_dropped_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = served(dir.path());
    let mut c = negotiated(&s, "ro").await;
    c.write_all(&request(CMD_READ, 1, 0, 4096)[..10])
        .await
        .unwrap();
    let why = first_client_dropped(&s).await.unwrap_or_default();
    assert!(
        why.contains("request") && why.contains("not whole"),
        "{why}"
    );
    slot_is_free(&s).await;
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_payload_left_half_sent_is_dropped_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = served(dir.path());
    let mut c = negotiated(&s, "rw").await;
    c.write_all(&request(CMD_WRITE, 1, 0, 4096)).await.unwrap();
    c.write_all(&[1; 100]).await.unwrap();
    let why = first_client_dropped(&s).await.unwrap_or_default();
    assert!(
        why.contains("payload") && why.contains("not whole"),
        "{why}"
    );
    slot_is_free(&s).await;
    drop(c);
    s.stop().await;
}

/// 16 reads of 64 KiB, 1 MiB of replies, and the client reads none:
/// more than the socket buffers hold, so the server's writes stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_taking_its_replies_is_dropped_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = served(dir.path());
    let mut c = negotiated(&s, "ro").await;
    for i in 0..16 {
        c.write_all(&request(CMD_READ, i, i * 65536, 65536))
            .await
            .unwrap();
    }
    let why = first_client_dropped(&s).await.unwrap_or_default();
    assert!(why.contains("reply") && why.contains("not taken"), "{why}");
    slot_is_free(&s).await;
    drop(c);
    s.stop().await;
}

/// Idle between requests for several times the deadlines: kept, and
/// served when it asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_idle_between_requests_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = served(dir.path());
    let c = Client::connect(&s.uri("ro"), &[]).await.unwrap();
    assert_eq!(&c.read(0, 3).await.unwrap()[..], &[5, 5, 5]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(&c.read(4096, 3).await.unwrap()[..], &[5, 5, 5]);
    let events = s.events.lock().unwrap().clone();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ServerEvent::Disconnected { .. })),
        "{events:?}"
    );
    c.close().await.unwrap();
    s.stop().await;
}
