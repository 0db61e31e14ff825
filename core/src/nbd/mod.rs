//! The NBD protocol (Network Block Device, `doc/proto.md` of
//! NetworkBlockDevice/nbd): a client to read running VMs' disks and QEMU
//! dirty bitmaps, and a server to expose backup points as exports.
//!
//! Self-contained: this module knows nothing of repositories or backups
//! (only std, tokio, bytes and thiserror), so the engine can use it both
//! ways without the protocol leaking into it.
//!
//! What is spoken:
//! - fixed newstyle handshake only (oldstyle servers are refused), no TLS
//!   (`nbds://` is refused: use a unix socket or an SSH tunnel);
//! - options: `STRUCTURED_REPLY`, `SET_META_CONTEXT`, `LIST_META_CONTEXT`,
//!   `GO`/`INFO` with `INFO_BLOCK_SIZE`, `LIST`, `ABORT`, and
//!   `EXPORT_NAME` as the fallback both sides still accept;
//! - commands: `READ` (structured or simple replies), `BLOCK_STATUS` for
//!   any negotiated context, `FLUSH`, `DISC`; the server also `WRITE`,
//!   `TRIM` and `WRITE_ZEROES` on writable exports.
//!
//! Map: [`uri`] (libnbd's URI syntax), [`proto`] (constants and fixed
//! headers), [`decode`] (every decoder of bytes from the peer: pure
//! functions, fuzzed), [`client`] and [`blocking`] (the pipelined client),
//! [`server`] and [`export`] (the server and what it serves).
//!
//! Trust: the peer may be hostile or broken. Every length read from the
//! socket is checked against what was asked before anything is allocated,
//! a silent peer runs into a timeout, and a protocol violation ends that
//! connection with an error naming the export and the offset.

pub mod blocking;
pub mod client;
mod client_list;
mod client_reader;
mod client_state;
mod conn;
pub mod decode;
pub mod error;
pub mod export;
mod handshake;
pub mod proto;
mod ranges;
pub mod server;
mod server_options;
mod server_replies;
mod server_requests;
mod unix_socket;
pub mod uri;

pub use blocking::BlockingClient;
pub use client::{Client, ClientOptions};
pub use error::{Errno, ExportError, NbdError};
pub use export::{Export, ReadPiece};
pub use server::{Listener, Server, ServerEvent, ServerOptions};
pub use uri::NbdUri;

/// The allocation context every server offers: which ranges are holes
/// ([`STATE_HOLE`]) and which read as zeros ([`STATE_ZERO`]).
pub const BASE_ALLOCATION: &str = "base:allocation";
/// `base:allocation`: the range is not allocated.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation`: the range reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:NAME`: the range was written since the bitmap began.
pub const STATE_DIRTY: u32 = 1;
/// The prefix of QEMU's dirty-bitmap contexts (and the query listing them).
pub const QEMU_DIRTY_BITMAP: &str = "qemu:dirty-bitmap:";

/// The context name for a QEMU dirty bitmap exported with `-B NAME` (or
/// libvirt's pull-mode backup).
pub fn dirty_bitmap_context(bitmap: &str) -> String {
    format!("{QEMU_DIRTY_BITMAP}{bitmap}")
}

/// A run of bytes sharing one status in a metadata context. What `flags`
/// means depends on the context (`STATE_*` constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    pub flags: u32,
}

/// Appends an extent, merging it into the last one when the flags are
/// equal (servers may split runs; callers want them whole).
pub fn push_extent(extents: &mut Vec<Extent>, e: Extent) {
    if e.len == 0 {
        return;
    }
    match extents.last_mut() {
        Some(last) if last.flags == e.flags => last.len += e.len,
        _ => extents.push(e),
    }
}
