//! The command line, as DESIGN.md's contract fixes it. Per-command
//! arguments are in [`crate::args`].

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

pub use crate::args::*;
pub use crate::args_copy::*;
pub use crate::args_index::*;
pub use crate::args_key::*;
pub use crate::serve_args::*;

#[derive(Debug, Parser)]
#[command(
    name = "xfull",
    about = "Express-full, deduplicated backups of virtual-machine disks",
    after_help = "Exit status: 0 ok, 1 error, 2 usage, 3 damage found, 130 interrupted.\n\
                  Profiles: -r @NAME reads [repositories.NAME] from the config file."
)]
pub struct Cli {
    /// Repository: a directory, file:///dir, s3://bucket/prefix, or @NAME
    /// for a profile of the config file.
    #[arg(short = 'r', long, env = "XFULL_REPO", global = true)]
    pub repo: Option<String>,

    /// Config file with profiles (default: $XDG_CONFIG_HOME/xfull/config.toml,
    /// else ~/.config/xfull/config.toml).
    #[arg(long, env = "XFULL_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Key file of an encrypted repository, instead of a password (`init`
    /// makes it if it does not exist).
    #[arg(long, global = true, value_name = "PATH", help_heading = "Encryption")]
    pub key_file: Option<PathBuf>,

    /// Command that prints the repository password (run with `sh -c`).
    /// Else XFULL_PASSWORD_FILE, XFULL_PASSWORD (weakest), a prompt.
    #[arg(long, global = true, value_name = "CMD", help_heading = "Encryption")]
    pub password_command: Option<String>,

    /// S3 options given before the command (also accepted after it).
    #[command(flatten)]
    pub s3: S3Args,

    /// Print one JSON document instead of text (errors too, on stderr).
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,

    /// Print only results and warnings: no progress, no notices.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output"
    )]
    pub quiet: bool,

    /// Print more detail (e.g. the point each disk of a backup is based on).
    #[arg(short, long, global = true, help_heading = "Output")]
    pub verbose: bool,

    /// No progress bar on a terminal, no progress lines elsewhere.
    #[arg(long, global = true, help_heading = "Output")]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// S3 settings; credentials come from the standard AWS chain. Not on
/// commands that do not open a repository.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "S3 options")]
pub struct S3Args {
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 for MinIO (path-style).
    /// Else a profile's s3_endpoint, else AWS_ENDPOINT_URL.
    // Not `env = "AWS_ENDPOINT_URL"`: clap would make the variable a flag,
    // winning over a profile's s3_endpoint (`profile::resolve_location`
    // reads it after the profile). The value may hold credentials
    // (http://key:secret@host): the help never shows it.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION or the AWS profile's).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// The server ignores If-None-Match: emulate create-only puts with HEAD
    /// then PUT (slower; two writers of one new key may race).
    #[arg(long)]
    pub s3_no_conditional_put: bool,
    /// Storage class of chunk objects (e.g. STANDARD_IA, GLACIER_IR,
    /// DEEP_ARCHIVE); nodes and manifests stay in the default class.
    #[arg(long, value_name = "CLASS",
          value_parser = PossibleValuesParser::new(xfull_s3::storage_classes().iter().copied()))]
    pub s3_storage_class_chunks: Option<String>,
    /// Server-side encryption.
    #[arg(long, value_parser = PossibleValuesParser::new(xfull_s3::SSE_VALUES.iter().copied()))]
    pub s3_sse: Option<String>,
    /// At most N requests per second to S3, retries included (providers
    /// throttle past a rate).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_requests_per_second: Option<u32>,
    /// At most SIZE uploaded to S3 per second, on average, retries
    /// included (e.g. 20M; at least 256K).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_upload_bytes_per_second: Option<u64>,
}

impl S3Args {
    /// `self` where given, else `other`.
    pub fn or(&self, other: &S3Args) -> S3Args {
        S3Args {
            s3_endpoint: self.s3_endpoint.clone().or(other.s3_endpoint.clone()),
            s3_region: self.s3_region.clone().or(other.s3_region.clone()),
            s3_no_conditional_put: self.s3_no_conditional_put || other.s3_no_conditional_put,
            s3_storage_class_chunks: self
                .s3_storage_class_chunks
                .clone()
                .or(other.s3_storage_class_chunks.clone()),
            s3_sse: self.s3_sse.clone().or(other.s3_sse.clone()),
            max_requests_per_second: self
                .max_requests_per_second
                .or(other.max_requests_per_second),
            max_upload_bytes_per_second: self
                .max_upload_bytes_per_second
                .or(other.max_upload_bytes_per_second),
        }
    }

    /// The request budget these options ask for.
    pub fn limits(&self) -> xfull_s3::Limits {
        xfull_s3::Limits {
            requests_per_second: self.max_requests_per_second.map(f64::from),
            upload_bytes_per_second: self.max_upload_bytes_per_second,
        }
    }
}

// By hand: the endpoint may hold credentials.
impl std::fmt::Debug for S3Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Args")
            .field(
                "s3_endpoint",
                &self.s3_endpoint.as_ref().map(|_| "(hidden)"),
            )
            .field("s3_region", &self.s3_region)
            .field("s3_no_conditional_put", &self.s3_no_conditional_put)
            .field("s3_storage_class_chunks", &self.s3_storage_class_chunks)
            .field("s3_sse", &self.s3_sse)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .field(
                "max_upload_bytes_per_second",
                &self.max_upload_bytes_per_second,
            )
            .finish()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (fails if one exists).
    Init(InitArgs),
    /// Back up a VM's disks as a new point.
    Backup(BackupArgs),
    /// List points (newest last), with filters.
    #[command(visible_aliases = ["snapshots", "ls"])]
    Points(PointsArgs),
    /// Show one point in detail.
    Show(ShowArgs),
    /// Restore one disk of a point to a file, a block device or stdout
    /// (--plan: list what it needs from an archive storage class).
    Restore(RestoreArgs),
    /// Ask an archive storage class (S3 GLACIER, DEEP_ARCHIVE) for readable
    /// copies of what restoring a point needs; run again to see progress.
    Thaw(ThawArgs),
    /// On an S3 bucket with versioning and object lock, take away the
    /// delete markers and unlocked versions that hide locked objects
    /// (after deletes or overwrites by someone else); no secret needed.
    Undelete(UndeleteArgs),
    /// Print the extents that differ between two points of one VM, from
    /// metadata.
    Diff(DiffArgs),
    /// Print the changed extents between two disk images, as JSON.
    SnapshotDiff(SnapshotDiffArgs),
    /// Copy points to a second repository made with `init --like` this one
    /// (another bucket, region, provider or disk): only what it lacks,
    /// every chunk checked on arrival; safe to interrupt and run again.
    Copy(CopyArgs),
    /// Remove points by a retention policy, then run gc.
    Prune(PruneArgs),
    /// Delete the nodes and packs no point references, rewrite wasteful
    /// packs (backups may run).
    Gc(GcArgs),
    /// Points per VM, logical and stored bytes, chunks, nodes.
    Stats(StatsArgs),
    /// Check that points are whole; exit 3 and list the damage if not.
    Verify(VerifyArgs),
    /// Remove damaged chunks, nodes and manifests (backups may run), store
    /// again what disk images hold; exit 3 if points stay damaged.
    Repair(RepairArgs),
    /// Remove the named points, even those whose manifest is damaged.
    Forget(ForgetArgs),
    /// Serve disks of a point over NBD (boot a VM from it, copy it, read
    /// it); --writable keeps writes in a local overlay.
    Serve(ServeArgs),
    /// Show points' disks as read-only image files (FUSE) under
    /// MOUNTPOINT/VM/ID/DISK.img and MOUNTPOINT/VM/latest/DISK.img.
    Mount(MountArgs),
    /// Manage the key slots of an encrypted repository: list, add, remove,
    /// passwd.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The chunk index (which pack holds each chunk): rebuild it from the
    /// packs.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Print a shell completion script (e.g. `xfull completions bash >
    /// /etc/bash_completion.d/xfull`).
    Completions(CompletionsArgs),
    /// Print the man page (roff) of xfull and its commands, e.g. `xfull man
    /// > /usr/local/share/man/man1/xfull.1`.
    Man(ManArgs),
}

impl Command {
    /// The S3 options given after the command, for commands that open a
    /// repository.
    fn s3(&self) -> Option<&S3Args> {
        Some(match self {
            Command::Init(a) => &a.s3,
            Command::Backup(a) => &a.s3,
            Command::Points(a) => &a.s3,
            Command::Show(a) => &a.s3,
            Command::Restore(a) => &a.s3,
            Command::Thaw(a) => &a.s3,
            Command::Undelete(a) => &a.s3,
            Command::Diff(a) => &a.s3,
            Command::Copy(a) => &a.s3,
            Command::Prune(a) => &a.s3,
            Command::Gc(a) => &a.s3,
            Command::Stats(a) => &a.s3,
            Command::Verify(a) => &a.s3,
            Command::Repair(a) => &a.s3,
            Command::Forget(a) => &a.s3,
            Command::Serve(a) => &a.s3,
            Command::Mount(a) => &a.s3,
            Command::Key(k) => k.s3(),
            Command::Index(c) => c.s3(),
            Command::SnapshotDiff(_) | Command::Completions(_) | Command::Man(_) => return None,
        })
    }
}

impl Cli {
    /// The S3 options: those after the command win over those before it.
    pub fn s3_flags(&self) -> S3Args {
        match self.command.s3() {
            Some(after) => after.or(&self.s3),
            None => self.s3.clone(),
        }
    }

    /// The repository as given (a location or `@profile`).
    pub fn repo(&self) -> anyhow::Result<&str> {
        let usage = |m: &str| anyhow::Error::new(xfull_core::Error::InvalidArgument(m.into()));
        match self.repo.as_deref() {
            None => Err(usage(
                "no repository given: use -r/--repo or set XFULL_REPO",
            )),
            // Empty would name the current directory: never meant.
            Some("") => Err(usage(
                "the repository is empty: give a directory, file:///dir or s3://bucket/prefix",
            )),
            Some(r) => Ok(r),
        }
    }
}

/// Parses `65536`, `64K`, `64KiB`, `16M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Splits `NAME=VALUE`.
/// `90`, `90s`, `10m`, `1h`: a number of seconds.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30s, 10m, 1h");
    let (num, mult) = match s.trim().char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        _ => (s.trim(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

pub fn split_pair<'a>(what: &str, s: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once('=').ok_or_else(|| {
        anyhow::Error::new(xfull_core::Error::InvalidArgument(format!(
            "{what} {s:?} must be NAME=VALUE"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help`, the man page and completions describe every flag.
    #[test]
    fn every_command_and_flag_has_a_description() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.get_help().is_none() && id != "help" && id != "version" {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() {
                    missing.push(format!("{path} {}", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&crate::command(), "xfull", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    /// `init`'s default is the engine's (the measured choice).
    #[test]
    fn the_default_segment_size_is_the_engines() {
        use clap::FromArgMatches;
        let m = crate::command()
            .try_get_matches_from(["xfull", "-r", "/nowhere", "init"])
            .unwrap();
        let Command::Init(a) = Cli::from_arg_matches(&m).unwrap().command else {
            panic!("init parses as init");
        };
        assert_eq!(a.segment_size, xfull_core::config::DEFAULT_SEGMENT_SIZE);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
