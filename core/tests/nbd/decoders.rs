//! Arbitrary bytes from the peer never panic and never hang: each
//! decoder on its own, and whole sessions (the server fed a client's
//! bytes, the client fed a server's bytes), as the fuzz targets do.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xfull_core::nbd::decode;
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, Client, ClientOptions, Export, Server, ServerOptions};

use crate::exports::MemExport;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the server over `input` as the client's bytes; it must finish.
fn server_session(input: Vec<u8>) {
    runtime().block_on(async {
        let exports: Vec<Arc<dyn Export>> = vec![
            MemExport::new("", vec![7; 65536], true),
            MemExport::new("ro", vec![1; 4096], false),
        ];
        let server = Server::new(exports, ServerOptions::default()).unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut br, mut bw) = tokio::io::split(b);
        let feed = tokio::spawn(async move {
            let _ = bw.write_all(&input).await;
            let _ = bw.shutdown().await;
        });
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = br.read_to_end(&mut sink).await;
        });
        let done = tokio::time::timeout(Duration::from_secs(20), server.serve_stream(a)).await;
        assert!(done.is_ok(), "the server session did not end");
        let _ = feed.await;
        let _ = drain.await;
    });
}

/// Runs the client over `input` as the server's bytes: connect, read,
/// block status; each ends in a result or an error.
fn client_session(input: Vec<u8>) {
    runtime().block_on(async {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut br, mut bw) = tokio::io::split(b);
        let feed = tokio::spawn(async move {
            let _ = bw.write_all(&input).await;
            let _ = bw.shutdown().await;
        });
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = br.read_to_end(&mut sink).await;
        });
        let opts = ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let run = async {
            if let Ok(c) = Client::connect_stream(a, "fuzz", "", &[BASE_ALLOCATION], opts).await {
                let size = c.size().min(1 << 20);
                let _ = c.read(0, size as usize).await;
                let _ = c.block_status(BASE_ALLOCATION, 0..size).await;
                let _ = c.close().await;
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(20), run).await;
        assert!(done.is_ok(), "the client session did not end");
        let _ = feed.await;
        let _ = drain.await;
    });
}

/// A plausible server prefix (greeting, structured ACK, context, GO)
/// followed by arbitrary replies: reaches the transmission decoders.
fn server_prefix(size: u64) -> Vec<u8> {
    let mut b = NBDMAGIC.to_be_bytes().to_vec();
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&FLAG_FIXED_NEWSTYLE.to_be_bytes());
    b.extend_from_slice(&encode_option_reply_header(
        OPT_STRUCTURED_REPLY,
        REP_ACK,
        0,
    ));
    let mut ctx = 1u32.to_be_bytes().to_vec();
    ctx.extend_from_slice(BASE_ALLOCATION.as_bytes());
    b.extend_from_slice(&encode_option_reply_header(
        OPT_SET_META_CONTEXT,
        REP_META_CONTEXT,
        ctx.len() as u32,
    ));
    b.extend_from_slice(&ctx);
    b.extend_from_slice(&encode_option_reply_header(
        OPT_SET_META_CONTEXT,
        REP_ACK,
        0,
    ));
    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
    info.extend_from_slice(&size.to_be_bytes());
    info.extend_from_slice(&TFLAG_HAS_FLAGS.to_be_bytes());
    b.extend_from_slice(&encode_option_reply_header(OPT_GO, REP_INFO, 12));
    b.extend_from_slice(&info);
    b.extend_from_slice(&encode_option_reply_header(OPT_GO, REP_ACK, 0));
    b
}

/// A plausible client prefix (flags, structured replies, context, GO).
fn client_prefix() -> Vec<u8> {
    let mut b = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    b.extend_from_slice(&encode_option_header(OPT_STRUCTURED_REPLY, 0));
    let d = encode_meta_context_request("", &[BASE_ALLOCATION]);
    b.extend_from_slice(&encode_option_header(OPT_SET_META_CONTEXT, d.len() as u32));
    b.extend_from_slice(&d);
    let d = encode_go_request("", &[INFO_BLOCK_SIZE]);
    b.extend_from_slice(&encode_option_header(OPT_GO, d.len() as u32));
    b.extend_from_slice(&d);
    b
}

/// Requests or replies: valid headers with random fields and payloads.
fn frames(magic: u32) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            any::<u16>(),
            0u16..10,
            0u64..4,
            0u64..70000,
            0u32..70000,
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        0..8,
    )
    .prop_map(move |v| {
        let mut out = Vec::new();
        for (flags, kind, cookie, offset, len, tail) in v {
            out.extend_from_slice(&magic.to_be_bytes());
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&cookie.to_be_bytes());
            if magic == REQUEST_MAGIC {
                out.extend_from_slice(&offset.to_be_bytes());
            }
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&tail);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn decoders_take_any_bytes(b in prop::collection::vec(any::<u8>(), 0..300), kind in any::<u16>()) {
        let mut a18 = [0u8; 18];
        let mut a20 = [0u8; 20];
        let mut a16 = [0u8; 16];
        let mut a28 = [0u8; REQUEST_HEADER_LEN];
        for (dst, src) in [(&mut a18[..], &b), (&mut a20[..], &b), (&mut a16[..], &b), (&mut a28[..], &b)] {
            let n = dst.len().min(src.len());
            dst[..n].copy_from_slice(&src[..n]);
        }
        let _ = decode::greeting(&a18);
        let _ = decode::option_reply(&a20);
        let _ = decode::info(&b);
        let _ = decode::meta_context(&b);
        let _ = decode::server_entry(&b);
        let _ = decode::reply_start(&a16);
        let _ = decode::error_chunk(kind, &b);
        let _ = decode::hole(&b);
        let _ = decode::block_status(&b);
        let _ = decode::option_header(&a16);
        let _ = decode::go_request(&b);
        let _ = decode::meta_context_request(&b);
        let _ = decode::request_header(&a28);
        let _ = decode::client_flags(u32::from_be_bytes([b.first().copied().unwrap_or(0), 0, 0, kind as u8]), kind);
        let _ = decode::message(&b);
    }

    #[test]
    fn the_server_survives_any_client(tail in prop::collection::vec(any::<u8>(), 0..400), frames in frames(REQUEST_MAGIC), raw in any::<bool>()) {
        let mut input = if raw { vec![] } else { client_prefix() };
        input.extend_from_slice(&frames);
        input.extend_from_slice(&tail);
        server_session(input);
    }

    #[test]
    fn the_client_survives_any_server(tail in prop::collection::vec(any::<u8>(), 0..400), frames in frames(STRUCTURED_REPLY_MAGIC), size in 0u64..(1 << 20), raw in any::<bool>()) {
        let mut input = if raw { vec![] } else { server_prefix(size) };
        input.extend_from_slice(&frames);
        input.extend_from_slice(&tail);
        client_session(input);
    }
}

#[test]
fn decoders_accept_what_the_encoders_write() {
    let go = encode_go_request("disk", &[INFO_BLOCK_SIZE, INFO_NAME]);
    let g = decode::go_request(&go).unwrap();
    assert_eq!(
        (g.export.as_str(), g.infos),
        ("disk", vec![INFO_BLOCK_SIZE, INFO_NAME])
    );
    let m = encode_meta_context_request("e", &["base:allocation", "qemu:dirty-bitmap:b"]);
    let m = decode::meta_context_request(&m).unwrap();
    assert_eq!(m.queries, vec!["base:allocation", "qemu:dirty-bitmap:b"]);
    let h = RequestHeader {
        flags: 1,
        command: 7,
        cookie: 9,
        offset: 1 << 40,
        len: 77,
    };
    assert_eq!(decode::request_header(&h.encode()).unwrap(), h);
    // A query count far beyond the data allocates nothing big.
    let mut lying = 0u32.to_be_bytes().to_vec();
    lying.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode::meta_context_request(&lying).is_err());
    // Control characters in server messages do not reach the terminal.
    assert_eq!(decode::message(b"bad\x1b[31m\nthing"), "bad [31m thing");
}
