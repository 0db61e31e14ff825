//! Every command's `--json` document matches the schema docs/json.md
//! documents for it (the schemas are read from that file's fenced
//! `json schema=NAME` blocks, so the documentation cannot drift).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use xfull_integration::env::{Env, stderr};
use xfull_integration::{mixed_regions, write_image};

/// The schemas of docs/json.md, by name.
fn schemas() -> BTreeMap<String, Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let Some(name) = l.strip_prefix("```json schema=") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let v: Value = serde_json::from_str(&body.join("\n"))
            .unwrap_or_else(|e| panic!("schema {name} in docs/json.md: {e}"));
        assert!(out.insert(name.to_string(), v).is_none(), "{name} twice");
    }
    out
}

/// Checks `v` against shape `s`; returns the mismatches, with paths.
fn check(schemas: &BTreeMap<String, Value>, s: &Value, v: &Value, at: &str, bad: &mut Vec<String>) {
    match s {
        Value::String(t) => {
            let (t, nullable) = match t.strip_suffix('?') {
                Some(t) => (t, true),
                None => (t.as_str(), false),
            };
            if v.is_null() && nullable {
                return;
            }
            if let Some(name) = t.strip_prefix('$') {
                let s = schemas.get(t).or_else(|| schemas.get(name));
                let s = s.unwrap_or_else(|| panic!("no schema {t}"));
                return check(schemas, s, v, at, bad);
            }
            let ok = match t {
                "string" => v.is_string(),
                "integer" => v.is_u64() || v.is_i64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "any" => true,
                "time" => v.as_str().is_some_and(|t| {
                    t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok()
                }),
                other => panic!("unknown type {other:?} in a schema"),
            };
            if !ok {
                bad.push(format!("{at}: {v} is not {s}"));
            }
        }
        Value::Array(items) => {
            let Some(arr) = v.as_array() else {
                return bad.push(format!("{at}: {v} is not an array"));
            };
            for (i, x) in arr.iter().enumerate() {
                check(schemas, &items[0], x, &format!("{at}[{i}]"), bad);
            }
        }
        Value::Object(keys) => {
            let Some(obj) = v.as_object() else {
                return bad.push(format!("{at}: {v} is not an object"));
            };
            if let Some(each) = keys.get("*") {
                for (k, x) in obj {
                    check(schemas, each, x, &format!("{at}.{k}"), bad);
                }
                return;
            }
            let open = keys.contains_key("...");
            for (k, shape) in keys {
                if k == "..." {
                    continue;
                }
                let (name, optional) = match k.strip_suffix('?') {
                    Some(n) => (n, true),
                    // Embedded command documents have no version of their own.
                    None => (k.as_str(), k == "schema_version" && !at.is_empty()),
                };
                match obj.get(name) {
                    Some(x) => check(schemas, shape, x, &format!("{at}.{name}"), bad),
                    None if optional => {}
                    None => bad.push(format!("{at}: no field {name} in {v}")),
                }
            }
            if !open {
                for k in obj.keys() {
                    if !keys.contains_key(k) && !keys.contains_key(&format!("{k}?")) {
                        bad.push(format!("{at}: field {k} is not documented"));
                    }
                }
            }
        }
        other => panic!("bad schema {other}"),
    }
}

/// Runs a command with `--json`; returns its exit status and document
/// (stdout, or stderr when stdout is empty: errors).
fn run(e: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = e.x(&all).output().unwrap();
    let text = if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    };
    let v = serde_json::from_slice(text)
        .unwrap_or_else(|err| panic!("{args:?}: not JSON ({err}): {}", stderr(&out)));
    (out.status.code().unwrap(), v)
}

#[test]
fn every_command_prints_the_documented_json() {
    let schemas = schemas();
    let e = Env::bare();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(12, 3), 3, false).unwrap();
    let disk = format!("d={}", img.display());
    let mut seen = Vec::new();
    let mut validate = |name: &str, args: &[&str], want: i32| {
        let (code, doc) = run(&e, args);
        assert_eq!(code, want, "{args:?}: {doc}");
        let mut bad = Vec::new();
        check(&schemas, &schemas[name], &doc, "", &mut bad);
        assert!(
            bad.is_empty(),
            "{args:?} against schema {name}:\n{}",
            bad.join("\n")
        );
        if name != "snapshot-diff" {
            assert_eq!(doc["schema_version"], 1, "{args:?}");
        }
        seen.push(name.to_string());
        doc
    };
    let kdf = ["--kdf-memory-kib", "64", "--kdf-time", "1"];
    let init = [&["init", "--segment-size", "4M"][..], &kdf].concat();
    let i = validate("init", &init, 0);
    assert_eq!(i["encryption"], "aes-256-gcm", "{i}");
    let first = validate(
        "backup",
        &["backup", "--vm", "vm", "--disk", &disk, "--label", "k=v"],
        0,
    );
    let p1 = first["point"].as_str().unwrap().to_string();
    validate("backup", &["backup", "--vm", "vm", "--disk", &disk], 0);
    validate("backup", &["backup", "--vm", "other", "--disk", &disk], 0);
    validate("points", &["points"], 0);
    validate("show", &["show", "vm@latest"], 0);
    let to = e.path("r.img").display().to_string();
    validate(
        "restore",
        &["restore", "vm@latest", "--disk", "d", "--to", &to],
        0,
    );
    validate("diff", &["diff", &p1, "vm@latest"], 0);
    let img = img.display().to_string();
    validate("snapshot-diff", &["snapshot-diff", &img, &img], 0);
    validate(
        "snapshot-diff",
        &["diff", &p1, "vm@latest", "--disk", "d", "--extents"],
        0,
    );
    validate("stats", &["stats"], 0);
    // A repository made like this one, and a copy into it.
    let like = e.path("like").display().to_string();
    let pw = e.password_file().display().to_string();
    let made = [
        &[
            "-r",
            &like,
            "init",
            "--like",
            &e.url,
            "--from-password-file",
            &pw,
        ][..],
        &kdf,
    ]
    .concat();
    let made = validate("init", &made, 0);
    assert_eq!(made["segment_size"], 4 << 20, "{made}");
    let copied = validate(
        "copy",
        &["copy", "--to", &like, "--to-password-file", &pw],
        0,
    );
    assert_eq!(copied["points_copied"], 3, "{copied}");
    let plan = validate(
        "restore-plan",
        &["restore", "--plan", "vm@latest", "--disk", "d"],
        0,
    );
    assert_eq!(plan["ready"], true, "{plan}");
    validate(
        "thaw",
        &["thaw", "vm@latest", "--tier", "bulk", "--days", "1"],
        0,
    );
    let v = validate("verify", &["verify", "--read-data", "--subset", "1/3"], 0);
    assert_eq!(v["subset"], "1/3", "a plain string, not {{\"Part\":..}}");
    validate("repair", &["repair", "--dry-run"], 0);
    validate("forget", &["forget", "--dry-run", &p1], 0);
    let pr = validate(
        "prune",
        &["prune", "--keep-last", "1", "--keep-within", "1d"],
        0,
    );
    assert!(pr["removed"].is_u64(), "no nested removed.removed: {pr}");
    validate("gc", &["gc", "--dry-run"], 0);
    let rebuilt = validate("index-rebuild", &["index", "rebuild"], 0);
    assert!(rebuilt["chunks"].as_u64().unwrap() > 0, "{rebuilt}");
    let file = |name: &str, pw: &str| {
        std::fs::write(e.path(name), pw).unwrap();
        e.path(name).display().to_string()
    };
    let (backup_pw, new_pw) = (file("backup-pw", "backup only"), file("new-pw", "new one"));
    let add = [
        &[
            "key",
            "add",
            "--backup-only",
            "--new-password-file",
            &backup_pw,
        ][..],
        &kdf,
    ]
    .concat();
    let added = validate("key-add", &add, 0);
    let slot = added["slot"].as_str().unwrap().to_string();
    let list = validate("key-list", &["key", "list"], 0);
    assert_eq!(list["slots"].as_array().unwrap().len(), 2, "{list}");
    // Errors are JSON too, with their exit class.
    let err = validate("error", &["show", "nobody@latest"], 1);
    assert_eq!(err["error"]["kind"], "error");
    let err = validate("error", &["points", "--no-such-flag"], 2);
    assert_eq!(err["error"]["kind"], "usage");
    let err = validate("error", &["diff", "vm@latest", "other@latest"], 2);
    assert_eq!(err["error"]["kind"], "usage");
    let passwd = [&["key", "passwd", "--new-password-file", &new_pw][..], &kdf].concat();
    validate("key-passwd", &passwd, 0);

    let e2 = e
        .x(&["key", "remove", &slot, "--json"])
        .env("XFULL_PASSWORD_FILE", &new_pw)
        .output()
        .unwrap();
    assert!(e2.status.success(), "{}", stderr(&e2));
    let mut bad = Vec::new();
    let doc: Value = serde_json::from_slice(&e2.stdout).unwrap();
    check(&schemas, &schemas["key-remove"], &doc, "", &mut bad);
    assert!(bad.is_empty(), "key remove: {bad:?}");
    seen.push("key-remove".into());
    // From here on the repository opens with the new password only.
    std::fs::copy(&new_pw, e.password_file()).unwrap();

    // serve and mount print their document once ready, then run until
    // SIGTERM (exit 130).
    let sock = e.path("nbd.sock").display().to_string();
    let mnt = e.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.display().to_string();
    for (name, args) in [
        ("serve", vec!["serve", "vm@latest", "--socket", &sock]),
        ("mount", vec!["mount", "vm@latest", &mnt]),
    ] {
        let doc = running_doc(&e, &args);
        let mut bad = Vec::new();
        check(&schemas, &schemas[name], &doc, "", &mut bad);
        assert!(
            bad.is_empty(),
            "{args:?} against schema {name}:\n{}",
            bad.join("\n")
        );
        assert_eq!(doc["schema_version"], 1, "{args:?}");
        seen.push(name.to_string());
    }

    // Every documented command schema was exercised (those of commands
    // that need an S3 server, by the S3 tests: `assert_documented`).
    for name in schemas.keys().filter(|n| !n.starts_with('$')) {
        assert!(
            seen.contains(name) || TESTED_ON_S3.contains(&name.as_str()),
            "schema {name} is not tested"
        );
    }
}

/// Schemas of commands that work on S3 only, checked where those run.
const TESTED_ON_S3: &[&str] = &["undelete"];

/// Panics unless `doc` matches docs/json.md's schema `name`.
pub(crate) fn assert_documented(name: &str, doc: &Value) {
    let schemas = schemas();
    let mut bad = Vec::new();
    check(&schemas, &schemas[name], doc, "", &mut bad);
    assert!(bad.is_empty(), "against schema {name}:\n{}", bad.join("\n"));
    assert_eq!(doc["schema_version"], 1, "{doc}");
}

/// The `--json` document a long-running command prints once ready; the
/// command is then stopped with SIGTERM and must exit 130.
fn running_doc(e: &Env, args: &[&str]) -> Value {
    use std::io::BufRead;
    let mut all = args.to_vec();
    all.push("--json");
    let mut child = e
        .std(&all)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let doc = loop {
        assert!(
            out.read_line(&mut text).unwrap() > 0,
            "{args:?} ended: {text}"
        );
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            break v;
        }
    };
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(130), "{args:?}");
    doc
}

#[test]
fn diff_prints_text_unless_json_and_refuses_two_vms() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(8, 5), 5, false).unwrap();
    e.backup("one", &[("d", &img)]);
    e.backup("one", &[("d", &img)]);
    e.backup("two", &[("d", &img)]);
    let out = e
        .x(&["diff", "one@latest", "one@latest", "--disk", "d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    // Was a JSON array with --disk, even without --json.
    assert!(
        text.starts_with("disk d: 0 B in 0 extents differ"),
        "{text}"
    );
    let out = e.x(&["diff", "one@latest", "two@latest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("two VMs"), "{}", stderr(&out));
}
