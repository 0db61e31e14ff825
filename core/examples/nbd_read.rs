//! Reads a whole NBD export sequentially through xfull's client and
//! prints bytes and seconds: what `bench/nbd-read` measures against
//! `nbdcopy URI null:`.
//!
//! ```text
//! nbd_read URI [--segment BYTES] [--request-size BYTES] [--requests N]
//! ```
//!
//! Without `--segment`, the export is read with `Client::read_stream`
//! (up to N requests in flight ahead of the consumer, each piece dropped
//! once it arrived, as nbdcopy's `null:` does). With `--segment`, the export is read into one reused buffer of
//! that size at a time (`read_at`), as the backup reader reads segments.

use std::time::Instant;

use futures::StreamExt;
use xfull_core::nbd::{Client, ClientOptions, NbdUri};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: nbd_read URI [--segment BYTES] [--request-size BYTES] [--requests N]");
        std::process::exit(2);
    }
    let mut opts = ClientOptions::default();
    let mut segment = None;
    let mut i = 1;
    while i + 1 < args.len() {
        let v: u64 = args[i + 1].parse().expect("a number");
        match args[i].as_str() {
            "--segment" => segment = Some(v as usize),
            "--request-size" => opts.request_size = v as u32,
            "--requests" => opts.max_requests = v as usize,
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    opts.max_bytes = opts
        .max_bytes
        .max(opts.request_size.saturating_mul(opts.max_requests as u32));
    let uri = NbdUri::parse(&args[0]).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (bytes, secs) = rt.block_on(async {
        let client = Client::connect_with(&uri, &[], opts.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let size = client.size();
        let start = Instant::now();
        match segment {
            Some(seg) => {
                let mut buf = vec![0u8; seg];
                let mut at = 0;
                while at < size {
                    let n = (size - at).min(seg as u64) as usize;
                    client
                        .read_at(at, &mut buf[..n])
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    at += n as u64;
                }
            }
            None => {
                let mut pieces = std::pin::pin!(client.read_stream(0..size));
                while let Some(piece) = pieces.next().await {
                    let (_, data) = piece.unwrap_or_else(|e| panic!("{e}"));
                    client.recycle(data);
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        client.close().await.unwrap();
        (size, secs)
    });
    println!("{bytes} {secs:.3}");
}
