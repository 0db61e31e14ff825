//! A stderr nobody reads any more (a pipe whose reader has left, a
//! closed terminal): every command's messages are dropped, never a panic.
//! Until 2026-12-06 only `mount`, `serve` and the top-level error printing
//! were spared; any other command's warning panicked (exit 101).

use std::process::Stdio;

use xfull_integration::env::Env;

#[test]
fn a_warning_to_a_stderr_nobody_reads_does_not_fail_the_command() {
    let e = Env::init();
    let img = e.path("d.img");
    std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
    e.backup("vm", &[("d", &img)]);
    // Without HOME and XDG_STATE_HOME, opening an encrypted repository
    // warns that no client record can be kept.
    let mut points = e.std(&["points"]);
    points
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = points.spawn().unwrap();
    drop(child.stderr.take()); // nobody reads: writes fail with EPIPE
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.status);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("vm@"), "{listed}");
}
