//! QMP, the QEMU Machine Protocol (`docs/interop/qmp-spec.rst` of QEMU):
//! the client xfull uses to drive a running QEMU or qemu-storage-daemon
//! for a backup of its disks in pull mode.
//!
//! Self-contained like [`crate::nbd`]: it knows nothing of repositories
//! or backups (only std, tokio, serde_json and thiserror).
//!
//! Map: [`wire`] decodes what the server sends (a pure function, fuzzed),
//! [`client`] is the connection (greeting, capabilities, commands by id,
//! events), [`blockdev`] the typed block-layer calls xfull needs (nodes,
//! dirty bitmaps, jobs), and [`pull`] sets up and tears down the
//! point-in-time NBD view of a set of disks that a backup reads.
//!
//! Trust: the server is the hypervisor of the VM being backed up, so it
//! is trusted with the disks' contents, but not to be well-formed: a line
//! is bounded before it is parsed, unknown or malformed messages are
//! errors naming the socket, and a silent server runs into a timeout.

pub mod blockdev;
pub mod client;
pub mod error;
pub mod pull;
pub mod wire;

pub use blockdev::{BitmapInfo, NodeInfo};
pub use client::Qmp;
pub use error::QmpError;
pub use pull::{DiskRequest, PullDisk, PullOptions, PullSession};
