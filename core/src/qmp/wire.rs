//! Decoding what a QMP server sends: one JSON object per line.
//!
//! A pure function over a line whose length the reader has already
//! bounded ([`MAX_LINE`]); it never panics (fuzzed in
//! `fuzz/fuzz_targets/qmp.rs`) and says what is malformed.

use serde_json::{Map, Value};

/// The longest line accepted from the server. `query-named-block-nodes`
/// of a VM with many disks and backing chains is the largest answer
/// xfull asks for: some KB per node.
pub const MAX_LINE: usize = 16 << 20;

/// One message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The first message on a connection.
    Greeting { version: String },
    /// A command succeeded.
    Return { id: Option<Value>, value: Value },
    /// A command failed.
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    /// An asynchronous event.
    Event { name: String, data: Value },
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<Message, String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "a message of {} bytes (at most {MAX_LINE})",
            line.len()
        ));
    }
    let value: Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON message: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("a message that is not a JSON object".into());
    };
    let id = obj.remove("id");
    if let Some(greeting) = obj.remove("QMP") {
        return Ok(Message::Greeting {
            version: version(&greeting),
        });
    }
    if let Some(value) = obj.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(error) = obj.remove("error") {
        let Value::Object(error) = error else {
            return Err("an error that is not an object".into());
        };
        return Ok(Message::Error {
            id,
            class: text(&error, "class").unwrap_or("GenericError").to_string(),
            desc: text(&error, "desc")
                .ok_or("an error without a description")?
                .to_string(),
        });
    }
    if let Some(Value::String(name)) = obj.remove("event") {
        return Ok(Message::Event {
            name,
            data: obj.remove("data").unwrap_or(Value::Null),
        });
    }
    Err("a message that is neither a greeting, a return, an error nor an event".into())
}

fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// "10.0.2 (Debian ...)" from the greeting, or "unknown".
fn version(greeting: &Value) -> String {
    let v = &greeting["version"];
    let q = &v["qemu"];
    match (
        q["major"].as_u64(),
        q["minor"].as_u64(),
        q["micro"].as_u64(),
    ) {
        (Some(a), Some(b), Some(c)) => match v["package"].as_str() {
            Some(p) if !p.is_empty() => format!("{a}.{b}.{c} ({p})"),
            _ => format!("{a}.{b}.{c}"),
        },
        _ => "unknown".into(),
    }
}

/// `{"execute": command, "arguments": args, "id": id}` as one line.
pub fn encode_command(command: &str, args: Option<&Value>, id: u64) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("execute".into(), Value::String(command.into()));
    if let Some(a) = args {
        obj.insert("arguments".into(), a.clone());
    }
    obj.insert("id".into(), Value::from(id));
    let mut line = serde_json::to_vec(&Value::Object(obj)).expect("a JSON value encodes");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_four_kinds_decode() {
        let g = br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(
            decode(g).unwrap(),
            Message::Greeting {
                version: "10.0.2 (Debian)".into()
            }
        );
        assert_eq!(
            decode(br#"{"return": {}, "id": 3}"#).unwrap(),
            Message::Return {
                id: Some(json!(3)),
                value: json!({})
            }
        );
        assert_eq!(
            decode(br#"{"id": 4, "error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}"#).unwrap(),
            Message::Error {
                id: Some(json!(4)),
                class: "CommandNotFound".into(),
                desc: "The command nosuch has not been found".into()
            }
        );
        let e = decode(br#"{"timestamp": {"seconds": 1}, "event": "JOB_STATUS_CHANGE", "data": {"status": "concluded", "id": "mk1"}}"#).unwrap();
        assert!(matches!(e, Message::Event { ref name, .. } if name == "JOB_STATUS_CHANGE"));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for bad in [
            &b"not json"[..],
            b"[1, 2]",
            b"{}",
            br#"{"error": "x"}"#,
            br#"{"error": {"class": "GenericError"}}"#,
            br#"{"event": 3}"#,
        ] {
            let err = decode(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn commands_encode_as_one_line() {
        let line = encode_command("block-dirty-bitmap-add", Some(&json!({"node": "d"})), 7);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["execute"], "block-dirty-bitmap-add");
        assert_eq!(v["id"], 7);
    }
}
