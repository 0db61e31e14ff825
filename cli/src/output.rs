//! Human-readable numbers and text, and JSON views of engine types.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use xfull_core::manifest::{BackupStats, DiskManifest, Manifest};
use xfull_core::names::is_unprintable;

/// Text read from a repository (or an error quoting it), made safe to
/// print: characters a terminal would act on (escape sequences, line
/// breaks, bidirectional overrides) are shown as Rust escapes, e.g.
/// `\u{1b}[2J`, `\n`. JSON output needs none of this: serde_json escapes.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unprintable) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Labels as `k=v,k2=v2`, escaped for printing.
pub fn labels_line(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{}={}", printable(k), printable(v)))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The version of every `--json` document's layout (docs/json.md): it
/// changes when a field is removed or changes meaning, not when one is
/// added.
pub const SCHEMA_VERSION: u32 = 1;

/// A JSON document as text, with its `schema_version`. Every document is
/// an object, so that fields can be added without breaking readers.
pub fn json_text<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(v)?;
    let Some(map) = v.as_object_mut() else {
        anyhow::bail!("internal error: a JSON document must be an object");
    };
    map.insert("schema_version".into(), SCHEMA_VERSION.into());
    Ok(serde_json::to_string_pretty(&v)?)
}

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", json_text(v)?);
    Ok(())
}

/// Writes a line to stderr as `eprintln!` does, but a stderr that can no
/// longer be written is ignored instead of a panic: after a hang-up the
/// terminal is gone (EIO), or whoever read a pipe has left (EPIPE), and
/// a command that then stops cleanly (a mount unmounted, a lease
/// released) exited 101 from the panic of its last message instead of
/// 130. Nobody is left to read it anyway. Every command's stderr
/// messages go through it (the `say!` macro), not only those of `mount`
/// and `serve`: any warning to a stderr nobody reads panicked too.
pub fn say(args: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// With `--json`, an error is a JSON document on stderr (stdout may be
/// carrying data, e.g. `restore --to -`).
pub fn print_error_json(message: &str, kind: &str, status: u8) {
    let doc = serde_json::json!({
        "error": {"message": message, "kind": kind, "exit_status": status},
    });
    match json_text(&doc) {
        Ok(t) => say!("{t}"),
        Err(_) => say!("xfull: error: {}", printable(message)),
    }
}

/// Times in every JSON document: RFC 3339, UTC, `Z`.
/// A duration in the largest whole unit: `30 days`, `2 h`, `5 s`.
pub fn duration_words(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} h", s / 3_600),
        s => format!("{s} s"),
    }
}

pub fn json_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Statistics as JSON: the stored fields, plus the ratios of
/// [`Ratios`].
#[derive(Serialize)]
pub struct StatsView {
    #[serde(flatten)]
    pub stats: BackupStats,
    #[serde(flatten)]
    pub ratios: Ratios,
}

impl From<&BackupStats> for StatsView {
    fn from(s: &BackupStats) -> Self {
        StatsView {
            stats: s.clone(),
            ratios: Ratios::of(s),
        }
    }
}

/// Deduplication against the parent and what the changed data took in
/// the store, kept apart: a backup that stored only its manifest has no
/// ratio worth printing (it once said "dedup 221022.9x").
#[derive(Serialize)]
pub struct Ratios {
    /// Data the point shares with its parent at the same place.
    pub bytes_reused: u64,
    /// The point's data per byte of changed data: deduplication against
    /// the parent. `None` when nothing changed.
    pub dedup_ratio: Option<f64>,
    /// Changed data per byte stored: zstd compression, and deduplication
    /// of the changed data against chunks already stored (other disks,
    /// other points). Chunks' plain sizes are not recorded, so the two
    /// are not told apart. `None` when no chunk was stored.
    pub store_ratio: Option<f64>,
}

impl Ratios {
    pub fn of(s: &BackupStats) -> Ratios {
        let round = |r: f64| (r * 100.0).round() / 100.0;
        let ratio = |a: u64, b: u64| (b > 0).then(|| round(a as f64 / b as f64));
        Ratios {
            bytes_reused: s.bytes_data.saturating_sub(s.bytes_changed),
            dedup_ratio: ratio(s.bytes_data, s.bytes_changed),
            store_ratio: if s.new_chunks > 0 {
                ratio(s.bytes_changed, s.bytes_stored)
            } else {
                None
            },
        }
    }
}

#[derive(Serialize)]
pub struct DiskView {
    pub name: String,
    pub size: u64,
    pub segment_size: u64,
    pub segments: usize,
    pub zero_segments: usize,
    pub source: String,
    pub parent: Option<String>,
    pub audit: Option<xfull_core::manifest::Audit>,
    pub stats: StatsView,
}

impl From<&DiskManifest> for DiskView {
    fn from(d: &DiskManifest) -> Self {
        DiskView {
            name: d.name.to_string(),
            size: d.size,
            segment_size: d.segment_size,
            segments: d.segments.len(),
            zero_segments: d.segments.iter().filter(|s| s.is_none()).count(),
            source: d.source.clone(),
            parent: d.parent.as_ref().map(|p| p.to_string()),
            audit: d.audit.clone(),
            stats: (&d.stats).into(),
        }
    }
}

#[derive(Serialize)]
pub struct PointView {
    pub point: String,
    pub vm: String,
    pub id: String,
    pub time: String,
    pub parent: Option<String>,
    pub host: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub disks: Vec<DiskView>,
    pub stats: StatsView,
}

impl From<&Manifest> for PointView {
    fn from(m: &Manifest) -> Self {
        PointView {
            point: m.point_name(),
            vm: m.vm.to_string(),
            id: m.id.to_string(),
            time: json_time(&m.time),
            parent: m.parent.as_ref().map(|p| p.to_string()),
            host: m.host.clone(),
            labels: m.labels.clone(),
            disks: m.disks.iter().map(DiskView::from).collect(),
            stats: (&m.stats).into(),
        }
    }
}

/// One line of statistics for people: what the run did, then the data
/// the point holds (segments reused unread included), what of it was
/// reused, and what the changed data took in the store.
pub fn stats_line(s: &BackupStats) -> String {
    let r = Ratios::of(s);
    let stored = if s.new_chunks == 0 {
        format!("no new chunks, {} stored (metadata)", bytes(s.bytes_stored))
    } else {
        format!(
            "{} new chunks, {} stored{}",
            s.new_chunks,
            bytes(s.bytes_stored),
            r.store_ratio.map_or(String::new(), |c| format!(
                " ({c:.1}x smaller than the changed data)"
            ))
        )
    };
    format!(
        "{} scanned, {} read, {} data: {} reused, {} changed{}; {stored}; {} uploaded, {:.2} s",
        bytes(s.bytes_scanned),
        bytes(s.bytes_read),
        bytes(s.bytes_data),
        bytes(r.bytes_reused),
        bytes(s.bytes_changed),
        r.dedup_ratio
            .map_or(String::new(), |d| format!(" (dedup {d:.1}x)")),
        bytes(s.bytes_uploaded),
        s.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_only_backup_claims_no_ratio() {
        let s = BackupStats {
            bytes_scanned: 8 << 20,
            bytes_data: 8 << 20,
            bytes_stored: 38,
            bytes_uploaded: 38,
            ..BackupStats::default()
        };
        let line = stats_line(&s);
        assert!(!line.contains("x)"), "{line}");
        assert!(line.contains("no new chunks, 38 B stored"), "{line}");
        let r = Ratios::of(&s);
        assert_eq!((r.dedup_ratio, r.store_ratio), (None, None));
        assert_eq!(r.bytes_reused, 8 << 20);
    }

    #[test]
    fn printable_escapes_what_terminals_obey() {
        assert!(matches!(printable("plain text, été"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\r\t"), "x\\ny\\r\\t");
        assert_eq!(printable("\u{9b}\u{202e}\u{7f}"), "\\u{9b}\\u{202e}\\u{7f}");
    }
}
