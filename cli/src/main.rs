//! The `xfull` command.

mod cli;
mod cmd;
mod open;
mod output;
mod progress_ui;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xfull: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xfull: error: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

async fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(a) => cmd::init::run(cli, a).await,
        Command::Backup(a) => cmd::backup::run(cli, a).await,
        Command::Points(a) => cmd::points::run(cli, a).await,
        Command::Show(a) => cmd::show::run(cli, a).await,
        Command::Restore(a) => cmd::restore::run(cli, a).await,
        Command::Diff(a) => cmd::diff::run(cli, a).await,
        Command::SnapshotDiff(a) => cmd::snapshot_diff::run(cli, a).await,
        Command::Prune(a) => cmd::prune::run(cli, a).await,
        Command::Gc(a) => cmd::gc::run(cli, a).await,
        Command::Stats => cmd::stats::run(cli).await,
        Command::Verify(a) => cmd::verify::run(cli, a).await,
    }
}

/// 0 ok, 1 error, 2 usage, 3 damage found.
fn exit_status(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<xfull_core::Error>() {
        Some(x) if x.is_damage() => 3,
        Some(x) if x.is_usage() => 2,
        _ => 1,
    }
}
