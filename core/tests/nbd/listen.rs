//! The server's unix socket: it must never be reachable by another user,
//! not even for a moment, and an existing file is never replaced.

use std::mem::MaybeUninit;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use rustix::fs::inotify;
use xfull_core::nbd::{Listener, NbdError};

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Between bind(2) creating the socket (mode 0777 less the umask) and a
/// chmod to 0600, another local user could connect and read disks. The
/// property: the socket's name appears in the directory with mode 0600
/// already and its mode is never changed there. inotify tells it without
/// racing the server: a chmod at the final path is an IN_ATTRIB event on
/// its name, a socket created there an IN_CREATE (a rename is
/// IN_MOVED_TO).
#[tokio::test]
async fn the_socket_appears_with_mode_0600_and_is_never_chmodded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let watch =
        inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(
        &watch,
        dir.path(),
        inotify::WatchFlags::CREATE | inotify::WatchFlags::ATTRIB | inotify::WatchFlags::MOVED_TO,
    )
    .unwrap();
    let path = dir.path().join("nbd.sock");
    let listener = Listener::bind_unix(&path).unwrap();
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
    let mut events = inotify::Reader::new(&watch, &mut buf);
    let mut seen = Vec::new();
    loop {
        match events.next() {
            Ok(e) => {
                let name = e.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.as_deref() == Some("nbd.sock") {
                    seen.push(e.events());
                }
            }
            Err(e) if e == rustix::io::Errno::AGAIN => break,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
    assert!(
        seen.iter().all(|f| *f == inotify::ReadFlags::MOVED_TO),
        "the socket was created or changed at its final path: {seen:?}"
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // The private directory it was made in is gone.
    assert_eq!(entries(dir.path()), ["nbd.sock"]);
    // And it is a working listener at that path.
    tokio::net::UnixStream::connect(&path).await.unwrap();
    drop(listener);
}

/// An existing file, socket or symlink (even dangling) at the path is an
/// error naming it and stays as it was; nothing is left behind.
#[tokio::test]
async fn an_existing_path_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    let sock = dir.path().join("sock");
    let first = Listener::bind_unix(&sock).unwrap();
    for p in [&file, &link, &sock] {
        match Listener::bind_unix(p) {
            Err(NbdError::Listen { address, message }) => {
                assert_eq!(address, p.display().to_string(), "{message}")
            }
            other => panic!("{}: {other:?}", p.display()),
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(entries(dir.path()), ["file", "link", "sock"]);
    // A missing directory: an error, and nothing created.
    let e = Listener::bind_unix(&dir.path().join("no/such/dir/s")).unwrap_err();
    assert!(matches!(e, NbdError::Listen { .. }), "{e:?}");
    assert_eq!(entries(dir.path()), ["file", "link", "sock"]);
    drop(first);
}
