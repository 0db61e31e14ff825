//! xfull core: the repository format and the backup and restore engine.
//!
//! A *point* is an express-full backup of a VM: each disk is a full image
//! when restored, yet only what changed is stored. Disks are cut into fixed
//! *segments*; each segment into content-defined *chunks* (FastCDC v2020),
//! named by their BLAKE3 and stored zstd-compressed, once. A *node* lists a
//! segment's chunks (and zero runs); a *manifest* lists a point's disks and
//! their segments' nodes. See `docs/design.md` in the repository for the
//! formats, the measurements behind the constants, and the concurrency
//! protocol.
//!
//! Map of the crate:
//! - storage seam: [`backend`] (trait and errors), [`placement`] (where
//!   chunk bytes live), [`keys`] (the key space), [`frame`] (object framing)
//! - formats: [`config`], [`node`], [`manifest`], [`id`], [`names`]
//! - engine: [`chunker`], [`source`], [`backup`], [`restore`], [`repo`]

pub mod archive;
pub mod backend;
pub mod backup;
pub mod changes;
pub mod chunker;
pub mod client_record;
pub mod codec;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod copy;
pub mod crypto;
pub mod damage;
pub mod diff;
pub mod error;
pub mod frame;
pub mod gc;
pub mod host;
pub mod id;
pub mod image_format;
pub mod image_hash;
pub mod keys;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod names;
pub mod nbd;
pub mod node;
pub mod placement;
pub mod point_objects;
pub mod point_spec;
pub mod progress;
pub mod prune;
pub mod qmp;
pub mod removed;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod serve;
pub mod session;
#[cfg(test)]
mod session_tests;
pub mod source;
pub(crate) mod spilled_set;
pub mod stats;
mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod thaw;
pub mod verify;

pub use async_trait::async_trait;
pub use error::{Error, Result};
