//! The connection: greeting, commands, QEMU's errors quoted, bitmaps.

use serde_json::{Value, json};
use xfull_core::qmp::{Qmp, QmpError};

use crate::daemon::Daemon;

#[tokio::test]
async fn greets_and_quotes_qemus_errors() {
    let d = Daemon::start(1 << 20, 0, false);
    let mut q = d.connect().await;
    assert!(
        q.version().starts_with(|c: char| c.is_ascii_digit()),
        "{}",
        q.version()
    );

    let e = q.execute("no-such-command", Value::Null).await.unwrap_err();
    assert_eq!(e.class(), Some("CommandNotFound"));
    assert!(
        e.to_string().contains("no-such-command has not been found"),
        "{e}"
    );

    // The connection goes on after an error.
    let e = q
        .execute(
            "block-dirty-bitmap-add",
            json!({"node": "nonode", "name": "b"}),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nonode"), "{e}");
    assert!(
        q.block_nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.node_name == "disk0")
    );
}

#[tokio::test]
async fn a_missing_socket_or_a_non_qmp_peer_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.sock");
    let e = Qmp::connect(&path).await.unwrap_err();
    assert!(matches!(e, QmpError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("none.sock"), "{e}");

    // A peer that says something else than a QMP greeting.
    let path = dir.path().join("other.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"{\"return\": {}}\n").await.unwrap();
        let mut rest = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_end(&mut rest).await;
    });
    let e = Qmp::connect(&path).await.unwrap_err();
    assert!(matches!(e, QmpError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("greeting"), "{e}");
}

#[tokio::test]
async fn bitmaps_are_listed_added_and_removed() {
    let d = Daemon::start(1 << 20, 0, false);
    let mut q = d.connect().await;
    q.add_bitmap("disk0", "b1", false).await.unwrap();
    let node = q.resolve_node("disk0").await.unwrap();
    assert_eq!(node.size, 1 << 20);
    assert_eq!(node.driver, "raw");
    assert!(!node.can_persist_bitmaps());
    let b = node.bitmap("b1").expect("the bitmap is listed");
    assert!(b.recording && !b.inconsistent && !b.persistent);

    let e = q.add_bitmap("disk0", "b1", false).await.unwrap_err();
    assert!(e.to_string().contains("b1"), "{e}");
    q.remove_bitmap("disk0", "b1").await.unwrap();
    assert!(
        q.resolve_node("disk0")
            .await
            .unwrap()
            .bitmap("b1")
            .is_none()
    );

    let e = q.resolve_node("sda").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"sda\"") && msg.contains("disk0") && msg.contains("file0"),
        "{msg}"
    );
}

/// A command that timed out may still be answered later: that answer
/// (an older id) is passed over, not taken as a protocol error that
/// fails the next command.
#[tokio::test]
async fn a_late_answer_to_a_timed_out_command_is_passed_over() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let greeting = br#"{"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": ""}, "capabilities": []}}"#;
        w.write_all(greeting).await.unwrap();
        w.write_all(b"\n").await.unwrap();
        let id = |line: &str| serde_json::from_str::<Value>(line).unwrap()["id"].clone();
        // qmp_capabilities
        let first = lines.next_line().await.unwrap().unwrap();
        w.write_all(format!("{{\"return\": {{}}, \"id\": {}}}\n", id(&first)).as_bytes())
            .await
            .unwrap();
        // The slow command: answered only once the next one came.
        let slow = lines.next_line().await.unwrap().unwrap();
        let next = lines.next_line().await.unwrap().unwrap();
        for (line, v) in [(&slow, "\"late\""), (&next, "\"mine\"")] {
            let answer = format!("{{\"return\": {v}, \"id\": {}}}\n", id(line));
            w.write_all(answer.as_bytes()).await.unwrap();
        }
        let _ = lines.next_line().await;
    });
    let timeout = std::time::Duration::from_millis(300);
    let mut q = Qmp::connect_with(&path, timeout).await.unwrap();
    let e = q.execute("slow", Value::Null).await.unwrap_err();
    assert!(matches!(e, QmpError::Timeout { .. }), "{e:?}");
    let got = q.execute("next", Value::Null).await.unwrap();
    assert_eq!(got, json!("mine"));
}
