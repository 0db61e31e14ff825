//! `xfull serve` and clients that go away or stall: a client gone in the
//! middle of a request or of the handshake ends its own connection only
//! (the server goes on serving the next client right, and still stops
//! cleanly, releasing its lease); a client that stops reading its replies
//! does not keep the server from stopping on SIGTERM.
//!
//! The clients are written here on raw sockets, so each goes away at an
//! exact point of the protocol rather than wherever a killed tool was.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use xfull_core::nbd::proto::*;
use xfull_integration::env::Env;

use crate::serve::{Fill, MIB, Served, b3, backed_up, leases_of, ok, socket};

/// 24 MiB of random data: replies far larger than a socket's buffers.
const IMAGE: &[(Fill, u64)] = &[(Fill::Random(21), 24)];

/// A client on a raw unix socket, speaking just enough NBD (fixed
/// newstyle, `NBD_OPT_GO`, simple replies) to leave at a chosen point.
pub(crate) struct RawClient(pub(crate) UnixStream);

impl RawClient {
    pub(crate) fn connect(sock: &str) -> RawClient {
        RawClient(UnixStream::connect(sock).unwrap())
    }

    /// Reads the server's greeting and answers with the client flags.
    fn greet(&mut self) {
        let mut g = [0u8; 18];
        self.0.read_exact(&mut g).unwrap();
        assert_eq!(g[..8], NBDMAGIC.to_be_bytes());
        let flags = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
        self.0.write_all(&flags.to_be_bytes()).unwrap();
    }

    /// The header of an option carrying `len` bytes of data.
    fn option_header(&mut self, option: u32, len: u32) {
        let mut h = IHAVEOPT.to_be_bytes().to_vec();
        h.extend_from_slice(&option.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        self.0.write_all(&h).unwrap();
    }

    /// Greets, then `NBD_OPT_GO` for the default export; returns its size.
    pub(crate) fn handshake(&mut self) -> u64 {
        self.greet();
        // Export name "" and no information requests.
        self.option_header(OPT_GO, 6);
        self.0.write_all(&[0; 6]).unwrap();
        let mut size = None;
        loop {
            let mut h = [0u8; 20];
            self.0.read_exact(&mut h).unwrap();
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut data = vec![0u8; len as usize];
            self.0.read_exact(&mut data).unwrap();
            match kind {
                REP_ACK => return size.expect("NBD_INFO_EXPORT before the ACK"),
                REP_INFO if data[..2] == INFO_EXPORT.to_be_bytes() => {
                    size = Some(u64::from_be_bytes(data[2..10].try_into().unwrap()));
                }
                REP_INFO => {}
                other => panic!(
                    "option reply {other:#x}: {}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
    }

    fn read_request(&mut self, cookie: u64, offset: u64, len: u32) {
        self.request(CMD_READ, cookie, offset, len);
    }

    /// A request header without flags (a write's payload is sent apart).
    pub(crate) fn request(&mut self, command: u16, cookie: u64, offset: u64, len: u32) {
        let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&command.to_be_bytes());
        r.extend_from_slice(&cookie.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        self.0.write_all(&r).unwrap();
    }

    /// Reads `n` bytes of what the server sent.
    pub(crate) fn take(&mut self, n: usize) {
        let mut buf = vec![0u8; n];
        self.0.read_exact(&mut buf).unwrap();
    }
}

/// The server is still whole: a new client copies the image right, and
/// SIGTERM stops it as usual (exit 130, no panic, its lease gone).
fn still_serves_then_stops(
    e: &Env,
    s: Served,
    restored: &std::path::Path,
    leases: &[std::path::PathBuf],
) {
    let copy = e.path("copy.img");
    ok(&["nbdcopy", &s.uris[0], copy.to_str().unwrap()]);
    assert_eq!(b3(&copy), b3(restored), "the next client reads right");
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(leases_of(e), leases, "the lease is released: {err}");
}

#[test]
fn a_client_gone_mid_request_ends_its_own_connection_only() {
    let (e, restored) = backed_up(IMAGE);
    let sock = socket(&e);
    let leases = leases_of(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock, "--verbose"], 1);
    // Asks for the whole disk in 8 MiB reads and leaves without reading.
    let mut c = RawClient::connect(&sock);
    assert_eq!(c.handshake(), 24 * MIB);
    for i in 0..3 {
        c.read_request(i, i * 8 * MIB, (8 * MIB) as u32);
    }
    drop(c);
    // Leaves halfway through a reply of 16 MiB, with a second request
    // queued behind it.
    let mut c = RawClient::connect(&sock);
    c.handshake();
    c.read_request(1, 0, (16 * MIB) as u32);
    c.read_request(2, 16 * MIB, (8 * MIB) as u32);
    c.take(16 + (4 * MIB) as usize);
    drop(c);
    // Leaves after sending half a request header.
    let mut c = RawClient::connect(&sock);
    c.handshake();
    c.0.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(c);
    still_serves_then_stops(&e, s, &restored, &leases);
}

#[test]
fn a_client_gone_during_the_handshake_ends_its_own_connection_only() {
    let (e, restored) = backed_up(IMAGE);
    let sock = socket(&e);
    let leases = leases_of(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    // Before the greeting is read.
    drop(RawClient::connect(&sock));
    // After the greeting, without the client flags.
    let mut c = RawClient::connect(&sock);
    c.take(18);
    drop(c);
    // Half an option header.
    let mut c = RawClient::connect(&sock);
    c.greet();
    c.0.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
    drop(c);
    // An option announcing more data than it sends.
    let mut c = RawClient::connect(&sock);
    c.greet();
    c.option_header(OPT_GO, 100);
    c.0.write_all(&[0; 10]).unwrap();
    drop(c);
    // GO sent, its replies never read.
    let mut c = RawClient::connect(&sock);
    c.greet();
    c.option_header(OPT_GO, 6);
    c.0.write_all(&[0; 6]).unwrap();
    drop(c);
    still_serves_then_stops(&e, s, &restored, &leases);
}

#[test]
fn a_client_that_stops_reading_does_not_keep_the_server_from_stopping() {
    let (e, _) = backed_up(IMAGE);
    let sock = socket(&e);
    let leases = leases_of(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    // Frozen or unplugged, as far as the server can tell: the socket
    // stays open and nothing more is read from it, so replies of 24 MiB
    // fill its buffers and the server's writes wait.
    let mut c = RawClient::connect(&sock);
    c.handshake();
    for i in 0..3 {
        c.read_request(i, i * 8 * MIB, (8 * MIB) as u32);
    }
    // A reply has begun: the server is writing to the stalled socket.
    c.take(16);
    // Another client idle in the handshake, after the greeting.
    let mut idle = RawClient::connect(&sock);
    idle.take(18);
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert_eq!(leases_of(&e), leases, "the lease is released: {err}");
    drop((c, idle));
}
