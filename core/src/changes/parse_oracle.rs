//! The change-file parser as it was before it streamed: the whole file
//! parsed into a JSON value, then checked entry by entry. Kept as the
//! oracle the streaming parser is property-tested against (same extents,
//! same format, the same entry refused; its messages are shortened).

use std::ops::Range;

use serde_json::{Map, Value};

use super::extents::ExtentSet;
use super::parse::Format;
use crate::error::{Error, Result};

pub(super) fn parse_changes(
    name: &str,
    bytes: &[u8],
    disk_size: u64,
) -> Result<(ExtentSet, Format)> {
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
        let this = detect(obj).ok_or_else(|| err(Some(i), "unknown format".into()))?;
        match format {
            None => format = Some(this),
            Some(f) if f != this => {
                return Err(err(Some(i), "mixed formats".into()));
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
        return Err(format!("past the disk's end ({disk_size} bytes)"));
    }
    let changed = match format {
        Format::Native => true,
        Format::RbdDiff => match obj.get("exists") {
            Some(Value::Bool(_)) => true,
            Some(Value::String(s)) if s == "true" || s == "false" => true,
            other => return Err(format!("\"exists\" must be true or false, not {other:?}")),
        },
        Format::QemuImgMap => {
            let depth = number(obj, "depth")?;
            let flag = |k: &str| match obj.get(k) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!("\"{k}\" must be a boolean, not {other}")),
            };
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
    use proptest::prelude::*;

    use super::super::parse;

    /// A JSON number, valid or not as an offset or length.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (0u64..2500).prop_map(|n| n.to_string()),
            1 => Just(u64::MAX.to_string()),
            1 => Just("18446744073709551616".to_string()),
            1 => (1i64..100).prop_map(|n| format!("-{n}")),
            1 => (0u32..100).prop_map(|n| format!("{n}.5")),
            1 => Just("null".to_string()),
            1 => Just("\"12\"".to_string()),
            1 => Just("[1, 2]".to_string()),
        ]
    }

    fn flag() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("\"true\"".to_string()),
            Just("\"false\"".to_string()),
            Just("\"maybe\"".to_string()),
            Just("1".to_string()),
        ]
    }

    /// One entry of any of the formats, or something that is none.
    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (number(), number()).prop_map(|(o, l)| format!(r#"{{"offset": {o}, "length": {l}}}"#)),
            3 => (number(), number(), 0u8..3, flag(), flag()).prop_map(|(s, l, d, data, zero)| {
                format!(
                    r#"{{"start": {s}, "length": {l}, "depth": {d}, "present": true, "data": {data}, "zero": {zero}, "offset": 4096}}"#
                )
            }),
            3 => (number(), number(), flag()).prop_map(|(o, l, x)| {
                format!(r#"{{"offset": {o}, "length": {l}, "exists": {x}}}"#)
            }),
            1 => Just(r#"{"what": {"nested": [1, {"a": 2}]}}"#.to_string()),
            1 => Just(r#"{"offset": 1, "offset": 2, "length": 3}"#.to_string()),
            1 => Just(r#"{"length": 5}"#.to_string()),
            1 => prop_oneof![Just("1"), Just("\"x\""), Just("[]"), Just("null")]
                .prop_map(str::to_string),
        ]
    }

    fn file() -> impl Strategy<Value = String> {
        let list =
            prop::collection::vec(entry(), 0..12).prop_map(|e| format!("[{}]", e.join(", ")));
        prop_oneof![
            12 => list,
            1 => (prop::collection::vec(entry(), 1..4), any::<prop::sample::Index>()).prop_map(
                |(e, cut)| {
                    let text = format!("[{}]", e.join(","));
                    text[..cut.index(text.len())].to_string()
                }
            ),
            1 => entry(),
        ]
    }

    proptest! {
        #[test]
        fn streaming_parser_agrees_with_the_whole_file_parser(text in file(), size in 1000u64..3000) {
            let new = parse::parse_changes("f.json", text.as_bytes(), size);
            let old = super::parse_changes("f.json", text.as_bytes(), size);
            let entry = |e: &crate::Error| match e {
                crate::Error::ChangeSource { entry, .. } => *entry,
                other => panic!("not a change-source error: {other}"),
            };
            match (&new, &old) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                // Malformed JSON: the old parser saw it first, the stream
                // may meet a bad entry before it; both refuse the file.
                (Err(_), Err(o)) if o.to_string().contains("not valid JSON") => {}
                (Err(n), Err(o)) => prop_assert_eq!(entry(n), entry(o), "{} / {}", n, o),
                _ => prop_assert!(false, "{:?} / {:?}", new, old),
            }
            if let Err(e) = &new {
                prop_assert!(e.to_string().contains("f.json"));
            }
        }
    }

    #[test]
    fn many_extents_merge_as_they_stream() {
        // 3 x 5000 entries, newest first and overlapping: 5000 extents.
        let mut text = String::from("[");
        for k in (0..5000u64).rev() {
            for (o, l) in [(k * 100 + 40, 20), (k * 100, 30), (k * 100 + 25, 20)] {
                text.push_str(&format!(r#"{{"offset":{o},"length":{l}}},"#));
            }
        }
        text.pop();
        text.push(']');
        let (set, _) = parse::parse_changes("f.json", text.as_bytes(), 1 << 20).unwrap();
        let old = super::parse_changes("f.json", text.as_bytes(), 1 << 20)
            .unwrap()
            .0;
        assert_eq!(set, old);
        assert_eq!(set.ranges().len(), 5000);
        assert_eq!(set.bytes(), 5000 * 60);
    }
}
