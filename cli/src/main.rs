//! The `xfull` command.

mod cli;
mod cmd;
mod open;
mod output;
mod progress_ui;

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::Parser;
use xfull_core::progress::Progress;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
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
    runtime.spawn(cancel_on_signals());
    match runtime.block_on(dispatch(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors may quote a hostile repository's text.
            eprintln!("xfull: error: {}", output::printable(&format!("{e:#}")));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// Status of a process ended by SIGPIPE, as shells report it.
const CLOSED_STDOUT: i32 = 128 + 13;

/// `xfull points | head -1`: once the reader is gone, printing fails;
/// end quietly with the conventional status instead of a panic (the Rust
/// runtime ignores SIGPIPE, and resetting it would need `unsafe`).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(CLOSED_STDOUT);
        }
        default(info);
    }));
}

/// The operation in progress: signals cancel it, commands hand it to the
/// engine. One command runs per process.
pub fn progress() -> Arc<Progress> {
    static CURRENT: OnceLock<Arc<Progress>> = OnceLock::new();
    CURRENT.get_or_init(Default::default).clone()
}

/// SIGINT or SIGTERM asks the running operation to stop cleanly (it
/// removes what it started: a partial restore file, a backup's lease); a
/// second signal exits at once.
async fn cancel_on_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        seen += 1;
        if seen > 1 {
            eprintln!("xfull: interrupted again; exiting without cleaning up");
            std::process::exit(130);
        }
        eprintln!("xfull: interrupted; stopping cleanly (interrupt again to exit at once)");
        progress().cancel();
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
        Command::Repair(a) => cmd::repair::run(cli, a).await,
        Command::Forget(a) => cmd::forget::run(cli, a).await,
    }
}

/// 0 ok, 1 error, 2 usage, 3 damage found, 130 interrupted.
fn exit_status(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<xfull_core::Error>() {
        Some(xfull_core::Error::Cancelled { .. }) => 130,
        Some(x) if x.is_damage() => 3,
        Some(x) if x.is_usage() => 2,
        _ => 1,
    }
}
