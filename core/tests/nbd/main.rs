//! Tests of the NBD module (`xfull_core::nbd`) against the real tools:
//! the client against qemu-nbd and nbdkit, the server against nbdinfo,
//! nbdcopy, qemu-img and qemu-io, both against each other, against
//! scripted hostile peers, and the decoders against arbitrary bytes.
//! The tests start the tools themselves (`scripts/test` installs them).

mod client_nbdkit;
mod client_qemu;
mod decoders;
mod exports;
mod hostile;
mod hostile_handshake;
mod hostile_slow;
mod keepalive;
mod listen;
mod peer;
mod roundtrip;
mod server_idle;
mod server_raw;
mod server_tools;
mod server_work;
mod tools;
mod uri;
