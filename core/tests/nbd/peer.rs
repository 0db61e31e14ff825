//! A scripted NBD server for the client's hostile-peer tests: a correct
//! handshake on demand, then whatever bytes a test wants to send.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, Client, ClientOptions, NbdError};

/// The server's end of the connection, driven by a test script.
pub struct Peer {
    pub io: DuplexStream,
}

impl Peer {
    async fn u32(&mut self) -> u32 {
        self.io.read_u32().await.unwrap()
    }

    pub async fn send(&mut self, b: &[u8]) {
        let _ = self.io.write_all(b).await;
    }

    /// Reads one option: (option, data).
    pub async fn option(&mut self) -> (u32, Vec<u8>) {
        let mut h = [0u8; 16];
        self.io.read_exact(&mut h).await.unwrap();
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        self.io.read_exact(&mut d).await.unwrap();
        (opt, d)
    }

    pub async fn reply(&mut self, opt: u32, rep: u32, data: &[u8]) {
        self.send(&encode_option_reply_header(opt, rep, data.len() as u32))
            .await;
        self.send(data).await;
    }

    pub async fn greet(&mut self) {
        let mut g = NBDMAGIC.to_be_bytes().to_vec();
        g.extend_from_slice(&IHAVEOPT.to_be_bytes());
        g.extend_from_slice(&FLAG_FIXED_NEWSTYLE.to_be_bytes());
        self.send(&g).await;
        assert_eq!(self.u32().await, FLAG_C_FIXED_NEWSTYLE);
    }

    /// A correct handshake: structured replies, `base:allocation` as
    /// context 7, GO with the size.
    pub async fn handshake(&mut self, size: u64) {
        self.greet().await;
        loop {
            let (opt, data) = self.option().await;
            match opt {
                OPT_STRUCTURED_REPLY => self.reply(opt, REP_ACK, &[]).await,
                OPT_SET_META_CONTEXT => {
                    if String::from_utf8_lossy(&data).contains(BASE_ALLOCATION) {
                        let mut d = 7u32.to_be_bytes().to_vec();
                        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                        self.reply(opt, REP_META_CONTEXT, &d).await;
                    }
                    self.reply(opt, REP_ACK, &[]).await;
                }
                OPT_GO => {
                    let mut d = INFO_EXPORT.to_be_bytes().to_vec();
                    d.extend_from_slice(&size.to_be_bytes());
                    d.extend_from_slice(
                        &(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH).to_be_bytes(),
                    );
                    self.reply(opt, REP_INFO, &d).await;
                    self.reply(opt, REP_ACK, &[]).await;
                    return;
                }
                other => self.reply(other, REP_ERR_UNSUP, &[]).await,
            }
        }
    }

    /// The next request (None when the client hung up).
    pub async fn request(&mut self) -> Option<RequestHeader> {
        let mut h = [0u8; REQUEST_HEADER_LEN];
        self.io.read_exact(&mut h).await.ok()?;
        xfull_core::nbd::decode::request_header(&h).ok()
    }

    pub async fn chunk(&mut self, flags: u16, kind: u16, cookie: u64, payload: &[u8]) {
        self.send(&encode_chunk_header(
            flags,
            kind,
            cookie,
            payload.len() as u32,
        ))
        .await;
        self.send(payload).await;
    }

    /// A whole, correct read reply of zeros... with `fill`.
    pub async fn data(&mut self, req: &RequestHeader, fill: u8) {
        let mut p = req.offset.to_be_bytes().to_vec();
        p.extend(std::iter::repeat_n(fill, req.len as usize));
        self.chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, req.cookie, &p)
            .await;
    }

    /// Keeps the connection open (a silent server) until the client goes.
    pub async fn idle(mut self) {
        let mut sink = Vec::new();
        let _ = self.io.read_to_end(&mut sink).await;
    }
}

pub fn options(timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(timeout_ms),
        request_size: 1 << 20,
        ..ClientOptions::default()
    }
}

/// A client connected to a scripted server.
pub async fn scripted<F, Fut>(
    contexts: &[&str],
    opts: ClientOptions,
    script: F,
) -> (Result<Client, NbdError>, JoinHandle<()>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (a, b) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(script(Peer { io: b }));
    let c = Client::connect_stream(a, "scripted", "disk", contexts, opts).await;
    (c, task)
}
