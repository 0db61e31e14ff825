//! Human-readable numbers and text, and JSON views of engine types.

use std::borrow::Cow;

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

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Statistics as JSON: the stored fields plus the dedup ratio.
#[derive(Serialize)]
pub struct StatsView {
    #[serde(flatten)]
    pub stats: BackupStats,
    pub dedup_ratio: Option<f64>,
}

impl From<&BackupStats> for StatsView {
    fn from(s: &BackupStats) -> Self {
        StatsView {
            stats: s.clone(),
            dedup_ratio: s.dedup_ratio().map(|r| (r * 100.0).round() / 100.0),
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
            time: m.time.to_rfc3339(),
            parent: m.parent.as_ref().map(|p| p.to_string()),
            host: m.host.clone(),
            labels: m.labels.clone(),
            disks: m.disks.iter().map(DiskView::from).collect(),
            stats: (&m.stats).into(),
        }
    }
}

/// One line of statistics for people: what the run did, then the data the
/// point holds (segments reused unread included) and the dedup ratio,
/// that data per byte this run stored.
pub fn stats_line(s: &BackupStats) -> String {
    format!(
        "{} scanned, {} read, {} changed, {} new chunks, {} uploaded, {} stored, {} data, {}, \
         {:.2} s",
        bytes(s.bytes_scanned),
        bytes(s.bytes_read),
        bytes(s.bytes_changed),
        s.new_chunks,
        bytes(s.bytes_uploaded),
        bytes(s.bytes_stored),
        bytes(s.bytes_data),
        s.dedup_ratio()
            .map_or("nothing new".to_string(), |r| format!("dedup {r:.1}x")),
        s.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_terminals_obey() {
        assert!(matches!(printable("plain text, été"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\r\t"), "x\\ny\\r\\t");
        assert_eq!(printable("\u{9b}\u{202e}\u{7f}"), "\\u{9b}\\u{202e}\\u{7f}");
    }
}
