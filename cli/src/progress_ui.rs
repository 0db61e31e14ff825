//! Progress: a bar on a terminal; on anything else (a scheduled job's
//! log) a line every 10 seconds, so a log shows that a long job is alive
//! and how far it got. The engine's notices (why a backup waits,
//! warnings) go to stderr either way; `-q` keeps only the warnings.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use xfull_core::progress::{GcStep, Notice, Progress};

use crate::cli::Cli;
use crate::output::bytes;

/// How often a non-terminal gets a progress line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Off,
}

/// Draws `progress` and prints its notices until the returned guard is
/// dropped.
pub struct Bar {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: ProgressBar,
    progress: Arc<Progress>,
    quiet: bool,
}

impl Bar {
    /// `show`: whether this run has progress worth showing at all.
    pub fn start(progress: Arc<Progress>, verb: &'static str, cli: &Cli, show: bool) -> Bar {
        let mode = if !show || cli.quiet || cli.no_progress {
            Mode::Off
        } else if std::io::stderr().is_terminal() && !cli.json {
            Mode::Bar
        } else {
            Mode::Lines
        };
        let target = if mode == Mode::Bar {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(verb);
        let quiet = cli.quiet;
        let task = {
            let (bar, progress) = (bar.clone(), progress.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut next_line = started + LOG_EVERY;
                loop {
                    // Steps of a gc only once it has run a while: a quick
                    // one's report says it all.
                    let steps = started.elapsed() >= LOG_EVERY;
                    print_notices(&bar, &progress, quiet, steps);
                    let (done, total, moved) = progress.snapshot();
                    match mode {
                        Mode::Bar => {
                            bar.set_length(total);
                            bar.set_position(done);
                            bar.set_message(format!("({} transferred)", bytes(moved)));
                        }
                        Mode::Lines if Instant::now() >= next_line => {
                            next_line += LOG_EVERY;
                            say!("{}", line(verb, done, total, moved, started.elapsed()));
                        }
                        _ => {}
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Bar {
            task: Some(task),
            bar,
            progress,
            quiet,
        }
    }
}

/// One progress line for a log.
fn line(verb: &str, done: u64, total: u64, moved: u64, elapsed: Duration) -> String {
    let pct = if total > 0 {
        format!(" ({:.0}%)", done as f64 * 100.0 / total as f64)
    } else {
        String::new()
    };
    format!(
        "xfull: {verb}: {} of {}{pct} after {} s, {} transferred",
        bytes(done),
        bytes(total),
        elapsed.as_secs(),
        bytes(moved)
    )
}

fn print_notices(bar: &ProgressBar, progress: &Progress, quiet: bool, steps: bool) {
    for n in progress.take_notices() {
        let line = match n {
            Notice::GcStep(_) if quiet || !steps => continue,
            Notice::GcStep(step) => gc_step(&step),
            Notice::WaitingForSweep { .. } if quiet => continue,
            Notice::WaitingForSweep {
                seq,
                reason,
                at_most_secs,
            } => format!(
                "xfull: waiting for gc sweep {seq} ({reason}); at most {at_most_secs} s more"
            ),
            Notice::WaitingForThaw { .. } if quiet => continue,
            Notice::WaitingForThaw {
                objects,
                bytes: b,
                next_look_secs,
            } => format!(
                "xfull: waiting for the thaw of {objects} archived objects ({}); looking again \
                 in {next_look_secs} s",
                bytes(b)
            ),
            Notice::Warning(w) => format!("xfull: warning: {w}"),
            // A file removed is said even with --quiet.
            Notice::LeftoverRemoved { path, bytes: b } => format!(
                "xfull: removed {path} ({}), the partial image of an earlier restore that was \
                 killed",
                bytes(b)
            ),
        };
        let line = crate::output::printable(&line).into_owned();
        if bar.is_hidden() {
            say!("{line}");
        } else {
            bar.println(line);
        }
    }
}

/// One line of a gc's log.
fn gc_step(step: &GcStep) -> String {
    match step {
        GcStep::Listed {
            points,
            live_leases,
        } => format!("xfull: gc: {points} points, {live_leases} live leases; marking"),
        GcStep::Marking { done, of } => format!("xfull: gc: marked {done} of {of} points"),
        GcStep::Marked { nodes, chunks } => {
            format!("xfull: gc: marked {nodes} nodes and {chunks} chunks; deleting")
        }
        GcStep::Deleted {
            batches,
            nodes,
            packs,
            bytes: b,
        } => format!(
            "xfull: gc: {batches} delete batches so far: {nodes} nodes, {packs} packs, {}",
            bytes(*b)
        ),
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        print_notices(&self.bar, &self.progress, self.quiet, false);
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_say_how_far() {
        let l = line(
            "backup",
            512 << 20,
            1 << 30,
            3 << 20,
            Duration::from_secs(20),
        );
        assert_eq!(
            l,
            "xfull: backup: 512.0 MiB of 1.0 GiB (50%) after 20 s, 3.0 MiB transferred"
        );
    }
}
