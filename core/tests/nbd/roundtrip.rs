//! Our client against our server: random reads (property test) over
//! several request sizes and in-flight bounds, holes, block status.

use std::sync::Arc;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use xfull_core::nbd::{
    BASE_ALLOCATION, Client, ClientOptions, Export, Extent, STATE_HOLE, STATE_ZERO, ServerOptions,
};

use crate::exports::{FileExport, MemExport};
use crate::tools::{random_bytes, serve, write_at};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn random_reads_match_the_export() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // An odd size: the last request is short.
    let data = random_bytes((8 << 20) + 1234, 7);
    let export: Arc<dyn Export> = MemExport::new("mem", data.clone(), false);
    let _guard = rt.enter();
    let served = serve(dir.path(), vec![export], ServerOptions::default());
    let uri = served.uri("mem");
    let variants = [
        (4096, 1, 4096),
        (65536, 4, 1 << 20),
        (1 << 20, 16, 32 << 20),
        (3 << 20, 2, 1 << 20),
    ];
    for (request_size, max_requests, max_bytes) in variants {
        let opts = ClientOptions {
            request_size,
            max_requests,
            max_bytes,
            ..ClientOptions::default()
        };
        let client = rt.block_on(Client::connect_with(&uri, &[], opts)).unwrap();
        assert_eq!(client.size(), data.len() as u64);
        assert!(client.is_read_only());
        let whole = rt.block_on(client.read(0, data.len())).unwrap();
        assert!(
            whole[..] == data[..],
            "whole read with request size {request_size}"
        );
        let size = data.len() as u64;
        let strategy =
            (0..size).prop_flat_map(move |off| (Just(off), 0..=(size - off).min(3 << 20)));
        let mut runner = TestRunner::new(Config {
            cases: 64,
            ..Config::default()
        });
        runner
            .run(&strategy, |(off, len)| {
                let want = &data[off as usize..(off + len) as usize];
                let got = rt.block_on(client.read(off, len as usize)).unwrap();
                prop_assert!(got[..] == *want);
                // The same range as an ordered stream of pieces.
                let streamed: Vec<(u64, bytes::Bytes)> = rt.block_on(
                    client
                        .read_stream(off..off + len)
                        .map(|p| p.unwrap())
                        .collect(),
                );
                let mut at = off;
                for (o, b) in &streamed {
                    prop_assert_eq!(*o, at);
                    at += b.len() as u64;
                }
                prop_assert_eq!(at, off + len);
                prop_assert!(
                    streamed
                        .iter()
                        .flat_map(|(_, b)| b.iter().copied())
                        .eq(want.iter().copied())
                );
                for (_, b) in streamed {
                    client.recycle(b);
                }
                Ok(())
            })
            .unwrap();
        rt.block_on(client.close()).unwrap();
    }
    rt.block_on(served.stop());
}

#[test]
fn holes_and_block_status_round_trip() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    let size = 16u64 << 20;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    // Data runs at 4 KiB-aligned places, holes between.
    let runs = [
        (0u64, 65536u64),
        (1 << 20, 4096),
        ((5 << 20) + 8192, 300 << 10),
        (size - 4096, 4096),
    ];
    let mut image = vec![0u8; size as usize];
    for (i, (off, len)) in runs.iter().enumerate() {
        let b = random_bytes(*len as usize, i as u64 + 1);
        write_at(&path, *off, &b);
        image[*off as usize..(*off + *len) as usize].copy_from_slice(&b);
    }
    let _guard = rt.enter();
    let served = serve(
        dir.path(),
        vec![FileExport::open("f", &path)],
        ServerOptions::default(),
    );
    let client = rt
        .block_on(Client::connect(&served.uri("f"), &[BASE_ALLOCATION]))
        .unwrap();
    // Reads across data and holes: the server sends hole chunks.
    let got = rt.block_on(client.read(0, size as usize)).unwrap();
    assert!(got[..] == image[..]);
    let got = rt.block_on(client.read((1 << 20) - 10, 5000)).unwrap();
    assert!(got[..] == image[(1 << 20) - 10..(1 << 20) - 10 + 5000]);
    // Block status: exactly the data runs, holes flagged.
    let extents = rt
        .block_on(client.block_status(BASE_ALLOCATION, 0..size))
        .unwrap();
    let mut expect = Vec::new();
    let mut at = 0;
    for (off, len) in runs {
        if off > at {
            expect.push(Extent {
                len: off - at,
                flags: STATE_HOLE | STATE_ZERO,
            });
        }
        expect.push(Extent { len, flags: 0 });
        at = off + len;
    }
    assert_eq!(extents, expect);
    // A sub-range, unaligned.
    let sub = rt
        .block_on(client.block_status(BASE_ALLOCATION, 1000..(1 << 20) + 10))
        .unwrap();
    assert_eq!(
        sub,
        vec![
            Extent {
                len: 65536 - 1000,
                flags: 0
            },
            Extent {
                len: (1 << 20) - 65536,
                flags: STATE_HOLE | STATE_ZERO
            },
            Extent { len: 10, flags: 0 },
        ]
    );
    rt.block_on(client.flush()).unwrap();
    rt.block_on(client.close()).unwrap();
    rt.block_on(served.stop());
}

#[test]
fn several_exports_and_clients_at_once() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let a = random_bytes(3 << 20, 11);
    let b = random_bytes(5 << 20, 12);
    let _guard = rt.enter();
    let served = serve(
        dir.path(),
        vec![
            MemExport::new("a", a.clone(), false),
            MemExport::new("b", b.clone(), false),
        ],
        ServerOptions::default(),
    );
    let exports = rt.block_on(Client::list_exports(&served.uri(""))).unwrap();
    assert_eq!(exports, vec!["a".to_string(), "b".to_string()]);
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (name, want) = if i % 2 == 0 {
                ("a", a.clone())
            } else {
                ("b", b.clone())
            };
            let uri = served.uri(name);
            tasks.push(tokio::spawn(async move {
                let c = Client::connect(&uri, &[]).await.unwrap();
                let got = c.read(0, want.len()).await.unwrap();
                c.close().await.unwrap();
                got[..] == want[..]
            }));
        }
        let mut ok = Vec::new();
        for t in tasks {
            ok.push(t.await.unwrap());
        }
        ok
    });
    assert!(results.iter().all(|ok| *ok));
    // The empty name is no export when there are several: the error
    // lists them.
    let e = rt
        .block_on(Client::connect(&served.uri(""), &[]))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("no export") && msg.contains("\"a\"") && msg.contains("\"b\""),
        "{msg}"
    );
    rt.block_on(served.stop());
}
