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
//!
//! Files are parsed as a stream, entry by entry, merging as they come: a
//! dense list of millions of extents costs the memory of its merged
//! extents (16 bytes each, up to three times that while merging), not of
//! its text.

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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

/// Ranges collected before they are merged into the set, at least.
const MERGE_BATCH: usize = 4096;

/// Reads and validates a change file for a disk of `disk_size` bytes.
pub fn read_change_file(path: &Path, disk_size: u64) -> Result<(ExtentSet, Format)> {
    let name = path.display().to_string();
    let bad = |reason: String| Error::ChangeSource {
        file: name.clone(),
        entry: None,
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(bad(format!("is larger than {MAX_FILE} bytes")));
    }
    parse_reader(&name, std::io::BufReader::new(file), disk_size)
}

/// Parses change-file bytes; `name` is used in messages.
pub fn parse_changes(name: &str, bytes: &[u8], disk_size: u64) -> Result<(ExtentSet, Format)> {
    parse_reader(name, bytes, disk_size)
}

fn parse_reader(name: &str, input: impl Read, disk_size: u64) -> Result<(ExtentSet, Format)> {
    let mut p = Parser {
        disk_size,
        entry: None,
        format: None,
        merged: ExtentSet::new(),
        pending: Vec::new(),
        refused: None,
    };
    let mut json = serde_json::Deserializer::from_reader(input);
    let parsed = json.deserialize_seq(&mut p).and_then(|()| json.end());
    let err = |entry: Option<usize>, reason: String| Error::ChangeSource {
        file: name.to_string(),
        entry,
        reason,
    };
    if let Some((i, reason)) = p.refused.take() {
        return Err(err(Some(i), reason));
    }
    match parsed {
        Ok(()) => {}
        Err(e) if e.is_data() && p.entry.is_none() => {
            return Err(err(None, format!("expected a JSON array of extents: {e}")));
        }
        Err(e) if e.is_data() => return Err(err(p.entry, e.to_string())),
        Err(e) => return Err(err(None, format!("not valid JSON: {e}"))),
    }
    p.merge();
    Ok((p.merged, p.format.unwrap_or(Format::Native)))
}

/// The state of a parse: what has been read so far.
struct Parser {
    disk_size: u64,
    /// Index of the entry being read, once inside the list.
    entry: Option<usize>,
    format: Option<Format>,
    merged: ExtentSet,
    /// Ranges not merged yet, in file order.
    pending: Vec<Range<u64>>,
    /// The entry refused and why (the parse error only says "stop").
    refused: Option<(usize, String)>,
}

impl Parser {
    fn merge(&mut self) {
        self.merged.absorb(&mut self.pending);
    }

    /// Checks one entry and keeps its range.
    fn take(&mut self, raw: RawEntry) -> std::result::Result<(), String> {
        let this = raw.format().ok_or(
            "unknown format: expected {\"offset\",\"length\"} entries, qemu-img map \
             --output=json or rbd diff --format json",
        )?;
        match self.format {
            None => self.format = Some(this),
            Some(f) if f != this => {
                return Err(format!(
                    "is {} but earlier entries are {}",
                    this.name(),
                    f.name()
                ));
            }
            _ => {}
        }
        if let Some(r) = raw.range(this, self.disk_size)? {
            self.pending.push(r);
            // Merging whenever the pending ranges outgrow the merged set
            // twice keeps memory within three times the merged extents,
            // and the work to n log n.
            if self.pending.len() >= MERGE_BATCH.max(2 * self.merged.ranges().len()) {
                self.merge();
            }
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for &mut Parser {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of extents")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.entry = Some(i);
            let Some(raw) = seq.next_element::<RawEntry>()? else {
                break;
            };
            if let Err(reason) = self.take(raw) {
                self.refused = Some((i, reason));
                return Err(de::Error::custom("refused entry"));
            }
            i += 1;
        }
        Ok(())
    }
}

/// One entry as written: the fields any of the formats use, each kept as
/// the JSON value it was (small: nested values are not kept).
#[derive(Default)]
struct RawEntry {
    offset: Option<Field>,
    start: Option<Field>,
    length: Option<Field>,
    depth: Option<Field>,
    exists: Option<Field>,
    data: Option<Field>,
    zero: Option<Field>,
}

impl RawEntry {
    fn format(&self) -> Option<Format> {
        if self.depth.is_some() && self.start.is_some() {
            Some(Format::QemuImgMap)
        } else if self.exists.is_some() {
            Some(Format::RbdDiff)
        } else if self.offset.is_some() && self.length.is_some() {
            Some(Format::Native)
        } else {
            None
        }
    }

    /// The changed range the entry names, if any.
    fn range(
        &self,
        format: Format,
        disk_size: u64,
    ) -> std::result::Result<Option<Range<u64>>, String> {
        let (start_key, start) = match format {
            Format::QemuImgMap => ("start", &self.start),
            _ => ("offset", &self.offset),
        };
        let start = number(start_key, start)?;
        let length = number("length", &self.length)?;
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
            // "true"/"false" as strings (rbd) or booleans; either way a change.
            Format::RbdDiff => match &self.exists {
                Some(Field::Bool(_)) => true,
                Some(Field::Str(s)) if s == "true" || s == "false" => true,
                other => {
                    let shown = other
                        .as_ref()
                        .map_or("nothing".to_string(), Field::to_string);
                    return Err(format!("\"exists\" must be true or false, not {shown}"));
                }
            },
            Format::QemuImgMap => {
                let depth = number("depth", &self.depth)?;
                let flag = |k: &str, v: &Option<Field>| match v {
                    None => Ok(false),
                    Some(Field::Bool(b)) => Ok(*b),
                    Some(other) => Err(format!("\"{k}\" must be a boolean, not {other}")),
                };
                // The overlay's own extents: written data, or written zeros.
                depth == 0 && (flag("data", &self.data)? || flag("zero", &self.zero)?)
            }
        };
        Ok(changed.then_some(start..end))
    }
}

fn number(key: &str, v: &Option<Field>) -> std::result::Result<u64, String> {
    match v {
        None => Err(format!("has no \"{key}\"")),
        Some(Field::U64(n)) => Ok(*n),
        Some(other) => Err(format!(
            "\"{key}\" must be a non-negative integer below 2^64, not {other}"
        )),
    }
}

impl<'de> de::Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawEntry, A::Error> {
                let mut e = RawEntry::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Offset => &mut e.offset,
                        Key::Start => &mut e.start,
                        Key::Length => &mut e.length,
                        Key::Depth => &mut e.depth,
                        Key::Exists => &mut e.exists,
                        Key::Data => &mut e.data,
                        Key::Zero => &mut e.zero,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    // A repeated key: the last one counts, as in a JSON object.
                    *slot = Some(map.next_value()?);
                }
                Ok(e)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Offset,
    Start,
    Length,
    Depth,
    Exists,
    Data,
    Zero,
    #[serde(other)]
    Other,
}

/// A field's JSON value, kept small: arrays and objects only as such.
#[derive(Debug)]
enum Field {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Null,
    Nested(&'static str),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::U64(n) => write!(f, "{n}"),
            Field::I64(n) => write!(f, "{n}"),
            Field::F64(n) => write!(f, "{n}"),
            Field::Bool(b) => write!(f, "{b}"),
            Field::Str(s) => write!(f, "{s:?}"),
            Field::Null => f.write_str("null"),
            Field::Nested(what) => f.write_str(what),
        }
    }
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_u64<E>(self, n: u64) -> std::result::Result<Field, E> {
                Ok(Field::U64(n))
            }
            fn visit_i64<E>(self, n: i64) -> std::result::Result<Field, E> {
                Ok(match u64::try_from(n) {
                    Ok(n) => Field::U64(n),
                    Err(_) => Field::I64(n),
                })
            }
            fn visit_f64<E>(self, n: f64) -> std::result::Result<Field, E> {
                Ok(Field::F64(n))
            }
            fn visit_bool<E>(self, b: bool) -> std::result::Result<Field, E> {
                Ok(Field::Bool(b))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Field, E> {
                Ok(Field::Str(s.to_string()))
            }
            fn visit_unit<E>(self) -> std::result::Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Field, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Nested("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Field, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Nested("an object"))
            }
        }
        d.deserialize_any(V)
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
            ("[{", "not valid JSON"),
            ("{", "JSON array"),
            ("[{\"offset\":1,\"length\":2}] x", "not valid JSON"),
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
