//! Arguments of `xfull index`.

use clap::{Args, Subcommand};

use crate::cli::S3Args;

/// `xfull index ...`: the chunk index (which pack holds each chunk).
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Derive the index again from the packs' own tables (one ranged read
    /// per pack), store it as new index objects and delete the index
    /// objects stored before, which they replace (damaged ones included);
    /// safe while backups run. Exit 3 if a pack's table is damaged (that
    /// pack is left out, and every index object stored before is kept).
    Rebuild(IndexRebuildArgs),
}

impl IndexCommand {
    pub fn s3(&self) -> &S3Args {
        match self {
            IndexCommand::Rebuild(a) => &a.s3,
        }
    }
}

#[derive(Debug, Args)]
pub struct IndexRebuildArgs {
    #[command(flatten)]
    pub s3: S3Args,
}
