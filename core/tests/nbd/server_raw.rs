//! The server against a raw-bytes client: bad requests get error replies
//! and the connection goes on; broken framing ends only that connection.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, Client, Errno, Export, ServerEvent, ServerOptions};

use crate::exports::MemExport;
use crate::tools::{Served, random_bytes, serve};

struct Raw {
    s: UnixStream,
}

/// A reply: error number and data (structured chunks flattened).
#[derive(Debug, PartialEq)]
struct Answer {
    errno: u32,
    data: Vec<u8>,
}

impl Raw {
    async fn connect(served: &Served) -> Raw {
        let mut s = UnixStream::connect(&served.socket).await.unwrap();
        let mut g = [0u8; 18];
        s.read_exact(&mut g).await.unwrap();
        assert_eq!(
            &g[..16],
            &[&NBDMAGIC.to_be_bytes()[..], &IHAVEOPT.to_be_bytes()[..]].concat()[..]
        );
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .await
            .unwrap();
        Raw { s }
    }

    async fn option(&mut self, opt: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.s
            .write_all(&encode_option_header(opt, data.len() as u32))
            .await
            .unwrap();
        self.s.write_all(data).await.unwrap();
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 20];
            self.s.read_exact(&mut h).await.unwrap();
            let r = xfull_core::nbd::decode::option_reply(&h).unwrap();
            assert_eq!(r.option, opt);
            let mut d = vec![0u8; r.len as usize];
            self.s.read_exact(&mut d).await.unwrap();
            let last = r.reply == REP_ACK || r.reply & REP_FLAG_ERROR != 0;
            out.push((r.reply, d));
            if last {
                return out;
            }
        }
    }

    /// Handshake into transmission on `export`.
    async fn go(served: &Served, export: &str, structured: bool, allocation: bool) -> Raw {
        let mut r = Raw::connect(served).await;
        if structured {
            assert_eq!(r.option(OPT_STRUCTURED_REPLY, &[]).await[0].0, REP_ACK);
        }
        if allocation {
            let d = encode_meta_context_request(export, &[BASE_ALLOCATION]);
            let replies = r.option(OPT_SET_META_CONTEXT, &d).await;
            assert_eq!(replies.len(), 2, "{replies:?}");
        }
        let replies = r.option(OPT_GO, &encode_go_request(export, &[])).await;
        assert_eq!(replies.last().unwrap().0, REP_ACK);
        r
    }

    async fn send(&mut self, flags: u16, command: u16, cookie: u64, offset: u64, len: u32) {
        let h = RequestHeader {
            flags,
            command,
            cookie,
            offset,
            len,
        };
        self.s.write_all(&h.encode()).await.unwrap();
    }

    /// Reads one whole reply (all chunks until DONE).
    async fn answer(&mut self, cookie: u64, read_len: Option<u32>) -> Answer {
        let mut errno = 0;
        let mut data = Vec::new();
        loop {
            let mut b = [0u8; 16];
            self.s.read_exact(&mut b).await.unwrap();
            match xfull_core::nbd::decode::reply_start(&b).unwrap() {
                xfull_core::nbd::decode::ReplyStart::Simple { error, cookie: c } => {
                    assert_eq!(c, cookie);
                    if let (0, Some(n)) = (error, read_len) {
                        data = vec![0; n as usize];
                        self.s.read_exact(&mut data).await.unwrap();
                    }
                    return Answer { errno: error, data };
                }
                xfull_core::nbd::decode::ReplyStart::Structured {
                    flags,
                    kind,
                    cookie: c,
                } => {
                    assert_eq!(c, cookie);
                    let len = self.s.read_u32().await.unwrap();
                    let mut p = vec![0u8; len as usize];
                    self.s.read_exact(&mut p).await.unwrap();
                    match kind {
                        REPLY_TYPE_OFFSET_DATA => data.extend_from_slice(&p[8..]),
                        REPLY_TYPE_OFFSET_HOLE => {
                            let n = u32::from_be_bytes(p[8..12].try_into().unwrap());
                            data.extend(std::iter::repeat_n(0, n as usize));
                        }
                        REPLY_TYPE_BLOCK_STATUS => data.extend_from_slice(&p),
                        k if k & REPLY_TYPE_FLAG_ERROR != 0 => {
                            errno = xfull_core::nbd::decode::error_chunk(k, &p).unwrap().errno
                        }
                        _ => {}
                    }
                    if flags & REPLY_FLAG_DONE != 0 {
                        return Answer { errno, data };
                    }
                }
            }
        }
    }

    /// The server closed the connection.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b).await, Ok(0) | Err(_))
    }
}

fn exports(data: &[u8]) -> Vec<Arc<dyn Export>> {
    vec![
        MemExport::new("ro", data.to_vec(), false),
        MemExport::new("rw", data.to_vec(), true),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 3);
    let opts = ServerOptions {
        max_payload: 65536,
        ..ServerOptions::default()
    };
    let served = serve(dir.path(), exports(&data), opts);
    for structured in [true, false] {
        let mut r = Raw::go(&served, "ro", structured, false).await;
        let ok = |n: usize| Answer {
            errno: 0,
            data: data[..n].to_vec(),
        };
        r.send(0, CMD_READ, 1, 0, 4096).await;
        assert_eq!(r.answer(1, Some(4096)).await, ok(4096));
        // Past the end, larger than the maximum, unknown command and
        // flags: EINVAL.
        r.send(0, CMD_READ, 2, (1 << 20) - 10, 11).await;
        assert_eq!(r.answer(2, Some(11)).await.errno, Errno::EINVAL.0);
        r.send(0, CMD_READ, 3, u64::MAX - 5, 4096).await;
        assert_eq!(r.answer(3, Some(4096)).await.errno, Errno::EINVAL.0);
        r.send(0, CMD_READ, 4, 0, 65537).await;
        assert_eq!(r.answer(4, Some(65537)).await.errno, Errno::EINVAL.0);
        r.send(0, 99, 5, 0, 0).await;
        assert_eq!(r.answer(5, None).await.errno, Errno::EINVAL.0);
        r.send(CMD_FLAG_DF, CMD_READ, 6, 0, 512).await;
        assert_eq!(r.answer(6, Some(512)).await.errno, Errno::EINVAL.0);
        // Block status without a context.
        r.send(0, CMD_BLOCK_STATUS, 7, 0, 4096).await;
        assert_eq!(r.answer(7, None).await.errno, Errno::EINVAL.0);
        // Writes to a read-only export: EPERM, payload skipped.
        r.send(0, CMD_WRITE, 8, 0, 1000).await;
        r.s.write_all(&[0xee; 1000]).await.unwrap();
        assert_eq!(r.answer(8, None).await.errno, Errno::EPERM.0);
        r.send(0, CMD_TRIM, 9, 0, 4096).await;
        assert_eq!(r.answer(9, None).await.errno, Errno::EPERM.0);
        r.send(0, CMD_WRITE_ZEROES, 10, 0, 4096).await;
        assert_eq!(r.answer(10, None).await.errno, Errno::EPERM.0);
        // Still in step: a read works and the data was not touched.
        r.send(0, CMD_READ, 11, 0, 2000).await;
        assert_eq!(r.answer(11, Some(2000)).await, ok(2000));
        r.send(0, CMD_FLUSH, 12, 0, 0).await;
        assert_eq!(r.answer(12, None).await.errno, 0);
        r.send(0, CMD_DISC, 13, 0, 0).await;
        assert!(r.closed().await);
    }
    // A writable export: oversized and out-of-range writes are refused
    // with their payload skipped.
    let mut r = Raw::go(&served, "rw", true, true).await;
    r.send(0, CMD_WRITE, 1, 0, 70000).await;
    r.s.write_all(&vec![1u8; 70000]).await.unwrap();
    assert_eq!(r.answer(1, None).await.errno, Errno::EINVAL.0);
    r.send(0, CMD_WRITE, 2, (1 << 20) - 100, 200).await;
    r.s.write_all(&[2u8; 200]).await.unwrap();
    assert_eq!(r.answer(2, None).await.errno, Errno::ENOSPC.0);
    r.send(CMD_FLAG_FUA, CMD_WRITE, 3, 100, 3).await;
    r.s.write_all(&[7, 8, 9]).await.unwrap();
    assert_eq!(r.answer(3, None).await.errno, 0);
    r.send(CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 4, 0, 4096)
        .await;
    assert_eq!(r.answer(4, None).await.errno, Errno::EINVAL.0);
    r.send(0, CMD_READ, 5, 99, 5).await;
    let mut want = data[99..104].to_vec();
    want[1..4].copy_from_slice(&[7, 8, 9]);
    assert_eq!(r.answer(5, Some(5)).await.data, want);
    // Block status: one descriptor (context id, length, flags), and
    // REQ_ONE is honoured.
    r.send(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 6, 4096, 8192)
        .await;
    let a = r.answer(6, None).await;
    assert_eq!(a.data.len(), 12);
    assert_eq!(u32::from_be_bytes(a.data[4..8].try_into().unwrap()), 8192);
    r.send(0, CMD_BLOCK_STATUS, 7, 0, 0).await;
    assert_eq!(r.answer(7, None).await.errno, Errno::EINVAL.0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_options() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(65536, 4);
    let served = serve(dir.path(), exports(&data), ServerOptions::default());
    let mut r = Raw::connect(&served).await;
    // Unknown options and TLS: unsupported, negotiation goes on.
    assert_eq!(
        r.option(99, b"whatever").await,
        vec![(REP_ERR_UNSUP, vec![])]
    );
    assert_eq!(r.option(OPT_STARTTLS, &[]).await[0].0, REP_ERR_UNSUP);
    // Contexts need structured replies first.
    let d = encode_meta_context_request("ro", &[BASE_ALLOCATION]);
    assert_eq!(
        r.option(OPT_SET_META_CONTEXT, &d).await[0].0,
        REP_ERR_INVALID
    );
    assert_eq!(
        r.option(OPT_STRUCTURED_REPLY, b"x").await[0].0,
        REP_ERR_INVALID
    );
    assert_eq!(r.option(OPT_STRUCTURED_REPLY, &[]).await[0].0, REP_ACK);
    // Listing contexts: "base:" and no query list base:allocation.
    for q in [&["base:"][..], &[][..], &["qemu:dirty-bitmap:"][..]] {
        let d = encode_meta_context_request("ro", q);
        let replies = r.option(OPT_LIST_META_CONTEXT, &d).await;
        let names: Vec<String> = replies
            .iter()
            .filter(|(t, _)| *t == REP_META_CONTEXT)
            .map(|(_, d)| String::from_utf8_lossy(&d[4..]).into_owned())
            .collect();
        let want: Vec<String> = if q == ["qemu:dirty-bitmap:"] {
            vec![]
        } else {
            vec![BASE_ALLOCATION.into()]
        };
        assert_eq!(names, want, "query {q:?}");
    }
    // Malformed option data and unknown exports.
    assert_eq!(
        r.option(OPT_GO, &[0, 0, 0, 50, 1]).await[0].0,
        REP_ERR_INVALID
    );
    let replies = r.option(OPT_INFO, &encode_go_request("nope", &[])).await;
    assert_eq!(replies[0].0, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&replies[0].1).contains("nope"));
    // INFO then LIST, then into transmission the old way.
    let replies = r
        .option(OPT_INFO, &encode_go_request("rw", &[INFO_NAME]))
        .await;
    assert_eq!(replies.iter().filter(|(t, _)| *t == REP_INFO).count(), 3);
    let replies = r.option(OPT_LIST, &[]).await;
    assert_eq!(replies.len(), 3);
    r.s.write_all(&encode_option_header(OPT_EXPORT_NAME, 2))
        .await
        .unwrap();
    r.s.write_all(b"ro").await.unwrap();
    let size = r.s.read_u64().await.unwrap();
    let flags = r.s.read_u16().await.unwrap();
    assert_eq!(size, 65536);
    assert_ne!(flags & TFLAG_READ_ONLY, 0);
    r.send(0, CMD_READ, 1, 10, 10).await;
    assert_eq!(r.answer(1, Some(10)).await.data, data[10..20].to_vec());

    // ABORT ends politely.
    let mut r = Raw::connect(&served).await;
    assert_eq!(r.option(OPT_ABORT, &[]).await[0].0, REP_ACK);
    assert!(r.closed().await);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_clients_end_only_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(4 << 20, 5);
    let served = serve(dir.path(), exports(&data), ServerOptions::default());
    let good = Client::connect(&served.uri("ro"), &[]).await.unwrap();

    // Bad request magic: hard disconnect.
    let mut r = Raw::go(&served, "ro", true, false).await;
    r.s.write_all(&[0xAB; 28]).await.unwrap();
    assert!(r.closed().await);
    // A huge option: closed before it is read.
    let mut r = Raw::connect(&served).await;
    r.s.write_all(&encode_option_header(OPT_GO, 1 << 30))
        .await
        .unwrap();
    assert!(r.closed().await);
    // Unknown client flags.
    let mut s = UnixStream::connect(&served.socket).await.unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).await.unwrap();
    s.write_all(&0x80u32.to_be_bytes()).await.unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(s.read(&mut b).await, Ok(0) | Err(_)));
    // Clients that leave with requests in flight.
    for _ in 0..4 {
        let mut r = Raw::go(&served, "ro", true, false).await;
        for i in 0..8 {
            r.send(0, CMD_READ, i, 0, 4 << 20).await;
        }
        drop(r);
    }
    // An EXPORT_NAME for an unknown export is answered by closing.
    let mut r = Raw::connect(&served).await;
    r.s.write_all(&encode_option_header(OPT_EXPORT_NAME, 4))
        .await
        .unwrap();
    r.s.write_all(b"nope").await.unwrap();
    assert!(r.closed().await);

    // The server and the other client carry on.
    assert!(good.read(0, data.len()).await.unwrap()[..] == data[..]);
    let again = Client::connect(&served.uri("ro"), &[]).await.unwrap();
    assert!(again.read(1, 1000).await.unwrap()[..] == data[1..1001]);
    good.close().await.unwrap();
    again.close().await.unwrap();
    let events = served.events.lock().unwrap().clone();
    let errors: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Disconnected { error: Some(e), .. } => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("bad request magic")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("1073741824 bytes")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("unknown client flags")),
        "{errors:?}"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_nothing_but_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 6);
    let served = serve(dir.path(), exports(&data), ServerOptions::default());
    // One client idle in transmission, one idle in negotiation.
    let idle = Client::connect(&served.uri("ro"), &[]).await.unwrap();
    let mut negotiating = Raw::connect(&served).await;
    let socket = served.socket.clone();
    served.stop().await;
    assert!(negotiating.closed().await);
    assert!(idle.read(0, 10).await.is_err());
    assert!(!socket.exists(), "the socket file is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_client_stalled_mid_payload() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), exports(&[0; 65536]), ServerOptions::default());
    let mut r = Raw::go(&served, "rw", true, false).await;
    // A write whose payload never comes.
    r.send(0, CMD_WRITE, 1, 0, 4096).await;
    r.s.write_all(&[1; 100]).await.unwrap();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), served.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited for the stalled client");
    assert!(r.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), exports(&[0; 4096]), ServerOptions::default());
    let mode = std::fs::metadata(&served.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "socket mode {mode:o}: other users could read the exports"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_handler_set_on_a_clone() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        xfull_core::nbd::Server::new(exports(&[0; 4096]), ServerOptions::default()).unwrap();
    let _kept = server.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let server = server.on_event(move |e| s2.lock().unwrap().push(e));
    let socket = dir.path().join("s.sock");
    let listener = xfull_core::nbd::Listener::bind_unix(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
    });
    let c = Client::connect(&xfull_core::nbd::NbdUri::unix(&socket, "ro"), &[])
        .await
        .unwrap();
    c.close().await.unwrap();
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ServerEvent::Connected { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_the_limit_are_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        max_clients: 2,
        ..ServerOptions::default()
    };
    let served = serve(dir.path(), exports(&[5; 4096]), opts);
    let a = Client::connect(&served.uri("ro"), &[]).await.unwrap();
    let b = Client::connect(&served.uri("ro"), &[]).await.unwrap();
    let e = Client::connect(&served.uri("ro"), &[]).await.unwrap_err();
    assert!(e.to_string().contains("closed the connection"), "{e}");
    a.close().await.unwrap();
    // The slot frees once the server has seen the first client go.
    let mut c = None;
    for _ in 0..500 {
        if let Ok(ok) = Client::connect(&served.uri("ro"), &[]).await {
            c = Some(ok);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let c = c.expect("a slot for a new client");
    assert_eq!(&c.read(0, 3).await.unwrap()[..], &[5, 5, 5]);
    assert!(b.read(0, 1).await.is_ok());
    let events = served.events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "{events:?}"
    );
    served.stop().await;
}
