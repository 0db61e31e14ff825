//! `--metrics-file PATH`: the outcome of a backup, prune, gc or verify in
//! the Prometheus text format, for node_exporter's textfile collector.
//!
//! Commands record samples as they learn them; `main` adds whether the run
//! succeeded and how long it took, and replaces the file atomically (a
//! temporary file in the same directory, then rename), so the collector
//! never reads half a file. Per-VM "last success" times of other VMs are
//! carried over from the file being replaced: one file per job then
//! tracks every VM that job backs up.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};

/// One sample: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

static SAMPLES: Mutex<Vec<Sample>> = Mutex::new(Vec::new());

/// The metric kept across runs, per VM.
const LAST_SUCCESS: &str = "xfull_backup_last_success_timestamp_seconds";

/// What each metric means (HELP lines); all are gauges.
const HELP: &[(&str, &str)] = &[
    ("xfull_run_success", "1 if the last run succeeded, else 0"),
    ("xfull_run_exit_status", "Exit status of the last run"),
    ("xfull_run_duration_seconds", "Duration of the last run"),
    (
        "xfull_run_timestamp_seconds",
        "When the last run ended (Unix time)",
    ),
    ("xfull_backup_bytes", "Bytes of the last backup, by kind"),
    (
        "xfull_backup_objects",
        "Objects the last backup stored, by kind",
    ),
    (
        LAST_SUCCESS,
        "When a backup of the VM last succeeded (Unix time)",
    ),
    ("xfull_requests", "Store requests of the last run, by kind"),
    (
        "xfull_prune_points",
        "Points the last prune kept or removed",
    ),
    ("xfull_gc_objects", "Objects the last gc deleted, by kind"),
    ("xfull_gc_bytes_freed", "Bytes the last gc freed"),
    ("xfull_verify_points", "Points the last verify checked"),
    (
        "xfull_verify_damaged_points",
        "Damaged points the last verify found",
    ),
    (
        "xfull_verify_damaged_objects",
        "Damaged or missing objects found, by kind",
    ),
];

/// Records a sample for the metrics file (if one was asked for).
pub fn record(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    let s = Sample {
        name,
        labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        value,
    };
    SAMPLES.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

/// Store request counts, labelled by request kind.
pub fn record_requests<K: AsRef<str>>(
    command: &'static str,
    counts: impl IntoIterator<Item = (K, u64)>,
) {
    for (k, v) in counts {
        record(
            "xfull_requests",
            &[("command", command), ("request", k.as_ref())],
            v as f64,
        );
    }
}

/// Writes the run's samples to `path`, replacing it atomically.
pub fn write(path: &Path, command: &str, status: u8, seconds: f64) -> Result<()> {
    let now = chrono::Utc::now().timestamp() as f64;
    let mut samples = SAMPLES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (name, value) in [
        ("xfull_run_success", if status == 0 { 1.0 } else { 0.0 }),
        ("xfull_run_exit_status", status as f64),
        ("xfull_run_duration_seconds", seconds),
        ("xfull_run_timestamp_seconds", now),
    ] {
        samples.push(Sample {
            name,
            labels: vec![("command", command.to_string())],
            value,
        });
    }
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = render(&samples, &carried_over(&old, &samples));
    replace(path, text.as_bytes()).with_context(|| format!("metrics file {}", path.display()))
}

/// Last-success lines of VMs this run did not back up.
fn carried_over(old: &str, samples: &[Sample]) -> Vec<String> {
    let ours: Vec<String> = samples
        .iter()
        .filter(|s| s.name == LAST_SUCCESS)
        .map(|s| labels(&s.labels))
        .collect();
    old.lines()
        .filter(|l| l.starts_with(LAST_SUCCESS) && l[LAST_SUCCESS.len()..].starts_with('{'))
        .filter(|l| {
            !ours
                .iter()
                .any(|o| l[LAST_SUCCESS.len()..].starts_with(o.as_str()))
        })
        .map(str::to_string)
        .collect()
}

fn render(samples: &[Sample], carried: &[String]) -> String {
    let mut out = String::new();
    for (name, help) in HELP {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.name == *name).collect();
        let old: Vec<&String> = carried.iter().filter(|_| *name == LAST_SUCCESS).collect();
        if mine.is_empty() && old.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in mine {
            let _ = writeln!(out, "{name}{} {}", labels(&s.labels), s.value);
        }
        for l in old {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// `{k="v",...}` with the format's escapes (backslash, quote, newline).
fn labels(l: &[(&'static str, String)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Writes a temporary file beside `path`, flushes it, renames it over.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".xfull-metrics-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // node_exporter runs as another user: make the file world-readable
    // like any other textfile (tempfile creates it 0600).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escapes_and_carries_other_vms_over() {
        let s = vec![Sample {
            name: LAST_SUCCESS,
            labels: vec![("vm", "db\"1".into())],
            value: 5.0,
        }];
        let old = "# HELP x\nxfull_backup_last_success_timestamp_seconds{vm=\"web\"} 3\n\
                   xfull_backup_last_success_timestamp_seconds{vm=\"db\\\"1\"} 1\n";
        let carried = carried_over(old, &s);
        assert_eq!(
            carried,
            vec!["xfull_backup_last_success_timestamp_seconds{vm=\"web\"} 3"]
        );
        let text = render(&s, &carried);
        assert!(text.contains("# TYPE xfull_backup_last_success_timestamp_seconds gauge\n"));
        assert!(text.contains("{vm=\"db\\\"1\"} 5\n"), "{text}");
        assert!(text.contains("{vm=\"web\"} 3\n"), "{text}");
    }
}
