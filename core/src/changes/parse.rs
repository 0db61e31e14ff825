//! Change files: which byte ranges of a disk may have changed since the
//! parent point. Three formats, told apart by their keys:
//!
//! - native: `[{"offset": 0, "length": 65536}, ...]`
//! - `qemu-img map --output=json` of a qcow2 overlay: entries with
//!   `"depth": 0` are the overlay's own (written) extents, data or zeros;
//!   deeper ones come from the backing file and are unchanged
//! - `rbd diff --format json`: `{"offset", "length", "exists"}`; both
//!   `exists` values are changes (false means discarded, now zeros)
//!
//! Entries may come in any order and overlap (several cluster nodes'
//! files are unioned anyway). Anything that cannot be trusted is refused
//! with the file and entry named: a bad change source must never produce
//! a wrong point.

use std::ops::Range;
use std::path::Path;

use serde_json::{Map, Value};

use super::extents::ExtentSet;
use crate::error::{Error, Result};

/// Which format a change file was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Native,
    QemuImgMap,
    RbdDiff,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Native => "extent list",
            Format::QemuImgMap => "qemu-img map",
            Format::RbdDiff => "rbd diff",
        }
    }
}

/// Change files larger than this are refused (a dense 4 KiB extent list
/// of a 1 TiB disk is far smaller).
const MAX_FILE: u64 = 1 << 30;

/// Reads and validates a change file for a disk of `disk_size` bytes.
pub fn read_change_file(path: &Path, disk_size: u64) -> Result<(ExtentSet, Format)> {
    let name = path.display().to_string();
    let bad = |reason: String| Error::ChangeSource {
        file: name.clone(),
        entry: None,
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(bad(format!("is larger than {MAX_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    parse_changes(&name, &bytes, disk_size)
}

/// Parses change-file bytes; `name` is used in messages.
pub fn parse_changes(name: &str, bytes: &[u8], disk_size: u64) -> Result<(ExtentSet, Format)> {
    let err = |entry: Option<usize>, reason: String| Error::ChangeSource {
        file: name.to_string(),
        entry,
        reason,
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| err(None, format!("not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(err(None, "expected a JSON array of extents".into()));
    };
    let mut format = None;
    let mut ranges = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(obj) = item else {
            return Err(err(Some(i), "is not a JSON object".into()));
        };
        let this = detect(obj).ok_or_else(|| {
            err(
                Some(i),
                "unknown format: expected {\"offset\",\"length\"} entries, qemu-img map \
                 --output=json or rbd diff --format json"
                    .into(),
            )
        })?;
        match format {
            None => format = Some(this),
            Some(f) if f != this => {
                return Err(err(
                    Some(i),
                    format!("is {} but earlier entries are {}", this.name(), f.name()),
                ));
            }
            _ => {}
        }
        if let Some(r) = entry(obj, this, disk_size).map_err(|reason| err(Some(i), reason))? {
            ranges.push(r);
        }
    }
    Ok((
        ExtentSet::from_ranges(ranges),
        format.unwrap_or(Format::Native),
    ))
}

fn detect(obj: &Map<String, Value>) -> Option<Format> {
    if obj.contains_key("depth") && obj.contains_key("start") {
        Some(Format::QemuImgMap)
    } else if obj.contains_key("exists") {
        Some(Format::RbdDiff)
    } else if obj.contains_key("offset") && obj.contains_key("length") {
        Some(Format::Native)
    } else {
        None
    }
}

/// The changed range an entry names, if any.
fn entry(
    obj: &Map<String, Value>,
    format: Format,
    disk_size: u64,
) -> std::result::Result<Option<Range<u64>>, String> {
    let start_key = if format == Format::QemuImgMap {
        "start"
    } else {
        "offset"
    };
    let start = number(obj, start_key)?;
    let length = number(obj, "length")?;
    let end = start
        .checked_add(length)
        .ok_or_else(|| format!("{start_key} {start} + length {length} overflows"))?;
    if end > disk_size {
        return Err(format!(
            "{start_key} {start} length {length} ends at {end}, past the disk's end ({disk_size} bytes)"
        ));
    }
    let changed = match format {
        Format::Native => true,
        Format::RbdDiff => {
            // "true"/"false" as strings (rbd) or booleans; either way a change.
            match obj.get("exists") {
                Some(Value::Bool(_)) => true,
                Some(Value::String(s)) if s == "true" || s == "false" => true,
                other => return Err(format!("\"exists\" must be true or false, not {other:?}")),
            }
        }
        Format::QemuImgMap => {
            let depth = number(obj, "depth")?;
            let flag = |k: &str| match obj.get(k) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!("\"{k}\" must be a boolean, not {other}")),
            };
            // The overlay's own extents: written data, or written zeros.
            depth == 0 && (flag("data")? || flag("zero")?)
        }
    };
    Ok(changed.then_some(start..end))
}

fn number(obj: &Map<String, Value>, key: &str) -> std::result::Result<u64, String> {
    match obj.get(key) {
        None => Err(format!("has no \"{key}\"")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("\"{key}\" must be a non-negative integer below 2^64, not {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(ExtentSet, Format)> {
        parse_changes("f.json", s.as_bytes(), 1 << 20)
    }

    #[test]
    fn formats_are_detected() {
        let (s, f) =
            parse(r#"[{"offset": 8192, "length": 4096}, {"offset": 0, "length": 4096}]"#).unwrap();
        assert_eq!(f, Format::Native);
        assert_eq!(s.ranges(), &[0..4096, 8192..12288]);

        let qemu = r#"[
          {"start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
          {"start": 65536, "length": 65536, "depth": 1, "present": true, "zero": false, "data": true},
          {"start": 131072, "length": 4096, "depth": 0, "present": true, "zero": true, "data": false},
          {"start": 135168, "length": 913408, "depth": 1, "present": false, "zero": true, "data": false}]"#;
        let (s, f) = parse(qemu).unwrap();
        assert_eq!(f, Format::QemuImgMap);
        assert_eq!(s.ranges(), &[0..65536, 131072..135168]);

        let rbd = r#"[{"offset":0,"length":4096,"exists":"true"},{"offset":4096,"length":4096,"exists":"false"},{"offset":65536,"length":1,"exists":true}]"#;
        let (s, f) = parse(rbd).unwrap();
        assert_eq!(f, Format::RbdDiff);
        assert_eq!(s.ranges(), &[0..8192, 65536..65537]);

        assert_eq!(parse("[]").unwrap().0, ExtentSet::new());
    }

    #[test]
    fn overlapping_and_unsorted_entries_are_merged() {
        let (s, _) = parse(
            r#"[{"offset":100,"length":50},{"offset":0,"length":120},{"offset":300,"length":0}]"#,
        )
        .unwrap();
        assert_eq!(s.ranges().to_vec(), vec![0..150]);
    }

    #[test]
    fn bad_files_name_file_and_entry() {
        let cases = [
            ("{", "not valid JSON"),
            (r#"{"offset":1}"#, "JSON array"),
            (r#"[1]"#, "entry 0"),
            (
                r#"[{"offset":0,"length":1},{"foo":1}]"#,
                "entry 1: unknown format",
            ),
            (r#"[{"offset":-5,"length":1}]"#, "non-negative"),
            (r#"[{"offset":1.5,"length":1}]"#, "non-negative"),
            (
                r#"[{"offset":18446744073709551615,"length":2}]"#,
                "overflows",
            ),
            (
                r#"[{"offset":1048570,"length":100}]"#,
                "past the disk's end",
            ),
            (r#"[{"offset":0,"exists":true}]"#, "has no \"length\""),
            (
                r#"[{"offset":0,"length":1},{"offset":0,"length":1,"exists":"true"}]"#,
                "earlier entries",
            ),
            (r#"[{"offset":0,"length":1,"exists":"maybe"}]"#, "exists"),
            (
                r#"[{"start":0,"length":1,"depth":0,"data":"yes"}]"#,
                "boolean",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("f.json") && e.contains(want), "{text}: {e}");
        }
    }
}
