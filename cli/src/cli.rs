//! The command line, as DESIGN.md's contract fixes it.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xfull",
    version,
    about = "Express-full, deduplicated backups of virtual-machine disks",
    after_help = "Exit status: 0 ok, 1 error, 2 usage, 3 damage found."
)]
pub struct Cli {
    /// Repository: a directory, file:///dir, or s3://bucket/prefix.
    #[arg(short = 'r', long, env = "XFULL_REPO", global = true)]
    pub repo: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,

    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// S3 settings; credentials come from the standard AWS chain.
#[derive(Args)]
pub struct S3Args {
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 for MinIO (path-style).
    // The value may hold credentials (http://key:secret@host): the help
    // must not show it.
    #[arg(long, env = "AWS_ENDPOINT_URL", hide_env_values = true, global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION or the AWS profile's).
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// The server ignores If-None-Match: emulate create-only puts with HEAD
    /// then PUT (slower; two writers of one new key may race).
    #[arg(long, global = true)]
    pub s3_no_conditional_put: bool,
    /// Storage class of chunk objects (e.g. STANDARD_IA, GLACIER_IR,
    /// DEEP_ARCHIVE); nodes and manifests stay in the default class.
    #[arg(long, global = true, value_name = "CLASS",
          value_parser = PossibleValuesParser::new(xfull_s3::storage_classes().iter().copied()))]
    pub s3_storage_class_chunks: Option<String>,
    /// Server-side encryption.
    #[arg(long, global = true,
          value_parser = PossibleValuesParser::new(xfull_s3::SSE_VALUES.iter().copied()))]
    pub s3_sse: Option<String>,
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
            .finish()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (fails if one exists).
    Init(InitArgs),
    /// Back up a VM's disks as a new point.
    Backup(BackupArgs),
    /// List points.
    Points(PointsArgs),
    /// Show one point in detail.
    Show(ShowArgs),
    /// Restore one disk of a point to a file, a block device or stdout.
    Restore(RestoreArgs),
    /// Print the extents that differ between two points, from metadata.
    Diff(DiffArgs),
    /// Print the changed extents between two disk images, as JSON.
    SnapshotDiff(SnapshotDiffArgs),
    /// Remove points by a retention policy, then run gc.
    Prune(PruneArgs),
    /// Delete chunks and nodes no point references (backups may run).
    Gc(GcArgs),
    /// Points per VM, logical and stored bytes, chunks, nodes, dedup ratio.
    Stats,
    /// Check that points are whole; exit 3 and list the damage if not.
    Verify(VerifyArgs),
    /// Remove damaged chunks, nodes and manifests (backups may run), store
    /// again what disk images hold; exit 3 if points stay damaged.
    Repair(RepairArgs),
    /// Remove the named points, even those whose manifest is damaged.
    Forget(ForgetArgs),
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Also read every chunk to find damage (else: listings, metadata and
    /// the damage that verify, restore and backups recorded).
    #[arg(long)]
    pub read_data: bool,
    /// With --disk: the VM whose disk images to store data from again.
    #[arg(long, requires = "disks")]
    pub vm: Option<String>,
    /// DISK=PATH: an image of the VM's disk (e.g. the snapshot a damaged
    /// point was taken from) holding data to store again; repeatable.
    #[arg(long = "disk", value_name = "DISK=PATH", requires = "vm")]
    pub disks: Vec<String>,
    /// Report what was found; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// VM@ID of each point to remove (`xfull points` lists them).
    #[arg(required = true)]
    pub points: Vec<String>,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// VM@ID or VM@latest; default: every point.
    pub points: Vec<String>,
    /// Also download, decompress and re-hash the chunks (each once).
    #[arg(long)]
    pub read_data: bool,
    /// With --read-data, only a part: a percentage (random sample, e.g.
    /// 10 or 2.5%) or N/M (part N of M; 1/M .. M/M cover every chunk).
    #[arg(long, requires = "read_data", value_name = "PCT|N/M")]
    pub subset: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this VM's points (default: every VM, each planned on its own).
    #[arg(long)]
    pub vm: Option<String>,
    /// Keep the N newest points.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest point of each of the last N hours that have points.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// ISO weeks (Monday to Sunday, UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every point within this span of the VM's newest point, e.g.
    /// 7d, 2w, 1y6m, 36h.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every point with this label; repeatable.
    #[arg(long = "keep-label", value_name = "KEY=VALUE")]
    pub keep_labels: Vec<String>,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the points but leave their data to a later `xfull gc`.
    #[arg(long)]
    pub no_gc: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Segment size (power of two, 1M to 64M).
    #[arg(long, value_parser = parse_size, default_value = "16M")]
    pub segment_size: u64,
    /// Average chunk size; min and max default to avg/4 and avg*4.
    #[arg(long, value_parser = parse_size, default_value = "128K")]
    pub chunk_avg: u64,
    #[arg(long, value_parser = parse_size)]
    pub chunk_min: Option<u64>,
    #[arg(long, value_parser = parse_size)]
    pub chunk_max: Option<u64>,
    /// zstd level for chunks (1-19).
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// A backup's lease (and a gc sweep's marker) not refreshed for this
    /// long counts as dead: 30s, 10m, 1h.
    #[arg(long, value_parser = parse_secs, default_value = "10m")]
    pub lease_ttl: u64,
    /// Largest clock difference expected between the store's servers;
    /// gc leaves objects younger than this (plus the oldest running
    /// backup's age) alone.
    #[arg(long, value_parser = parse_secs, default_value = "1m")]
    pub clock_margin: u64,
    /// A gc sweep whose marker was not refreshed for this long is dead
    /// (capped by the lease TTL): the longest a killed gc can delay a
    /// backup.
    #[arg(long, value_parser = parse_secs, default_value = "1m")]
    pub sweep_ttl: u64,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// VM name: [A-Za-z0-9._-]{1,128}.
    #[arg(long)]
    pub vm: String,
    /// DISK=PATH: a disk image file, a block device, or an NBD export
    /// (`nbd+unix:///EXPORT?socket=PATH`, `nbd://HOST[:PORT]/EXPORT`) read
    /// as the guest sees it; repeatable.
    #[arg(long = "disk", required = true, num_args = 1.., value_name = "DISK=PATH")]
    pub disks: Vec<String>,
    /// DISK=NAME[@URI]: a QEMU dirty bitmap holding the changes since the
    /// parent, read from the disk's own NBD export, or from URI (another
    /// node's export of the same shared disk); repeat for one bitmap per
    /// node: they are unioned.
    #[arg(long = "bitmap", value_name = "DISK=NAME[@URI]")]
    pub bitmaps: Vec<String>,
    /// QMP socket of a running QEMU or qemu-storage-daemon: disks given as
    /// DISK=qmp:NODE_OR_DRIVE are read from a point-in-time view xfull sets
    /// up there, with QEMU's checkpoint bitmaps as the change source.
    #[arg(long, value_name = "SOCKET")]
    pub qmp: Option<PathBuf>,
    /// With --qmp: the unix socket of an NBD server QEMU already runs (it
    /// runs at most one), to add the view's exports to. Without it xfull
    /// starts one on a private socket and stops it afterwards.
    #[arg(long, value_name = "PATH", requires = "qmp")]
    pub qmp_nbd_socket: Option<PathBuf>,
    /// With --qmp: where the view's temporary images go (they grow by what
    /// the guest writes during the backup). Default: $TMPDIR or /var/tmp.
    #[arg(long, value_name = "DIR", requires = "qmp")]
    pub qmp_work_dir: Option<PathBuf>,
    /// DISK=FILE: extents that changed since the parent (native JSON,
    /// `qemu-img map --output=json` of an overlay, or `rbd diff --format
    /// json`); repeat for one file per cluster node: they are unioned.
    #[arg(long = "changed", value_name = "DISK=FILE")]
    pub changed: Vec<String>,
    /// DISK=OLD_IMAGE: find the changes by comparing the previous snapshot
    /// image with the new one.
    #[arg(long = "base", value_name = "DISK=OLD_IMAGE")]
    pub base: Vec<String>,
    /// Read every byte of every disk, ignoring change information.
    #[arg(long, conflicts_with_all = ["changed", "base", "bitmaps"])]
    pub full_scan: bool,
    /// Re-read this percentage of the segments a change source calls
    /// unchanged and check them against the parent; a mismatch makes the
    /// disk fall back to a full scan.
    #[arg(long, value_name = "PCT", default_value_t = xfull_core::backup::audit::DEFAULT_AUDIT_PERCENT)]
    pub audit_unchanged: f64,
    /// Deduplicate against this point id of the VM instead of its latest.
    #[arg(long)]
    pub parent: Option<String>,
    /// KEY=VALUE label stored with the point; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Host name recorded with the point (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Record the point under this time (RFC 3339) instead of now.
    #[arg(long)]
    pub time: Option<String>,
    /// Accept a --time further ahead than the repository's clock margin.
    #[arg(long, requires = "time")]
    pub allow_future: bool,
}

#[derive(Debug, Args)]
pub struct PointsArgs {
    #[arg(long)]
    pub vm: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// VM@ID or VM@latest.
    pub point: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// VM@ID or VM@latest.
    pub point: String,
    /// Which disk of the point.
    #[arg(long)]
    pub disk: String,
    /// A new file, a block device (with --force), or - for stdout.
    #[arg(long)]
    pub to: String,
    /// Replace an existing regular file (atomically, once the image is
    /// complete); a symbolic link there is never followed or replaced.
    #[arg(long)]
    pub overwrite: bool,
    /// Write onto a block device, destroying what it holds; a device in
    /// use (mounted, or held by another program) is refused even so.
    #[arg(long)]
    pub force: bool,
    /// Restore past damaged or missing data: write zeros there, list the
    /// damaged ranges, keep the image, and exit with status 3.
    #[arg(long)]
    pub ignore_damage: bool,
    /// Flush the image to stable storage (fsync) before reporting success.
    #[arg(long)]
    pub sync: bool,
    /// Skip the BLAKE3 of the whole image (every chunk is still verified).
    #[arg(long)]
    pub no_image_hash: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// VM@ID or VM@latest.
    pub a: String,
    /// VM@ID or VM@latest.
    pub b: String,
    /// Only this disk (default: every disk the two points share).
    #[arg(long)]
    pub disk: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotDiffArgs {
    /// The older image.
    pub old: std::path::PathBuf,
    /// The newer image.
    pub new: std::path::PathBuf,
    /// Comparison granularity (power of two, 512 B to 16 MiB).
    #[arg(long, value_parser = parse_size, default_value = "4K")]
    pub block_size: u64,
}

impl Cli {
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
