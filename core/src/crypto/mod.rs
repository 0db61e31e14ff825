//! Client-side encryption: keys, key slots, sealing, secret sources (see
//! `docs/design.md`, "Encryption"; `crate::codec` wires them into the
//! format). The seams:
//! - ids: every content id comes from one [`IdHasher`] (plain BLAKE3 for
//!   `--encryption none`, keyed BLAKE3 otherwise);
//! - metadata (nodes, manifests, indexes, leases, markers):
//!   [`MasterKeys::seal_meta`] / [`MasterKeys::open_meta`] around the
//!   framed bytes, with the object's key as its name;
//! - chunk data: one [`DataSealer`] per writer, [`DataOpener`] to read
//!   (full-access keys only: [`Error::MissingCapability`] otherwise);
//! - opening a repository: [`create_keys`] in `init`, [`unlock`] in open,
//!   with a [`Secret`] from [`SecretSources::resolve`];
//! - a config rewritten to say "unencrypted": [`downgrade`] (key slots
//!   beside it) and [`SeenEncrypted`] (the client's record).
//!
//! [`Error::MissingCapability`]: crate::error::Error::MissingCapability

mod cbor_bytes;
pub mod data;
pub mod downgrade;
pub mod id_hasher;
pub mod keyfile;
pub mod manage;
#[cfg(test)]
mod manage_tests;
#[cfg(test)]
mod manage_write_tests;
pub mod master;
pub mod password;
mod password_command;
pub mod prompt;
pub mod seal;
mod seal_gcm;
pub mod secret;
pub mod seen;
pub mod slot;

pub use data::{DataCipher, DataOpener, DataPublicKey, DataSealer, DataSecretKey};
pub use id_hasher::IdHasher;
pub use manage::{
    SlotInfo, add_slot, change_secret, create_keys, create_keys_like, list_slots, remove_slot,
    unlock, unlock_listed,
};
pub use master::{Access, MasterKeys};
pub use password::{SecretSources, SourceNames};
pub use seal::{SealKind, open, seal};
pub use secret::{Secret, SecretKey, SecretKind};
pub use seen::SeenEncrypted;
pub use slot::{Argon2Params, KeySlot};
