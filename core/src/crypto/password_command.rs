//! Running a `--password-command` (or a profile's `password_command`).
//!
//! With a terminal, the command may take as long as the person answering
//! it (pass, gpg, systemd-ask-password ask there), and Ctrl-C stops it
//! with xfull. Without one (cron, a systemd timer) nobody can answer: a
//! command that waits for input, a pinentry looking for a display, would
//! hold the backup job forever and no monitoring would ever see it fail.
//! So unattended, the command has [`UNATTENDED_LIMIT`], and past it the
//! command and everything it started are killed and the error names it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use zeroize::Zeroizing;

use crate::crypto::password::{failed, read_bounded};
use crate::crypto::prompt;
use crate::error::Result;

/// How long a password command may run when no terminal is attached.
/// A secret store over the network answers in seconds; two minutes
/// leaves room for a slow one and still fails a stuck job the same hour.
pub const UNATTENDED_LIMIT: Duration = Duration::from_secs(120);

/// What `cmd` printed on its standard output (at most the longest
/// password and one byte more), once it exited successfully; `source`
/// names it in errors.
pub fn output(cmd: &str, source: &str) -> Result<Zeroizing<Vec<u8>>> {
    let attended = prompt::Terminal::open().is_ok();
    output_within(cmd, source, (!attended).then_some(UNATTENDED_LIMIT))
}

/// [`output`] with the time limit given: `None` waits as long as it runs.
pub fn output_within(
    cmd: &str,
    source: &str,
    limit: Option<Duration>,
) -> Result<Zeroizing<Vec<u8>>> {
    // stdin and stderr stay the terminal's, so that the command can ask.
    let mut command = Command::new("sh");
    command.arg("-c").arg(cmd).stdout(Stdio::piped());
    if limit.is_some() {
        // A process group of its own, so that stopping it reaches what it
        // started (gpg's pinentry). Only without a terminal: in a group of
        // its own, a command reading the terminal would be stopped by
        // SIGTTIN.
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed(source, format!("cannot run sh: {e}")))?;
    let deadline = limit.map(|l| (Instant::now() + l, l));
    let Some(stdout) = child.stdout.take() else {
        return Err(failed(source, "no output"));
    };
    // Read (bounded) in a thread of its own, so that the wait can end at
    // the deadline; the pipe is closed when the read ends, so a command
    // that writes without end stops on a broken pipe instead of blocking.
    let (tx, rx) = mpsc::channel();
    let reader_source = source.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(read_bounded(stdout, &reader_source));
    });
    let out = match deadline {
        None => rx.recv().map_err(|_| failed(source, "its output was lost")),
        Some((at, limit)) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
            Ok(out) => Ok(out),
            Err(_) => return Err(stop(&mut child, source, limit)),
        },
    };
    let status = match deadline {
        None => child
            .wait()
            .map_err(|e| failed(source, format!("waiting for it: {e}")))?,
        Some((at, limit)) => loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= at => return Err(stop(&mut child, source, limit)),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(failed(source, format!("waiting for it: {e}"))),
            }
        },
    };
    let out = out??;
    if !status.success() {
        return Err(failed(source, format!("it failed ({status})")));
    }
    Ok(out)
}

/// Kills the command's process group and reaps it; the error says why.
fn stop(child: &mut Child, source: &str, limit: Duration) -> crate::error::Error {
    // The group may be gone already (the command exited as time ran out):
    // nothing is left to stop then, and the error stands either way.
    let _ = kill_process_group(Pid::from_child(child), Signal::KILL);
    let _ = child.wait();
    failed(
        source,
        format!(
            "it did not finish within {} s and no terminal is attached to answer it \
             (is it waiting for input, or for a pinentry?); it was stopped",
            limit.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Option<Duration> = Some(Duration::from_millis(500));

    #[test]
    fn an_unattended_command_past_its_time_is_stopped_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The shell waits for a child of its own, as gpg waits for its
        // pinentry; the child keeps the output pipe open.
        let cmd = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let e = output_within(&cmd, "password from test", LIMIT).unwrap_err();
        assert!(
            e.to_string().contains("did not finish within") && e.to_string().contains("test"),
            "{e}"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed: gone, or a zombie when no init reaps orphans here.
        let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => matches!(
                stat.rsplit(") ").next().and_then(|r| r.chars().next()),
                Some('Z' | 'X')
            ),
        };
        let stopped = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            dead()
        });
        assert!(stopped, "the command's child {pid} still runs");
    }

    #[test]
    fn a_command_that_closes_its_output_but_goes_on_is_stopped() {
        let e =
            output_within("echo pw; exec >&-; sleep 60", "password from test", LIMIT).unwrap_err();
        assert!(e.to_string().contains("did not finish within"), "{e}");
    }

    #[test]
    fn a_quick_command_within_its_time_answers() {
        let out = output_within("printf 'pw\\n'", "password from test", LIMIT).unwrap();
        assert_eq!(&out[..], b"pw\n");
        let e = output_within("exit 4", "password from test", LIMIT).unwrap_err();
        assert!(e.to_string().contains("it failed"), "{e}");
    }
}
