//! The NBD client's reply parsing: the fuzzed bytes are what a server
//! sends (after an optional valid handshake, so transmission replies are
//! reached too) while the client connects, reads and asks block status;
//! and each option-reply, chunk and block-status decoder on its own.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, Client, ClientOptions, decode};

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

fuzz_target!(|data: &[u8]| {
    let _ = decode::info(data);
    let _ = decode::meta_context(data);
    let _ = decode::server_entry(data);
    let _ = decode::block_status(data);
    let _ = decode::hole(data);
    for kind in [
        REPLY_TYPE_ERROR,
        REPLY_TYPE_ERROR_OFFSET,
        REPLY_TYPE_FLAG_ERROR | 9,
    ] {
        let _ = decode::error_chunk(kind, data);
    }
    if let Ok(h) = <&[u8; 16]>::try_from(data.get(..16).unwrap_or(&[])) {
        let _ = decode::reply_start(h);
    }
    if let Ok(h) = <&[u8; 20]>::try_from(data.get(..20).unwrap_or(&[])) {
        let _ = decode::option_reply(h);
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let size = 4096 * (1 + (mode >> 1) as u64);
    let mut input = if mode & 1 == 1 {
        server_prefix(size)
    } else {
        Vec::new()
    };
    input.extend_from_slice(rest);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
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
            timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let run = async {
            if let Ok(c) = Client::connect_stream(a, "fuzz", "", &[BASE_ALLOCATION], opts).await {
                let n = c.size().min(1 << 20);
                let _ = c.read(0, n as usize).await;
                let _ = c.block_status(BASE_ALLOCATION, 0..n).await;
                let _ = c.close().await;
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(30), run).await;
        assert!(done.is_ok(), "the client session did not end");
        let _ = feed.await;
        let _ = drain.await;
    });
});
