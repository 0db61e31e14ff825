//! The client against scripted servers that lie, stall or vanish: every
//! case ends in an error naming the export and offset, never a hang, a
//! panic or an allocation the request did not ask for.

use std::future::Future;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, ClientOptions, Errno, Extent, NbdError};

use crate::peer::{Peer, options, scripted};

fn protocol_at(e: &NbdError, want: u64) -> String {
    match e {
        NbdError::Protocol {
            export,
            offset,
            reason,
            ..
        } => {
            assert_eq!((export.as_str(), *offset), ("disk", want), "{e}");
            reason.clone()
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// One read against a server answering it with `answer`.
async fn read_answered<F, Fut>(answer: F) -> Result<bytes::Bytes, NbdError>
where
    F: FnOnce(Peer, RequestHeader) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (c, _t) = scripted(&[], options(5000), |mut p| async move {
        p.handshake(1 << 20).await;
        let req = p.request().await.unwrap();
        answer(p, req).await;
    })
    .await;
    c.unwrap().read(4096, 512).await
}

#[tokio::test]
async fn lying_data_chunks_are_refused_before_allocating() {
    // A chunk claiming nearly 4 GiB for a 512-byte read.
    let e = read_answered(|mut p, req| async move {
        p.send(&encode_chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_DATA,
            req.cookie,
            0xFFFF_FFF0,
        ))
        .await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("data chunk of"), "{e}");
    // Data outside the request.
    let e = read_answered(|mut p, req| async move {
        let mut d = 0u64.to_be_bytes().to_vec();
        d.extend_from_slice(&[1; 512]);
        p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, req.cookie, &d)
            .await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("outside"), "{e}");
    // Overlapping chunks.
    let e = read_answered(|mut p, req| async move {
        let mut d = req.offset.to_be_bytes().to_vec();
        d.extend_from_slice(&[1; 256]);
        p.chunk(0, REPLY_TYPE_OFFSET_DATA, req.cookie, &d).await;
        let mut h = (req.offset + 100).to_be_bytes().to_vec();
        h.extend_from_slice(&412u32.to_be_bytes());
        p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE, req.cookie, &h)
            .await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("overlaps"), "{e}");
    // Success claimed with half the bytes.
    let e = read_answered(|mut p, req| async move {
        let mut d = req.offset.to_be_bytes().to_vec();
        d.extend_from_slice(&[1; 256]);
        p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, req.cookie, &d)
            .await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("answered with 256"), "{e}");
    // A reply to a request never made.
    let e = read_answered(|mut p, req| async move {
        p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, req.cookie + 99, &[])
            .await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("cookie"), "{e}");
    // An unknown chunk type without the error bit.
    let e = read_answered(|mut p, req| async move {
        p.chunk(REPLY_FLAG_DONE, 77, req.cookie, &[0; 4]).await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("unknown chunk type"), "{e}");
    // Structured chunks, then a simple reply ending the same request:
    // the spec allows one or the other per request, and the chunks'
    // half-filled buffer would be kept for the life of the connection
    // (a server doing so for every read grows the client without bound).
    let e = read_answered(|mut p, req| async move {
        let mut d = req.offset.to_be_bytes().to_vec();
        d.extend_from_slice(&[1; 256]);
        p.chunk(0, REPLY_TYPE_OFFSET_DATA, req.cookie, &d).await;
        p.send(&encode_simple_reply(0, req.cookie)).await;
        p.send(&[2; 512]).await;
        p.idle().await;
    })
    .await
    .unwrap_err();
    assert!(protocol_at(&e, 4096).contains("simple reply"), "{e}");
}

#[tokio::test]
async fn chunks_in_any_order_with_holes_assemble() {
    let got = read_answered(|mut p, req| async move {
        // Second half first, then a hole, then the first 100 bytes.
        let mut d = (req.offset + 256).to_be_bytes().to_vec();
        d.extend_from_slice(&[2; 256]);
        p.chunk(0, REPLY_TYPE_OFFSET_DATA, req.cookie, &d).await;
        let mut h = (req.offset + 100).to_be_bytes().to_vec();
        h.extend_from_slice(&156u32.to_be_bytes());
        p.chunk(0, REPLY_TYPE_OFFSET_HOLE, req.cookie, &h).await;
        let mut d = req.offset.to_be_bytes().to_vec();
        d.extend_from_slice(&[1; 100]);
        p.chunk(0, REPLY_TYPE_OFFSET_DATA, req.cookie, &d).await;
        p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, req.cookie, &[])
            .await;
        p.idle().await;
    })
    .await
    .unwrap();
    let mut want = vec![1u8; 100];
    want.extend_from_slice(&[0; 156]);
    want.extend_from_slice(&[2; 256]);
    assert_eq!(&got[..], &want[..]);
}

#[tokio::test]
async fn a_server_vanishing_mid_reply_names_export_and_offset() {
    let e = read_answered(|mut p, req| async move {
        p.send(&encode_chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_DATA,
            req.cookie,
            8 + 512,
        ))
        .await;
        p.send(&req.offset.to_be_bytes()).await;
        p.send(&[5; 100]).await;
        // The connection drops here.
    })
    .await
    .unwrap_err();
    match &e {
        NbdError::Disconnected {
            export,
            offset,
            command,
            ..
        } => {
            assert_eq!((export.as_str(), *offset, *command), ("disk", 4096, "read"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (c, _t) = scripted(&[], options(500), |mut p| async move {
        p.handshake(1 << 20).await;
        p.idle().await;
    })
    .await;
    let c = c.unwrap();
    let e = c.read(8192, 4096).await.unwrap_err();
    match &e {
        NbdError::Timeout { export, offset, .. } => {
            assert_eq!((export.as_str(), *offset), ("disk", 8192))
        }
        other => panic!("{other:?}"),
    }
    // The connection is done for: later requests fail at once.
    let e = c.read(0, 1).await.unwrap_err();
    assert!(matches!(e, NbdError::Timeout { offset: 0, .. }), "{e:?}");
    // A server that never finishes the handshake times out too.
    let (c, _t) = scripted(&[], options(300), |mut p| async move {
        p.greet().await;
        p.idle().await;
    })
    .await;
    let e = c.unwrap_err();
    assert!(
        matches!(e, NbdError::Handshake { .. }) && e.to_string().contains("no answer"),
        "{e}"
    );
}

#[tokio::test]
async fn error_chunks_name_their_offset_and_the_connection_goes_on() {
    let (c, _t) = scripted(&[], options(5000), |mut p| async move {
        p.handshake(1 << 20).await;
        let req = p.request().await.unwrap();
        let mut e = Errno::EIO.0.to_be_bytes().to_vec();
        e.extend_from_slice(&12u16.to_be_bytes());
        e.extend_from_slice(b"disk on fire");
        e.extend_from_slice(&(req.offset + 1000).to_be_bytes());
        p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR_OFFSET, req.cookie, &e)
            .await;
        let req = p.request().await.unwrap();
        p.data(&req, 9).await;
        p.idle().await;
    })
    .await;
    let c = c.unwrap();
    let e = c.read(65536, 4096).await.unwrap_err();
    match &e {
        NbdError::Command {
            offset,
            errno,
            message,
            ..
        } => {
            assert_eq!(
                (*offset, *errno, message.as_str()),
                (66536, Errno::EIO, "disk on fire")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(&c.read(0, 16).await.unwrap()[..], &[9; 16]);
}

#[tokio::test]
async fn short_block_status_answers_are_followed_up_and_merged() {
    let (c, _t) = scripted(&[BASE_ALLOCATION], options(5000), |mut p| async move {
        p.handshake(4 << 20).await;
        while let Some(req) = p.request().await {
            assert_eq!(req.command, CMD_BLOCK_STATUS);
            // One extent of at most 1 MiB per answer, possibly past the
            // request: data below 2 MiB, holes above.
            let flags: u32 = if req.offset < 2 << 20 { 0 } else { 3 };
            let mut d = 7u32.to_be_bytes().to_vec();
            d.extend_from_slice(&(1u32 << 20).to_be_bytes());
            d.extend_from_slice(&flags.to_be_bytes());
            p.chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, req.cookie, &d)
                .await;
        }
    })
    .await;
    let c = c.unwrap();
    let map = c
        .block_status(BASE_ALLOCATION, 100..(4 << 20) - 100)
        .await
        .unwrap();
    assert_eq!(
        map,
        vec![
            // Answers start where asked: 100..(2 MiB + 100) is data.
            Extent {
                len: 2 << 20,
                flags: 0
            },
            Extent {
                len: (2 << 20) - 200,
                flags: 3
            },
        ]
    );
}

#[tokio::test]
async fn malformed_block_status_is_refused() {
    for (payload_len, descriptor_len) in [(12u32, 0u32), (0x7FFF_FFFF, 4096), (10, 4096)] {
        let (c, _t) = scripted(&[BASE_ALLOCATION], options(5000), move |mut p| async move {
            p.handshake(1 << 20).await;
            let req = p.request().await.unwrap();
            let mut d = 7u32.to_be_bytes().to_vec();
            d.extend_from_slice(&descriptor_len.to_be_bytes());
            d.extend_from_slice(&0u32.to_be_bytes());
            p.send(&encode_chunk_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_BLOCK_STATUS,
                req.cookie,
                payload_len,
            ))
            .await;
            p.send(&d[..d.len().min(payload_len as usize)]).await;
            p.idle().await;
        })
        .await;
        let e = c
            .unwrap()
            .block_status(BASE_ALLOCATION, 0..4096)
            .await
            .unwrap_err();
        protocol_at(&e, 0);
    }
}

#[tokio::test]
async fn requests_in_flight_stay_within_the_bound() {
    let opts = ClientOptions {
        request_size: 4096,
        max_requests: 4,
        ..options(5000)
    };
    let (c, t) = scripted(&[], opts, |mut p| async move {
        p.handshake(1 << 20).await;
        loop {
            // Four requests arrive without any reply...
            let mut reqs = Vec::new();
            for _ in 0..4 {
                match p.request().await {
                    Some(r) => reqs.push(r),
                    None => return,
                }
            }
            // ...and no fifth while they are unanswered.
            let mut h = [0u8; REQUEST_HEADER_LEN];
            let fifth =
                tokio::time::timeout(Duration::from_millis(100), p.io.read_exact(&mut h)).await;
            assert!(fifth.is_err(), "a fifth request while four were in flight");
            for r in reqs {
                p.data(&r, (r.offset / 4096) as u8).await;
            }
        }
    })
    .await;
    let c = c.unwrap();
    let got = c.read(0, 64 * 4096).await.unwrap();
    for (i, block) in got.chunks(4096).enumerate() {
        assert!(block.iter().all(|b| *b == i as u8));
    }
    c.close().await.unwrap();
    t.await.unwrap();
}
