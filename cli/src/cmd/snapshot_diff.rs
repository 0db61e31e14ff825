use anyhow::Result;
use xfull_core::changes::snapshot::diff_images;

use crate::cli::{Cli, SnapshotDiffArgs};
use crate::output::print_json;

/// Prints native extent JSON, usable as `backup --changed` input, with or
/// without `--json` (the output is JSON either way).
pub async fn run(_cli: &Cli, args: &SnapshotDiffArgs) -> Result<()> {
    let (old, new, block) = (args.old.clone(), args.new.clone(), args.block_size);
    let set = tokio::task::spawn_blocking(move || diff_images(&old, &new, block)).await??;
    print_json(&set.to_extents())
}
