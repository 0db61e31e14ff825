//! A progress bar on a terminal, nothing on a pipe.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use xfull_core::progress::Progress;

use crate::output::bytes;

/// Draws `progress` until the returned guard is dropped.
pub struct Bar {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: ProgressBar,
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
        let task = on_tty.then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    let (done, total, moved) = progress.snapshot();
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(format!("({} transferred)", bytes(moved)));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        Bar { task, bar }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
