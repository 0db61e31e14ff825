//! A progress bar on a terminal, nothing on a pipe; the engine's notices
//! (why a backup waits, warnings) on stderr either way.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use xfull_core::progress::{Notice, Progress};

use crate::output::bytes;

/// Draws `progress` and prints its notices until the returned guard is
/// dropped.
pub struct Bar {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: ProgressBar,
    progress: Arc<Progress>,
}

impl Bar {
    pub fn start(progress: Arc<Progress>, verb: &'static str, quiet: bool) -> Bar {
        let on_tty = std::io::stderr().is_terminal() && !quiet;
        let target = if on_tty {
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
        let task = {
            let (bar, progress) = (bar.clone(), progress.clone());
            tokio::spawn(async move {
                loop {
                    print_notices(&bar, &progress);
                    if on_tty {
                        let (done, total, moved) = progress.snapshot();
                        bar.set_length(total);
                        bar.set_position(done);
                        bar.set_message(format!("({} transferred)", bytes(moved)));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Bar {
            task: Some(task),
            bar,
            progress,
        }
    }
}

fn print_notices(bar: &ProgressBar, progress: &Progress) {
    for n in progress.take_notices() {
        let line = match n {
            Notice::WaitingForSweep {
                seq,
                reason,
                at_most_secs,
            } => format!(
                "xfull: waiting for gc sweep {seq} ({reason}); at most {at_most_secs} s more"
            ),
            Notice::Warning(w) => format!("xfull: warning: {w}"),
        };
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        print_notices(&self.bar, &self.progress);
        self.bar.finish_and_clear();
    }
}
