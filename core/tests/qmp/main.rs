//! Tests of the QMP module (`xfull_core::qmp`) against a real
//! qemu-storage-daemon, started by each test (`scripts/test` installs
//! qemu-utils): the connection and QEMU's errors, dirty bitmaps, and the
//! pull-mode view a backup reads, read back with xfull's NBD client.

mod client;
mod daemon;
mod pull;
mod teardown;
