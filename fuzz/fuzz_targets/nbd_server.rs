//! The NBD server's option and request parsing: the fuzzed bytes are
//! what a client sends (after an optional valid handshake, so requests
//! are reached too), and each option and request decoder on its own.
#![no_main]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, Export, ExportError, Server, ServerOptions, decode};

#[derive(Debug)]
struct Mem(Mutex<Vec<u8>>, &'static str, bool);

#[xfull_core::async_trait]
impl Export for Mem {
    fn name(&self) -> &str {
        self.1
    }
    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        let d = self.0.lock().unwrap();
        Ok(Bytes::copy_from_slice(
            &d[offset as usize..offset as usize + len as usize],
        ))
    }
    fn writable(&self) -> bool {
        self.2
    }
    async fn write(&self, offset: u64, data: Bytes) -> Result<(), ExportError> {
        self.0.lock().unwrap()[offset as usize..offset as usize + data.len()]
            .copy_from_slice(&data);
        Ok(())
    }
    async fn write_zeroes(&self, offset: u64, len: u32, _: bool) -> Result<(), ExportError> {
        self.0.lock().unwrap()[offset as usize..offset as usize + len as usize].fill(0);
        Ok(())
    }
    async fn trim(&self, offset: u64, len: u32) -> Result<(), ExportError> {
        self.write_zeroes(offset, len, true).await
    }
}

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

fuzz_target!(|data: &[u8]| {
    let _ = decode::go_request(data);
    let _ = decode::meta_context_request(data);
    if let Ok(h) = <&[u8; 16]>::try_from(data.get(..16).unwrap_or(&[])) {
        let _ = decode::option_header(h);
    }
    if let Ok(h) =
        <&[u8; REQUEST_HEADER_LEN]>::try_from(data.get(..REQUEST_HEADER_LEN).unwrap_or(&[]))
    {
        let _ = decode::request_header(h);
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = if mode & 1 == 1 {
        client_prefix()
    } else {
        Vec::new()
    };
    input.extend_from_slice(rest);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exports: Vec<Arc<dyn Export>> = vec![
            Arc::new(Mem(Mutex::new(vec![7; 65536]), "", true)),
            Arc::new(Mem(Mutex::new(vec![1; 4096]), "ro", false)),
        ];
        let options = ServerOptions {
            max_payload: 65536,
            ..ServerOptions::default()
        };
        let server = Server::new(exports, options).unwrap();
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
        let done = tokio::time::timeout(Duration::from_secs(30), server.serve_stream(a)).await;
        assert!(done.is_ok(), "the server session did not end");
        let _ = feed.await;
        let _ = drain.await;
    });
});
