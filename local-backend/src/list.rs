//! Listing: a walk of the prefix's directories through directory fds.
//!
//! Each directory is opened from its parent's fd with `O_NOFOLLOW`, so a
//! symbolic link anywhere (`points/vm2 -> /elsewhere`) is skipped, never
//! walked: a listing reports only what is in the repository. Entries whose
//! name no key has (staging files `KEY#N`, `..`, names with other
//! characters) are skipped too. The walk runs on a blocking thread and
//! hands objects over a bounded channel, so memory stays bounded however
//! many objects there are; it stops when the stream is dropped.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use rustix::fs::{AtFlags, Dir, FileType, Mode};
use rustix::io::Errno;
use tokio::sync::mpsc;
use xfull_core::backend::{BackendError, ObjectMeta};
use xfull_core::keys;

use crate::fs::{DIR, Root, is_component, is_key, kind_of, mtime_of, size_of};

/// Objects handed over ahead of the consumer.
const QUEUE: usize = 256;

/// Deeper than any key of the key space (`trash/points/<vm>/<id>` is 4)
/// with room to spare; a deeper tree is someone else's and not walked
/// (each level holds a directory fd).
const MAX_DEPTH: usize = 16;

type Item = Result<ObjectMeta, BackendError>;

/// The objects whose key starts with `prefix`.
pub(crate) fn list(root: Arc<Root>, prefix: &str) -> BoxStream<'static, Item> {
    let prefix = prefix.to_string();
    let location = root.location.clone();
    // Spawned on the first poll, inside the caller's runtime.
    futures::stream::once(async move {
        let (tx, rx) = mpsc::channel(QUEUE);
        let walker = tokio::task::spawn_blocking(move || walk(&root, &prefix, &tx));
        (rx, Some((walker, location)))
    })
    .flat_map(|state| {
        futures::stream::unfold(state, |(mut rx, walker)| async move {
            if let Some(item) = rx.recv().await {
                return Some((item, (rx, walker)));
            }
            // The channel closed: the walk ended. If it died instead, the
            // listing is incomplete, and a caller must not take it for
            // complete (a sweep would delete what the missing points use).
            let (walker, location) = walker?;
            let e = walker.await.err()?;
            let err = Err(BackendError::Other {
                location,
                message: format!("the listing stopped: {e}"),
            });
            Some((err, (rx, None)))
        })
    })
    .boxed()
}

/// One directory being read, and the key prefix of its entries.
struct Level {
    dir: Dir,
    base: String,
}

fn walk(root: &Root, prefix: &str, tx: &mpsc::Sender<Item>) {
    let send = |item: Item| tx.blocking_send(item).is_ok();
    // The directory holding every key with this prefix.
    let dir_path = prefix.rfind('/').map_or("", |i| &prefix[..i]);
    if !dir_path.is_empty() && !is_key(dir_path) {
        // No key lies beneath a name no key has.
        return;
    }
    let top = match root.open_beneath(dir_path, DIR) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return,
        Err(e) => {
            send(Err(root.open_error(dir_path, e)));
            return;
        }
    };
    let base = if dir_path.is_empty() {
        String::new()
    } else {
        format!("{dir_path}/")
    };
    let mut stack = match Dir::new(top) {
        Ok(dir) => vec![Level { dir, base }],
        Err(e) => {
            send(Err(root.other(dir_path, e)));
            return;
        }
    };
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            return;
        };
        let entry = match level.dir.read() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                send(Err(root.other(level.base.trim_end_matches('/'), e)));
                return;
            }
            Some(Ok(entry)) => entry,
        };
        let Ok(name) = std::str::from_utf8(entry.file_name().to_bytes()) else {
            continue;
        };
        if !is_component(name.as_bytes()) {
            continue;
        }
        let key = format!("{}{name}", level.base);
        let Ok(fd) = level.dir.fd() else { continue };
        let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Deleted since the directory was read.
            Err(Errno::NOENT) => continue,
            Err(e) => {
                send(Err(root.other(&key, e)));
                return;
            }
        };
        match kind_of(&st) {
            FileType::Directory => {
                let sub = format!("{key}/");
                let wanted = sub.starts_with(prefix) || prefix.starts_with(&sub);
                if !wanted || depth >= MAX_DEPTH {
                    continue;
                }
                let dir = match rustix::fs::openat(fd, name, DIR, Mode::empty()) {
                    Ok(sub_fd) => Dir::new(sub_fd),
                    // Gone since the stat.
                    Err(Errno::NOENT) => continue,
                    // Swapped for a link or a file since the stat: damage,
                    // as a link met at the stat is (a gap is not safe).
                    Err(Errno::LOOP | Errno::NOTDIR) => {
                        let why = "no longer a directory (a symbolic link or a file)".to_string();
                        send(Err(root.corrupt(&key, why)));
                        return;
                    }
                    Err(e) => Err(e),
                };
                match dir {
                    Ok(dir) => stack.push(Level { dir, base: sub }),
                    Err(e) => {
                        send(Err(root.other(&key, e)));
                        return;
                    }
                }
            }
            // Never followed, never an object; but where an object or a
            // directory of them could be, damage naming it: skipped in
            // silence, gc did not see the points behind a linked
            // `points/<vm>` and deleted their data (review, stop 50).
            FileType::Symlink => {
                let sub = format!("{key}/");
                if (key.starts_with(prefix) || prefix.starts_with(&sub)) && in_key_space(&key) {
                    let why = "a symbolic link (the repository holds none)".to_string();
                    send(Err(root.corrupt(&key, why)));
                    return;
                }
            }
            // A FIFO or device under a key is listed: reading it reports
            // the damage by name, which a silent gap would not.
            _ if key.starts_with(prefix) => {
                let meta = ObjectMeta {
                    key,
                    size: size_of(&st),
                    last_modified: mtime_of(&st),
                    storage_class: None,
                };
                if !send(Ok(meta)) {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// True under the key space's own top-level names: a link elsewhere (a
/// user's `notes/x`, met by a listing of everything such as `stats`'s)
/// is no place of an object.
fn in_key_space(key: &str) -> bool {
    use xfull_core::crypto::slot::SLOTS;
    let top = key.split('/').next().unwrap_or_default();
    top == keys::CONFIG
        || [
            keys::CHUNKS,
            keys::PACKS,
            keys::INDEX,
            keys::NODES,
            keys::POINTS,
            keys::TRASH,
            keys::LEASES,
            keys::GC,
            keys::DAMAGE,
            SLOTS,
        ]
        .iter()
        .any(|p| p.strip_suffix('/') == Some(top))
}
