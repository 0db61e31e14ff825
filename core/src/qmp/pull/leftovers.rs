//! Sessions' lock files, and what killed sessions left in QEMU: a tag
//! whose lock file is not held by a live process is torn down by the
//! next session (see the parent module).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde_json::Value;

use super::{Created, PullSession};
use crate::qmp::client::Qmp;
use crate::qmp::error::QmpError;

/// Creates this session's lock file (`xfull-TAG.lock`, new) and holds an
/// exclusive lock on it for the session's life.
pub(super) fn new_lock(dir: &Path) -> Result<(String, PathBuf, File), QmpError> {
    for _ in 0..16 {
        let tag = format!("{:08x}", rand::random::<u32>());
        let path = dir.join(format!("xfull-{tag}.lock"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                flock(&f, FlockOperation::NonBlockingLockExclusive).map_err(|e| QmpError::Io {
                    what: "cannot lock",
                    path: path.display().to_string(),
                    source: e.into(),
                })?;
                return Ok((tag, path, f));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(QmpError::Io {
                    what: "cannot create the session lock",
                    path: path.display().to_string(),
                    source: e,
                });
            }
        }
    }
    Err(QmpError::Unusable(format!(
        "cannot find a free session name in {}",
        dir.display()
    )))
}

/// Tears down what killed sessions left in QEMU: exports, jobs and
/// nodes named `xfull-TAG-*` whose `xfull-TAG.lock` in `dir` is not held.
/// Returns notes on what it could not do or did not dare to.
pub(super) async fn clean_leftovers(qmp: &mut Qmp, dir: &Path, own: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut exports = Vec::new();
    if let Ok(Value::Array(list)) = qmp.execute("query-block-exports", Value::Null).await {
        exports = list
            .iter()
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect();
    }
    let jobs = qmp.job_ids().await.unwrap_or_default();
    let nodes: Vec<String> = qmp
        .block_nodes()
        .await
        .map(|n| n.into_iter().map(|n| n.node_name).collect())
        .unwrap_or_default();
    let mut tags: Vec<String> = exports
        .iter()
        .chain(&jobs)
        .chain(&nodes)
        .filter_map(|n| leftover_tag(n))
        .filter(|t| t != own)
        .collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        let lock_path = dir.join(format!("xfull-{tag}.lock"));
        let Ok(lock) = OpenOptions::new().write(true).open(&lock_path) else {
            notes.push(format!(
                "QEMU holds objects of another xfull session xfull-{tag}- whose lock is not in \
                 {}: left alone",
                dir.display()
            ));
            continue;
        };
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live session
        }
        let mine = |n: &&String| leftover_tag(n).as_deref() == Some(tag.as_str());
        let mut s = Created {
            exports: exports.iter().filter(mine).cloned().collect(),
            jobs: jobs.iter().filter(mine).cloned().collect(),
            ..Created::default()
        };
        // Each image as (format node, its file node), as a session
        // records them, so that the format node goes first.
        let ns: Vec<&String> = nodes.iter().filter(mine).collect();
        for n in ns.iter().filter(|n| !n.ends_with("-f")) {
            let file = format!("{n}-f");
            let file = ns.iter().any(|m| **m == file).then_some(file);
            s.images
                .push((Some(n.to_string()), file, dir.join(format!("{n}.qcow2"))));
        }
        for f in ns.iter().filter(|n| n.ends_with("-f")) {
            let base = &f[..f.len() - 2];
            if !ns.iter().any(|m| m.as_str() == base) {
                s.images
                    .push((None, Some(f.to_string()), dir.join(format!("{base}.qcow2"))));
            }
        }
        let mut leftover = PullSession {
            tag: tag.clone(),
            bitmap_prefix: String::new(),
            disks: Vec::new(),
            created: s,
            lock_path,
            _lock: lock,
            notes: Vec::new(),
        };
        let failed = leftover.tear_down(qmp).await;
        // Kept while something is left, for the session after this one.
        leftover.release_lock(failed.is_empty());
        notes.extend(failed);
    }
    notes
}

/// `TAG` of a name `xfull-TAG-...` (TAG: 8 hex digits).
fn leftover_tag(name: &str) -> Option<String> {
    let rest = name.strip_prefix("xfull-")?;
    let (tag, _) = rest.split_once('-')?;
    (tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| tag.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_tags_are_recognised_only_in_xfull_names() {
        assert_eq!(leftover_tag("xfull-0badcafe-0"), Some("0badcafe".into()));
        assert_eq!(leftover_tag("xfull-0badcafe-0-f"), Some("0badcafe".into()));
        assert_eq!(leftover_tag("xfull-0badcafe-sys"), Some("0badcafe".into()));
        assert_eq!(leftover_tag("disk0"), None);
        assert_eq!(leftover_tag("xfull-nothex00-0"), None);
        assert_eq!(leftover_tag("xfull-0badcafe"), None);
    }
}
