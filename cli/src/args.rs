//! The arguments of each command.

use std::path::PathBuf;

use clap::Args;
use clap::builder::PossibleValuesParser;

use crate::cli::{S3Args, parse_secs, parse_size};

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
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// VM@ID of each point to remove, the whole id as `xfull points`
    /// lists it (a part of one is refused, naming the id it matches).
    #[arg(required = true)]
    pub points: Vec<String>,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// VM@ID (a unique prefix or suffix of the id will do) or VM@latest;
    /// default: every point.
    pub points: Vec<String>,
    /// Also download, decompress and re-hash the chunks (each once).
    #[arg(long)]
    pub read_data: bool,
    /// With --read-data, only a part: a percentage (random sample, e.g.
    /// 10 or 2.5%) or N/M (part N of M; 1/M .. M/M cover every chunk).
    #[arg(long, requires = "read_data", value_name = "PCT|N/M")]
    pub subset: Option<String>,
    /// Write the outcome as Prometheus text (for node_exporter's textfile
    /// collector), replacing the file atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
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
    /// Keep the newest point of each of the last N days that have points.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest point of each of the last N ISO weeks (Monday to
    /// Sunday, UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest point of each of the last N months (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest point of each of the last N years (UTC).
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
    /// Let the rules remove the newest point that holds a disk name (by
    /// default it is kept: a disk left out of later backups keeps its last
    /// copy).
    #[arg(long)]
    pub forget_disks: bool,
    /// Write the outcome as Prometheus text (for node_exporter's textfile
    /// collector), replacing the file atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite a partly dead pack (its live chunks into a new pack) when
    /// more than PCT percent of its bytes are dead; only in a hot storage
    /// class and once older than the class's minimum storage duration
    /// (never in Glacier classes). Waste left is reported.
    #[arg(long, value_name = "PCT", default_value_t = xfull_core::gc::pack_plan::DEFAULT_MAX_WASTE_PCT,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_waste: u8,
    /// Objects per delete batch (1 to 1,000, the S3 limit). Hidden: the
    /// tests stop a gc between batches, which needs several.
    #[arg(long, hide = true, default_value_t = 1000,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,
    /// Memory for chunk marks; beyond it they go to local files (under
    /// $TMPDIR, else the repository's cache directory) and the census
    /// takes them in passes by id range. Hidden: the tests force several
    /// passes.
    #[arg(long, hide = true, value_parser = parse_size, default_value = "64M")]
    pub mark_memory: u64,
    /// Write the outcome as Prometheus text (for node_exporter's textfile
    /// collector), replacing the file atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Segment size (power of two, 1M to 64M).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub segment_size: u64,
    /// Average chunk size; min and max default to avg/4 and avg*4.
    #[arg(long, value_parser = parse_size, default_value = "64K")]
    pub chunk_avg: u64,
    /// Smallest chunk (default: avg/4).
    #[arg(long, value_parser = parse_size)]
    pub chunk_min: Option<u64>,
    /// Largest chunk (default: avg*4).
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
    /// Encryption: `aes-256-gcm` (the default; repository format 4: chunk
    /// data sealed with AES-256-GCM, metadata with XChaCha20-Poly1305),
    /// `xchacha20-poly1305` (format 2: everything sealed with
    /// XChaCha20-Poly1305, readable by builds of formats 2 and 3; slower
    /// on CPUs with AES instructions), or `none` for a repository that
    /// anyone who can read the store can read (every command then says so;
    /// format 2).
    #[arg(long, value_name = "MODE", default_value = "aes-256-gcm",
          value_parser = ["aes-256-gcm", "xchacha20-poly1305", "none"])]
    pub encryption: String,
    /// S3 only: storage class of chunk data, stored in the repository so
    /// that every client uses it. A client's --s3-storage-class-chunks (or
    /// its profile's) still wins: it is that operator's explicit choice.
    #[arg(long, value_name = "CLASS",
          value_parser = PossibleValuesParser::new(xfull_s3::storage_classes().iter().copied()))]
    pub data_storage_class: Option<String>,
    /// S3 only: server-side encryption of every object, stored in the
    /// repository so that every client asks for it. A client's --s3-sse
    /// (or its profile's) still wins.
    #[arg(long, value_name = "MODE",
          value_parser = PossibleValuesParser::new(xfull_s3::SSE_VALUES.iter().copied()))]
    pub sse: Option<String>,
    /// S3 only: CLASS=DAYS, the minimum storage duration of a storage
    /// class where the store's differs from AWS's (STANDARD_IA and
    /// ONEZONE_IA 30 days, GLACIER_IR and GLACIER 90, DEEP_ARCHIVE 180,
    /// any other none), stored in the repository: gc rewrites a partly
    /// dead pack only once it is that old. CLASS may be any class the
    /// store lists (e.g. NEARLINE); one AWS lacks is judged as a hot
    /// class. Repeatable.
    #[arg(long, value_name = "CLASS=DAYS")]
    pub min_storage_days: Vec<String>,
    /// Make the repository like this one (a location or @NAME), so that
    /// `xfull copy` can copy its points here as they are stored: its
    /// segment size, chunking and zstd level, and its encryption keys in
    /// a key slot of this repository's own (its own password or key file).
    #[arg(long, value_name = "REPO", conflicts_with_all = [
        "segment_size", "chunk_avg", "chunk_min", "chunk_max", "zstd_level", "encryption"])]
    pub like: Option<String>,
    #[command(flatten)]
    pub from_secret: crate::args_copy::FromSecretArgs,
    /// S3 only, on a bucket made with object lock: lock every object a
    /// point relies on (WORM) in this mode for --lock-days. In compliance
    /// mode nobody can delete them early; in governance mode only
    /// credentials with s3:BypassGovernanceRetention can.
    #[arg(long, value_name = "MODE", requires = "lock_days",
          value_parser = ["compliance", "governance"])]
    pub object_lock: Option<String>,
    /// With --object-lock: how many days every object of a point stays
    /// locked, at least, from the start of its backup.
    #[arg(long, value_name = "DAYS", requires = "object_lock",
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub lock_days: Option<u64>,
    /// With --object-lock: retention is extended once per generation of
    /// this many days (objects stay locked up to this much longer).
    #[arg(long, value_name = "DAYS", requires = "object_lock", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub lock_generation_days: u64,
    /// Testing: the lock period and generation in seconds
    /// (`RETAIN,GENERATION`), instead of days.
    #[arg(
        long,
        hide = true,
        value_name = "SECS,SECS",
        requires = "object_lock",
        conflicts_with = "lock_days"
    )]
    pub lock_seconds: Option<String>,
    #[command(flatten)]
    pub kdf: crate::args_key::KdfArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// VM name: [A-Za-z0-9._-]{1,128}.
    #[arg(long)]
    pub vm: String,
    /// DISK=PATH: a disk image file, a block device, or an NBD export
    /// (`nbd+unix:///EXPORT?socket=PATH`, `nbd://HOST[:PORT]/EXPORT`) read
    /// as the guest sees it, or with --qmp `qmp:NODE_OR_DRIVE`; repeatable.
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
    /// Deduplicate against this point of the VM instead of its latest:
    /// VM@ID, or an ID (a unique prefix or suffix of one will do);
    /// `latest` is the same as none.
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
    /// Write the outcome as Prometheus text (for node_exporter's textfile
    /// collector), replacing the file atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct PointsArgs {
    /// Only this VM's points.
    #[arg(long)]
    pub vm: Option<String>,
    /// Only points recorded by this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only points with this label; repeatable (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only the N newest points of each VM (at least 1).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub latest: Option<usize>,
    /// Show times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// VM@ID (a unique id prefix or suffix will do) or VM@latest.
    pub point: String,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// VM@ID (a unique id prefix or suffix will do) or VM@latest.
    pub point: String,
    /// Which disk of the point.
    #[arg(long)]
    pub disk: String,
    /// A new file, a block device (with --force), or - for stdout.
    #[arg(long, required_unless_present = "plan")]
    pub to: Option<String>,
    /// Restore nothing: list the objects the restore needs that sit in an
    /// archive storage class, their bytes, and the cost and time of
    /// thawing them per retrieval tier.
    #[arg(long, conflicts_with_all = ["to", "overwrite", "force", "ignore_damage", "sync", "no_image_hash", "wait"])]
    pub plan: bool,
    /// When data the restore needs is being thawed from an archive storage
    /// class (`xfull thaw`), wait up to this long for it (e.g. 12h, 48h),
    /// looking at what is still thawing every few minutes; without it such
    /// a restore fails at the first archived chunk.
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_secs)]
    pub wait: Option<u64>,
    /// Seconds between two looks of --wait (testing).
    #[arg(long, hide = true, default_value_t = 300, requires = "wait")]
    pub wait_poll: u64,
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
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// VM@ID (a unique id prefix or suffix will do) or VM@latest.
    pub a: String,
    /// VM@ID (a unique id prefix or suffix will do) or VM@latest.
    pub b: String,
    /// Only this disk (default: every disk the two points share; a disk
    /// of one point only is named, not compared).
    #[arg(long)]
    pub disk: Option<String>,
    /// With --disk: print only the native extent list (a file for `backup
    /// --changed`), with or without --json.
    #[arg(long, requires = "disk")]
    pub extents: bool,
    #[command(flatten)]
    pub s3: S3Args,
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

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (xfull.1, xfull-backup.1, ...) into this
    /// directory instead of printing xfull.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// How fast (and at what price) the archive makes copies readable.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TierArg {
    /// Minutes, the most expensive (not for DEEP_ARCHIVE).
    Expedited,
    /// Hours.
    Standard,
    /// Many hours, the cheapest.
    Bulk,
}

impl From<TierArg> for xfull_core::archive::ThawTier {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Expedited => xfull_core::archive::ThawTier::Expedited,
            TierArg::Standard => xfull_core::archive::ThawTier::Standard,
            TierArg::Bulk => xfull_core::archive::ThawTier::Bulk,
        }
    }
}

#[derive(Debug, Args)]
pub struct ThawArgs {
    /// VM@ID (a unique id prefix or suffix will do) or VM@latest.
    pub point: String,
    /// Only these disks (default: every disk of the point).
    #[arg(long)]
    pub disk: Vec<String>,
    /// Retrieval tier.
    #[arg(long, value_enum)]
    pub tier: TierArg,
    /// Days the readable copies are kept (billed at the Standard rate);
    /// needed for GLACIER and DEEP_ARCHIVE. Intelligent-Tiering's archive
    /// tiers take none: a thaw moves the object back to a hot tier for
    /// good.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: Option<u32>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct UndeleteArgs {
    /// Say what would be brought back; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Bring back this hidden key slot too (its 16-hex id, as the report
    /// lists it). Slots are left hidden unless named: `key remove` and
    /// `key passwd` hide them on purpose (a leaked password's slot).
    #[arg(long = "key-slot", value_name = "ID")]
    pub key_slots: Vec<String>,
    /// The config version that is the repository's own, when more than one
    /// is still locked (an earlier repository at this place, or a forged
    /// one), or when versions were put above the locked one (a forged
    /// config, or a later repository's: removing them deletes them for
    /// good): undelete lists them and stops until one is named.
    #[arg(long, value_name = "VERSION_ID")]
    pub config_version: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

/// A count that 0 would make pointless (`points --latest 0` lists
/// nothing): refused as a usage error.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 would list nothing: give at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}
