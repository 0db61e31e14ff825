//! One file per command; each stays thin: parse, call the engine, print.

pub mod backup;
pub mod copy;
pub mod diff;
pub mod forget;
pub mod gc;
pub mod index;
pub mod init;
pub mod key;
pub mod mount;
mod mountpoint;
pub mod points;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod serve;
mod serving;
pub mod shell;
pub mod show;
pub mod snapshot_diff;
pub mod stats;
pub mod thaw;
pub mod undelete;
pub mod verify;
