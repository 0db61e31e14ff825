//! Arguments naming a second repository: `copy --to TARGET` and `init
//! --like SOURCE`. Its location is a directory, `file:///dir`,
//! `s3://bucket/prefix` or `@NAME` (a profile, which may name its
//! secret); its secret has flags of its own, named after the flag that
//! names it (`--to-key-file`, `--from-key-file`), because `--key-file`,
//! `--password-command` and `XFULL_PASSWORD*` belong to `--repo`.

use std::path::PathBuf;

use clap::Args;

use crate::cli::S3Args;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Points to copy: VM@ID (a unique prefix or suffix of the id will
    /// do) or VM@latest; none: every point (of --vm), oldest first.
    pub points: Vec<String>,
    /// The repository to copy into (made with `xfull init --like` the
    /// source, --repo): a directory, file:///dir, s3://bucket/prefix or
    /// @NAME.
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// With no point named: every point of this VM only.
    #[arg(long, conflicts_with = "points")]
    pub vm: Option<String>,
    #[command(flatten)]
    pub to_secret: ToSecretArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// The secret of `--to`, if it is encrypted (else its profile's).
#[derive(Debug, Args)]
#[command(next_help_heading = "Encryption of the target")]
pub struct ToSecretArgs {
    /// Key file of the target (--to).
    #[arg(long, value_name = "PATH")]
    pub to_key_file: Option<PathBuf>,
    /// Command that prints the target's password (run with `sh -c`).
    #[arg(long, value_name = "CMD")]
    pub to_password_command: Option<String>,
    /// File holding the target's password (all of it, less one final
    /// line end).
    #[arg(long, value_name = "PATH")]
    pub to_password_file: Option<PathBuf>,
}

/// The secret of `init --like`'s source, if it is encrypted (else its
/// profile's).
#[derive(Debug, Args)]
#[command(next_help_heading = "Encryption of --like's source")]
pub struct FromSecretArgs {
    /// Key file of the repository --like names.
    #[arg(long, value_name = "PATH", requires = "like")]
    pub from_key_file: Option<PathBuf>,
    /// Command that prints the password of the repository --like names.
    #[arg(long, value_name = "CMD", requires = "like")]
    pub from_password_command: Option<String>,
    /// File holding the password of the repository --like names (all of
    /// it, less one final line end).
    #[arg(long, value_name = "PATH", requires = "like")]
    pub from_password_file: Option<PathBuf>,
}

/// A second repository's secret sources, whichever flags gave them.
#[derive(Debug, Default)]
pub struct OtherSecret {
    /// The flags' prefix, for messages (`to`, `from`).
    pub flag: &'static str,
    pub key_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl ToSecretArgs {
    pub fn sources(&self) -> OtherSecret {
        OtherSecret {
            flag: "to",
            key_file: self.to_key_file.clone(),
            password_command: self.to_password_command.clone(),
            password_file: self.to_password_file.clone(),
        }
    }
}

impl FromSecretArgs {
    pub fn sources(&self) -> OtherSecret {
        OtherSecret {
            flag: "from",
            key_file: self.from_key_file.clone(),
            password_command: self.from_password_command.clone(),
            password_file: self.from_password_file.clone(),
        }
    }
}
