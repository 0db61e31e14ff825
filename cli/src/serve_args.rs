//! Arguments of `xfull serve` and `xfull mount`.

use std::path::PathBuf;

use clap::{ArgGroup, Args};

use crate::cli::{S3Args, parse_size};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("listen_on").required(true).args(["socket", "listen"])))]
pub struct ServeArgs {
    /// VM@ID (a unique id prefix or suffix will do) or VM@latest.
    pub point: String,
    /// A disk to export, named after the disk (repeat for several);
    /// default: every disk of the point.
    #[arg(long)]
    pub disk: Vec<String>,
    /// Listen on a new unix socket (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Listen on a TCP address, e.g. 127.0.0.1:10809 (no TLS, no
    /// authentication: keep it on loopback or a trusted network).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Accept writes, TRIM and WRITE_ZEROES into --overlay (the
    /// repository is never written).
    #[arg(long, requires = "overlay")]
    pub writable: bool,
    /// The copy-on-write overlay file of --writable: created if absent,
    /// reused if it is this point's and disk's, refused otherwise.
    #[arg(long, value_name = "FILE", requires = "writable")]
    pub overlay: Option<PathBuf>,
    /// Memory for cached data (parts of at most 16 MiB of a segment), all
    /// disks together.
    #[arg(long, value_parser = parse_cache, default_value = "256M")]
    pub cache: u64,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// VM@ID or VM@latest of each point to show, then the mountpoint (an
    /// empty directory).
    #[arg(required = true, num_args = 2.., value_name = "POINT... MOUNTPOINT")]
    pub args: Vec<String>,
    /// Memory for cached data (parts of at most 16 MiB of a segment), all
    /// disks together.
    #[arg(long, value_parser = parse_cache, default_value = "256M")]
    pub cache: u64,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `--cache`: a size of at least one part (16 MiB). Refused below it
/// (exit 2) rather than raised: a smaller cache keeps no part, so every
/// read fetched and verified 16 MiB, and the user who asked for little
/// memory learns the floor instead of silently getting more.
fn parse_cache(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    let min = xfull_core::serve::MIN_CACHE_BYTES;
    if n < min {
        return Err(format!(
            "{s:?} holds no part of a disk; the least is {}M (one part)",
            min >> 20
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cache_smaller_than_one_part_is_refused() {
        for small in ["0", "4K", "16383K"] {
            assert!(super::parse_cache(small).is_err(), "{small}");
        }
        assert_eq!(super::parse_cache("16M"), Ok(16 << 20));
    }
}
