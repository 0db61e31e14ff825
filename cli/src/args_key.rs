//! Arguments of `xfull key` and of the new secrets it and `init` make.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::S3Args;

/// `xfull key ...`: the key slots of an encrypted repository. The current
/// secret (`--key-file`, `--password-command`, XFULL_PASSWORD_FILE,
/// XFULL_PASSWORD, a prompt) unlocks it; adding, removing and changing
/// slots need a full-access key.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots: id, access, kind, creation time, current.
    List(KeyListArgs),
    /// Add a key slot for a new password or key file.
    Add(KeyAddArgs),
    /// Remove a key slot (never the last full-access one).
    Remove(KeyRemoveArgs),
    /// Replace the slot of the current secret by one for a new secret.
    Passwd(KeyPasswdArgs),
}

impl KeyCommand {
    pub fn s3(&self) -> &S3Args {
        match self {
            KeyCommand::List(a) => &a.s3,
            KeyCommand::Add(a) => &a.s3,
            KeyCommand::Remove(a) => &a.s3,
            KeyCommand::Passwd(a) => &a.s3,
        }
    }
}

#[derive(Debug, Args)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// The new slot can back up (incremental too) but not read chunk
    /// data: restore and `verify --read-data` need a full-access key.
    #[arg(long)]
    pub backup_only: bool,
    #[command(flatten)]
    pub new: NewSecretArgs,
    #[command(flatten)]
    pub kdf: KdfArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The slot's id, as `xfull key list` shows it.
    pub slot: String,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct KeyPasswdArgs {
    #[command(flatten)]
    pub new: NewSecretArgs,
    #[command(flatten)]
    pub kdf: KdfArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// Where the new secret of `key add` and `key passwd` comes from; a
/// prompt asked twice when neither is given.
#[derive(Debug, Args)]
pub struct NewSecretArgs {
    /// Read the new password from this file (all of it, less one final
    /// line end: a second line is part of the password).
    #[arg(long, value_name = "PATH", conflicts_with = "new_key_file")]
    pub new_password_file: Option<PathBuf>,
    /// Make a new key file at PATH (create-only, mode 0600) instead.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: Option<PathBuf>,
}

/// argon2id costs of a new password slot. Hidden: the defaults are
/// measured (docs/design.md); tests lower them to keep hundreds of
/// commands fast.
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// argon2id memory in KiB.
    #[arg(long, hide = true, default_value_t = 64 * 1024)]
    pub kdf_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, hide = true, default_value_t = 6)]
    pub kdf_time: u32,
}

impl KdfArgs {
    pub fn params(&self) -> anyhow::Result<xfull_core::crypto::Argon2Params> {
        let p = xfull_core::crypto::Argon2Params {
            m_kib: self.kdf_memory_kib,
            t: self.kdf_time,
            p: 1,
        };
        p.check().map_err(xfull_core::Error::InvalidArgument)?;
        Ok(p)
    }
}
