//! The client against nbdkit: block-size constraints, sparse plugins,
//! injected errors (the error names the offset), slow servers, and a
//! server without structured replies.

use xfull_core::nbd::{
    BASE_ALLOCATION, Client, ClientOptions, Errno, Extent, NbdError, NbdUri, STATE_HOLE, STATE_ZERO,
};

use crate::tools::nbdkit;

/// nbdkit's `pattern` plugin: each 8-byte word holds its own offset.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|p| (p / 8 * 8).to_be_bytes()[(p % 8) as usize])
        .collect()
}

fn opts(request_size: u32) -> ClientOptions {
    ClientOptions {
        request_size,
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_advertised_block_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // The filter refuses (EINVAL) any request breaking the constraints.
    let (_srv, sock) = nbdkit(
        dir.path(),
        &[
            "--filter=blocksize-policy",
            "pattern",
            "size=8M",
            "blocksize-minimum=4096",
            "blocksize-preferred=16384",
            "blocksize-maximum=65536",
            "blocksize-error-policy=error",
        ],
    );
    let c = Client::connect_with(&NbdUri::unix(&sock, ""), &[BASE_ALLOCATION], opts(1 << 20))
        .await
        .unwrap();
    assert_eq!(c.block_sizes(), (4096, 16384, 65536));
    for (off, len) in [
        (0u64, 4096usize),
        (1, 1),
        (4095, 2),
        (100_000, 1 << 20),
        ((8 << 20) - 5000, 5000),
    ] {
        let got = c.read(off, len).await.unwrap();
        assert!(got[..] == pattern(off, len)[..], "read {off}+{len}");
    }
    let map = c
        .block_status(BASE_ALLOCATION, 10..(8 << 20) - 10)
        .await
        .unwrap();
    assert_eq!(map.iter().map(|e| e.len).sum::<u64>(), (8 << 20) - 20);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_plugins_show_holes() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, msock) = nbdkit(dir.path(), &["memory", "8M"]);
    let c = Client::connect(&NbdUri::unix(&msock, ""), &[BASE_ALLOCATION])
        .await
        .unwrap();
    let map = c.block_status(BASE_ALLOCATION, 0..8 << 20).await.unwrap();
    assert_eq!(
        map,
        vec![Extent {
            len: 8 << 20,
            flags: STATE_HOLE | STATE_ZERO
        }]
    );
    assert!(c.read(0, 1 << 20).await.unwrap().iter().all(|b| *b == 0));
    c.flush().await.unwrap();
    c.close().await.unwrap();

    let (_d, dsock) = nbdkit(dir.path(), &["data", "1 2 3 @4194304 4 5 6", "size=8M"]);
    let c = Client::connect(&NbdUri::unix(&dsock, ""), &[BASE_ALLOCATION])
        .await
        .unwrap();
    let all = c.read(0, 8 << 20).await.unwrap();
    assert_eq!(&all[..3], &[1, 2, 3]);
    assert_eq!(&all[4 << 20..(4 << 20) + 3], &[4, 5, 6]);
    assert_eq!(all.iter().filter(|b| **b != 0).count(), 6);
    let map = c.block_status(BASE_ALLOCATION, 0..8 << 20).await.unwrap();
    let flags_at = |pos: u64| {
        let mut at = 0;
        map.iter()
            .find(|e| {
                at += e.len;
                pos < at
            })
            .unwrap()
            .flags
    };
    assert_eq!(flags_at(0) & STATE_HOLE, 0, "{map:?}");
    assert_eq!(flags_at(4 << 20) & STATE_HOLE, 0, "{map:?}");
    assert_eq!(flags_at(2 << 20), STATE_HOLE | STATE_ZERO, "{map:?}");
    assert_eq!(flags_at((8 << 20) - 1), STATE_HOLE | STATE_ZERO, "{map:?}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_name_the_offset_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, sock) = nbdkit(
        dir.path(),
        &[
            "--filter=error",
            "pattern",
            "size=16M",
            "error-pread-rate=100%",
        ],
    );
    let c = Client::connect(&NbdUri::unix(&sock, ""), &[BASE_ALLOCATION])
        .await
        .unwrap();
    let off = (5 << 20) + 123;
    let e = c.read(off, 1000).await.unwrap_err();
    match &e {
        NbdError::Command {
            offset,
            errno,
            command,
            ..
        } => {
            assert_eq!((*offset, *errno, *command), (off, Errno::EIO, "read"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains(&format!("offset {off}")), "{e}");
    // Other commands on the same connection still work.
    let map = c.block_status(BASE_ALLOCATION, 0..16 << 20).await.unwrap();
    assert_eq!(map.iter().map(|e| e.len).sum::<u64>(), 16 << 20);
    c.close().await.unwrap();

    // Half the reads fail: each failure names its own offset, each
    // success has the right bytes.
    let (_srv2, sock2) = nbdkit(
        dir.path(),
        &[
            "--filter=error",
            "pattern",
            "size=16M",
            "error-pread-rate=50%",
        ],
    );
    let c = Client::connect(&NbdUri::unix(&sock2, ""), &[])
        .await
        .unwrap();
    let (mut good, mut bad) = (0, 0);
    for i in 0..48u64 {
        let off = i * 300_000;
        match c.read(off, 65536).await {
            Ok(b) => {
                assert!(b[..] == pattern(off, 65536)[..]);
                good += 1;
            }
            Err(NbdError::Command { offset, errno, .. }) => {
                assert_eq!((offset, errno), (off, Errno::EIO));
                bad += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(good > 0 && bad > 0, "{good} good, {bad} bad");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_range_fails_only_the_request_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = 5u64 << 20;
    let pread = format!(
        "if [ $4 -lt {} ] && [ $(($4 + $3)) -gt {bad} ]; then echo 'EIO bad sector' >&2; exit 1; fi; \
         dd if=/dev/zero count=$3 iflag=count_bytes status=none",
        bad + 4096
    );
    let (_srv, sock) = nbdkit(
        dir.path(),
        &["eval", "get_size=echo 8M", &format!("pread={pread}")],
    );
    let c = Client::connect_with(&NbdUri::unix(&sock, ""), &[], opts(1 << 20))
        .await
        .unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let e = c.read_at(0, &mut buf).await.unwrap_err();
    match e {
        NbdError::Command { offset, errno, .. } => assert_eq!((offset, errno), (bad, Errno::EIO)),
        other => panic!("{other}"),
    }
    assert!(
        c.read(4 << 20, 1 << 20)
            .await
            .unwrap()
            .iter()
            .all(|b| *b == 0)
    );
    assert!(c.read(bad + 4096, 1 << 20).await.is_ok());
    assert!(c.read(bad + 4095, 1).await.is_err());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_reads_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, sock) = nbdkit(
        dir.path(),
        &["--filter=delay", "pattern", "size=16M", "rdelay=200ms"],
    );
    let c = Client::connect_with(&NbdUri::unix(&sock, ""), &[], opts(1 << 20))
        .await
        .unwrap();
    let got = c.read(7, (16 << 20) - 7).await.unwrap();
    assert!(got[..] == pattern(7, (16 << 20) - 7)[..]);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_replies_when_the_server_has_no_structured_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, sock) = nbdkit(dir.path(), &["--no-sr", "pattern", "size=8M"]);
    let uri = NbdUri::unix(&sock, "");
    let c = Client::connect(&uri, &[]).await.unwrap();
    assert!(!c.structured_replies());
    let got = c.read(3, (8 << 20) - 3).await.unwrap();
    assert!(got[..] == pattern(3, (8 << 20) - 3)[..]);
    c.close().await.unwrap();
    let e = Client::connect(&uri, &[BASE_ALLOCATION]).await.unwrap_err();
    assert!(matches!(e, NbdError::Unsupported { .. }), "{e}");
}
