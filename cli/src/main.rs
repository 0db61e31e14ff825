//! The `xfull` command.

/// `eprintln!` that never panics: see [`output::say`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say(format_args!($($arg)*))
    };
}

mod args;
mod args_copy;
mod args_index;
mod args_key;
mod cli;
mod cmd;
mod denied;
mod fuse_fs;
mod metrics;
mod open;
mod output;
mod point_name;
mod profile;
mod progress_ui;
mod secrets;
mod serve_args;

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::{CommandFactory, FromArgMatches};
use xfull_core::progress::Progress;

use crate::cli::{Cli, Command};

/// The git commit this binary was built from (set by build.rs).
const GIT_COMMIT: &str = env!("XFULL_GIT_COMMIT");

/// `--version`: the release, the commit and the repository format this
/// build reads and writes (so a report says which repositories it fits).
fn version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {GIT_COMMIT}, repository format {}; reads and writes formats {})",
            env!("CARGO_PKG_VERSION"),
            xfull_core::config::FORMAT_VERSION,
            xfull_core::config::SUPPORTED_FORMATS
        )
    })
}

/// The command definitions, with the version line.
pub fn command() -> clap::Command {
    Cli::command().version(version())
}

fn parse() -> Result<Cli, ExitCode> {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.map_err(|e| {
        use clap::error::ErrorKind;
        let wanted = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
            || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
        // The arguments could not be read, so look for --json by hand.
        if !wanted && std::env::args().any(|a| a == "--json") {
            let msg = e.render().to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            output::print_error_json(first, "usage", 2);
            return ExitCode::from(2);
        }
        let _ = e.print();
        ExitCode::from(if wanted { 0 } else { 2 })
    })
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("xfull: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.spawn(cancel_on_signals());
    let started = std::time::Instant::now();
    let result = runtime
        .block_on(dispatch(&cli))
        .map_err(|e| denied::explain(&cli.command, e));
    let status = result.as_ref().map_or_else(exit_status, |_| 0);
    // The interrupt was acknowledged ("stopping cleanly") but the command
    // was past its last point of stopping: say that its work was done,
    // or the exit status 0 reads as a contradiction (a crash walk). For
    // serve and mount an interrupt is the usual way to end.
    let stops_on_interrupt = matches!(cli.command, Command::Serve(_) | Command::Mount(_));
    if result.is_ok() && progress().is_cancelled() && !stops_on_interrupt {
        say!("xfull: the command had finished its work when the interrupt came; it is done");
    }
    if !cli.quiet {
        let budgets = open::BUDGETS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Named only when there are two (`copy` between two S3 stores).
        let named = budgets.len() > 1;
        for (location, b) in budgets.iter().filter(|(_, b)| b.waited_ms() > 0) {
            let of = match named {
                true => format!(" of {}", output::printable(location)),
                false => String::new(),
            };
            say!(
                "xfull: request budget{of}: {} requests, which waited {:.1} s in all for it \
                 (summed over requests waiting at once)",
                b.paid(),
                b.waited_ms() as f64 / 1000.0
            );
        }
    }
    if let Some((path, command)) = metrics_target(&cli)
        && let Err(e) = metrics::write(path, command, status, started.elapsed().as_secs_f64())
    {
        say!("xfull: warning: {}", output::printable(&format!("{e:#}")));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `xfull man | head`: the reader left; nothing to report.
        Err(e) if closed_stdout(&e) => ExitCode::from(CLOSED_STDOUT as u8),
        Err(e) => {
            if cli.json {
                output::print_error_json(&format!("{e:#}"), status_kind(status), status);
            } else {
                // Errors may quote a hostile repository's text.
                say!("xfull: error: {}", output::printable(&format!("{e:#}")));
            }
            ExitCode::from(status)
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

/// An error that is a write to a closed pipe (generators that write to
/// stdout themselves report it as an error instead of panicking).
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
            say!("xfull: interrupted again; exiting without cleaning up");
            std::process::exit(130);
        }
        say!("xfull: interrupted; stopping cleanly (interrupt again to exit at once)");
        progress().cancel();
    }
}

/// Hang-ups for a long-running command (`mount`, `serve`) started in a
/// terminal that is then closed: SIGHUP would kill it, leaving a dead
/// mount or a lease until its TTL; the command stops cleanly instead.
/// Unless SIGHUP is ignored (`nohup xfull ...`): a handler would undo
/// that, and the command is meant to outlive the terminal.
#[derive(Debug)]
pub struct Hangup(Option<tokio::signal::unix::Signal>);

impl Hangup {
    pub fn catch() -> std::io::Result<Hangup> {
        if sighup_ignored() {
            return Ok(Hangup(None));
        }
        let kind = tokio::signal::unix::SignalKind::hangup();
        Ok(Hangup(Some(tokio::signal::unix::signal(kind)?)))
    }

    /// Returns at the next hang-up; never, when SIGHUP is ignored.
    pub async fn recv(&mut self) {
        match &mut self.0 {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Whether this process ignores SIGHUP, from `SigIgn` in
/// /proc/self/status (a mask, bit 0 for signal 1); read, so no signal
/// disposition has to be queried unsafely.
fn sighup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 == 1)
}

async fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(a) => cmd::init::run(cli, a).await,
        Command::Backup(a) => cmd::backup::run(cli, a).await,
        Command::Points(a) => cmd::points::run(cli, a).await,
        Command::Show(a) => cmd::show::run(cli, a).await,
        Command::Restore(a) => cmd::restore::run(cli, a).await,
        Command::Thaw(a) => cmd::thaw::run(cli, a).await,
        Command::Undelete(a) => cmd::undelete::run(cli, a).await,
        Command::Diff(a) => cmd::diff::run(cli, a).await,
        Command::SnapshotDiff(a) => cmd::snapshot_diff::run(cli, a).await,
        Command::Copy(a) => cmd::copy::run(cli, a).await,
        Command::Prune(a) => cmd::prune::run(cli, a).await,
        Command::Gc(a) => cmd::gc::run(cli, a).await,
        Command::Stats(_) => cmd::stats::run(cli).await,
        Command::Verify(a) => cmd::verify::run(cli, a).await,
        Command::Repair(a) => cmd::repair::run(cli, a).await,
        Command::Forget(a) => cmd::forget::run(cli, a).await,
        Command::Serve(a) => cmd::serve::run(cli, a).await,
        Command::Mount(a) => cmd::mount::run(cli, a).await,
        Command::Key(k) => cmd::key::run(cli, k).await,
        Command::Index(c) => cmd::index::run(cli, c).await,
        Command::Completions(a) => cmd::shell::completions(a),
        Command::Man(a) => cmd::shell::man(a),
    }
}

/// 0 ok, 1 error, 2 usage, 3 damage found, 130 interrupted.
pub(crate) fn exit_status(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<xfull_core::Error>() {
        Some(xfull_core::Error::Cancelled { .. }) => 130,
        Some(x) if x.is_damage() => 3,
        Some(x) if x.is_usage() => 2,
        _ => 1,
    }
}

/// Where to write metrics, and the command they describe.
fn metrics_target(cli: &Cli) -> Option<(&std::path::Path, &'static str)> {
    let (path, command) = match &cli.command {
        Command::Backup(a) => (&a.metrics_file, "backup"),
        Command::Prune(a) => (&a.metrics_file, "prune"),
        Command::Gc(a) => (&a.metrics_file, "gc"),
        Command::Verify(a) => (&a.metrics_file, "verify"),
        _ => return None,
    };
    Some((path.as_deref()?, command))
}

/// The class of an exit status, as JSON errors name it.
fn status_kind(status: u8) -> &'static str {
    match status {
        2 => "usage",
        3 => "damage",
        130 => "interrupted",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_changed_is_an_error_not_a_usage_mistake() {
        let e = anyhow::Error::new(xfull_core::Error::SourceChanged {
            path: "/dev/vg/snap".into(),
            offset: 4096,
            reason: "cannot be read again".into(),
        });
        assert_eq!(exit_status(&e), 1);
        assert_eq!(status_kind(exit_status(&e)), "error");
    }
}
