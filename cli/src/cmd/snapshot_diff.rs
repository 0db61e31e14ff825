use anyhow::Result;
use xfull_core::changes::snapshot::diff_images;

use crate::cli::{Cli, SnapshotDiffArgs};

/// Prints native extent JSON, usable as `backup --changed` input, with or
/// without `--json` (the output is that file format either way, so it has
/// no `schema_version`: see docs/json.md).
pub async fn run(_cli: &Cli, args: &SnapshotDiffArgs) -> Result<()> {
    let (old, new, block) = (args.old.clone(), args.new.clone(), args.block_size);
    let set = tokio::task::spawn_blocking(move || diff_images(&old, &new, block)).await??;
    println!("{}", serde_json::to_string_pretty(&set.to_extents())?);
    Ok(())
}
