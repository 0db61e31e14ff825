//! Servers that send, but too slowly: the client's silence watchdog is
//! reset by every byte, so a server trickling a reply (a byte now and
//! then, each within the timeout) would hold a request, and a backup,
//! for ever. A reply must arrive whole within a bound a trickle cannot
//! reset; a slow but steady server still gets through.

use std::time::Duration;

use xfull_core::nbd::proto::*;
use xfull_core::nbd::{ClientOptions, NbdError};

use crate::peer::{Peer, options, scripted};

/// Sends `bytes` one at a time, `gap` apart.
async fn trickle(p: &mut Peer, bytes: &[u8], gap: Duration) {
    for b in bytes {
        p.send(&[*b]).await;
        tokio::time::sleep(gap).await;
    }
}

/// A whole structured read reply to `req`, as bytes.
fn read_reply(req: &RequestHeader) -> Vec<u8> {
    let mut v = encode_chunk_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        req.cookie,
        8 + req.len,
    )
    .to_vec();
    v.extend_from_slice(&req.offset.to_be_bytes());
    v.extend(std::iter::repeat_n(7u8, req.len as usize));
    v
}

/// A read of 4 KiB under a 300 ms timeout, the server sending a byte
/// every 30 ms (the whole reply would take two minutes). `header_too`:
/// the reply's header trickles too, else it comes at once and only the
/// data trickles.
async fn trickled_read(header_too: bool) -> NbdError {
    let (c, _t) = scripted(&[], options(300), move |mut p| async move {
        p.handshake(1 << 20).await;
        let req = p.request().await.unwrap();
        let reply = read_reply(&req);
        let gap = Duration::from_millis(30);
        if header_too {
            trickle(&mut p, &reply, gap).await;
        } else {
            p.send(&reply[..28]).await;
            trickle(&mut p, &reply[28..], gap).await;
        }
        p.idle().await;
    })
    .await;
    let c = c.unwrap();
    // A guard against the hang this test is about, not a measure of
    // speed: the bound is about 0.3 s, the trickle two minutes.
    let read = tokio::time::timeout(Duration::from_secs(30), c.read(8192, 4096)).await;
    let e = read
        .expect("the trickled read was still waiting after 30 s")
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("scripted"), "the server is named: {text}");
    assert!(text.contains("8192"), "the offset is named: {text}");
    e
}

#[tokio::test]
async fn a_trickled_reply_fails_within_its_bound() {
    let e = trickled_read(false).await;
    assert!(
        matches!(&e, NbdError::ReplyTooSlow { server, offset: 8192, .. } if server == "scripted"),
        "{e:?}"
    );
}

/// The same trickle as whole messages: a 4 KiB read answered by one-byte
/// data chunks, each complete, 30 ms apart. Every chunk is a sign of life,
/// so only the bound on the whole reply ends it.
#[tokio::test]
async fn a_reply_in_tiny_chunks_fails_within_its_bound() {
    let (c, _t) = scripted(&[], options(300), |mut p| async move {
        p.handshake(1 << 20).await;
        let req = p.request().await.unwrap();
        for i in 0..req.len as u64 {
            let done = if i + 1 == req.len as u64 {
                REPLY_FLAG_DONE
            } else {
                0
            };
            let mut d = (req.offset + i).to_be_bytes().to_vec();
            d.push(7);
            p.chunk(done, REPLY_TYPE_OFFSET_DATA, req.cookie, &d).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        p.idle().await;
    })
    .await;
    let c = c.unwrap();
    // A guard against a hang, as above.
    let read = tokio::time::timeout(Duration::from_secs(30), c.read(8192, 4096)).await;
    let e = read
        .expect("the chunked read was still waiting after 30 s")
        .unwrap_err();
    assert!(
        matches!(&e, NbdError::ReplyTooSlow { server, offset: 8192, .. } if server == "scripted"),
        "{e:?}"
    );
}

/// A header is taken whole before it counts as a sign of life, so a
/// trickled header already ran into the silence timeout; the error now
/// names the server too.
#[tokio::test]
async fn a_trickled_reply_header_times_out() {
    let e = trickled_read(true).await;
    assert!(
        matches!(&e, NbdError::Timeout { server, offset: 8192, .. } if server == "scripted"),
        "{e:?}"
    );
}

/// A reply of 4 MiB in 16 pieces 150 ms apart: longer as a whole (2.4 s)
/// than the 1 s silence timeout, but steady. The bound grows with the
/// reply's length, so it gets through.
#[tokio::test]
async fn a_slow_but_steady_server_gets_through() {
    let opts = ClientOptions {
        request_size: 4 << 20,
        ..options(1000)
    };
    let (c, _t) = scripted(&[], opts, |mut p| async move {
        p.handshake(8 << 20).await;
        let req = p.request().await.unwrap();
        let reply = read_reply(&req);
        for piece in reply.chunks(reply.len().div_ceil(16)) {
            p.send(piece).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        p.idle().await;
    })
    .await;
    let c = c.unwrap();
    let data = c.read(0, 4 << 20).await.unwrap();
    assert!(data.len() == 4 << 20 && data.iter().all(|b| *b == 7));
}
