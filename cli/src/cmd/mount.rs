//! `xfull mount POINT... MOUNTPOINT`: points' disks as read-only image
//! files (FUSE) until SIGINT/SIGTERM/SIGHUP (not under `nohup`), then
//! unmounted. Root's mounts are unmounted by fusermount3 if xfull is
//! killed or crashes (auto_unmount).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use xfull_core::Error;
use xfull_core::serve::{ServeOptions, Served};

use crate::cli::{Cli, MountArgs};
use crate::cmd::mountpoint::{self, Mountpoint};
use crate::cmd::serving::{Notices, spec};
use crate::fuse_fs::{MountedPoint, PointsFs};

pub async fn run(cli: &Cli, args: &MountArgs) -> Result<()> {
    let (mountpoint, names) = args.args.split_last().expect("clap requires two arguments");
    let checked = Mountpoint::check(Path::new(mountpoint))?;
    let mountpoint = checked.path.clone();
    // `xfull mount ... &` in a terminal that is then closed gets SIGHUP:
    // by default it would kill xfull and leave a dead mount and the
    // lease; it unmounts as SIGTERM does (unless run under `nohup`).
    // Caught from the start (kept until the mount waits for it), not
    // only once mounted: a SIGHUP just after the mountpoint is printed
    // was otherwise fatal.
    let mut hangup = crate::Hangup::catch()?;
    let repo = crate::open::open(cli).await?;
    let mut specs = Vec::new();
    for name in names {
        specs.push(spec(&repo, name, &[]).await?);
    }
    let progress = crate::progress();
    let opts = ServeOptions {
        cache_bytes: args.cache,
        ..Default::default()
    };
    let served = Served::open(&repo, &specs, &opts, progress.clone()).await?;
    let result = mount(cli, &checked, &served, &mut hangup).await;
    let lapsed = served.lapse();
    let closed = served.close().await;
    // Unmounted because the lease lapsed: an error (exit 1), not 130, and
    // the lapse is what to say (the store is likely still unreachable,
    // so ending the lease fails too: a warning then).
    if let Some(lapsed) = lapsed {
        if let Err(e) = closed {
            say!("xfull: warning: {e:#}");
        }
        result?;
        return Err(lapsed.into());
    }
    closed?;
    result?;
    Err(Error::Cancelled {
        cleaned: format!(
            "{} was unmounted; the lease on the points was released",
            mountpoint.display()
        ),
    }
    .into())
}

/// Mounts, then waits for SIGINT/SIGTERM/SIGHUP (or an unmount from
/// outside).
async fn mount(
    cli: &Cli,
    checked: &Mountpoint,
    served: &Served,
    hangup: &mut crate::Hangup,
) -> Result<()> {
    let points = served
        .manifests
        .iter()
        .enumerate()
        .map(|(n, m)| MountedPoint {
            vm: m.vm.to_string(),
            id: m.id.to_string(),
            time: SystemTime::from(m.time),
            disks: served
                .exports
                .iter()
                .filter(|(i, _)| *i == n)
                .map(|(_, e)| e.clone())
                .collect(),
        })
        .collect();
    let mountpoint = checked.path.as_path();
    let fs = PointsFs::new(points, tokio::runtime::Handle::current(), checked.owner);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("xfull".into()),
        fuser::MountOption::Subtype("xfull".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    // Root's mount through fusermount3 with auto_unmount: fusermount3
    // stays as a watcher and, once xfull's end of its socket closes
    // (xfull exits, is killed, crashes), lazily unmounts the mountpoint
    // if it is a dead FUSE mount (open() gives ENOTCONN); a live mount
    // there, ours or one made since, is left alone. Without it a killed
    // mount stayed dead ("Transport endpoint is not connected") until
    // someone ran `fusermount3 -u`. fuser refuses auto_unmount with the
    // owner-only ACL (libfuse 2's fusermount wanted allow_other or
    // allow_root with it; 3.14's takes it alone); RootAndOwner mounts
    // with allow_other and fuser answers EACCES to anyone else itself,
    // and the owner is root: the same users as before. Not for other
    // users: allow_other needs `user_allow_other` in /etc/fuse.conf.
    let root = rustix::process::geteuid().is_root();
    if root {
        config.mount_options.push(fuser::MountOption::AutoUnmount);
        config.acl = fuser::SessionACL::RootAndOwner;
    }
    let before = mountpoint::mounts()?;
    let cannot_mount = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot mount {} (FUSE: is /dev/fuse there, and fuse3 installed?): {e}",
            mountpoint.display()
        )
    };
    let session = fuser::Session::new(fs, mountpoint, &config).map_err(cannot_mount)?;
    // Held until xfull exits (see `released_before_the_watcher_socket`).
    let fuse_last = if root {
        Some(released_before_the_watcher_socket(&session)?)
    } else {
        None
    };
    let session = session.spawn().map_err(cannot_mount)?;
    // fusermount3 mounted by path; root checks it landed on the
    // directory checked (see `mountpoint`). Not other users: mounting
    // is root's only through their setuid fusermount3, which checks the
    // mountpoint against their own permissions itself.
    if root && let Err(e) = checked.landed(&before) {
        // Kept, not dropped: dropping closes the auto_unmount socket
        // while the mount is live, and the watcher leaves live mounts;
        // once xfull has exited the mount is dead and the watcher
        // removes it.
        std::mem::forget(session);
        // So is the descriptor above the watcher's socket: xfull exits
        // with the mount live, and the watcher must find it dead.
        std::mem::forget(fuse_last);
        return Err(e);
    }
    if cli.json {
        let doc = serde_json::json!({
            "mountpoint": mountpoint,
            "points": served.manifests.iter().map(|m| m.point_name()).collect::<Vec<_>>(),
            "lease": served.lease_id(),
        });
        println!("{}", crate::output::json_text(&doc)?);
    } else {
        println!("{}", mountpoint.display());
        if !cli.quiet {
            say!(
                "xfull: mounted {} at {} (read-only); Ctrl-C or SIGTERM unmounts",
                served
                    .manifests
                    .iter()
                    .map(|m| m.point_name())
                    .collect::<Vec<_>>()
                    .join(", "),
                mountpoint.display()
            );
        }
    }
    std::io::Write::flush(&mut std::io::stdout())?;
    let progress = crate::progress();
    let _notices = Notices::start(progress.clone());
    let session = Arc::new(std::sync::Mutex::new(Some(session)));
    // Until cancelled, or until someone unmounts it (the session ends).
    loop {
        tokio::select! {
            _ = progress.cancelled() => break,
            _ = hangup.recv() => break,
            _ = served.lapsed() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let done = session
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .is_none_or(|s| s.guard.is_finished());
                if done {
                    break;
                }
            }
        }
    }
    let s = session.lock().unwrap_or_else(|p| p.into_inner()).take();
    match s {
        // Unmounted from outside: the kernel has let it go. Dropping the
        // session would umount(2) the path again (fuser 0.18 takes the
        // POLLERR of an unmounted /dev/fuse for "still mounted"): EINVAL,
        // or whatever was mounted there since would be unmounted. The
        // session is let go as it is; the process ends.
        Some(s) if s.guard.is_finished() => std::mem::forget(s),
        Some(s) => {
            let at = mountpoint.to_path_buf();
            tokio::task::spawn_blocking(move || unmount(s, &at)).await??;
        }
        None => {}
    }
    Ok(())
}

/// A second descriptor of the session's /dev/fuse, numbered above every
/// descriptor open now, fusermount3's watcher socket among them.
///
/// When xfull is killed, the kernel closes its descriptors in ascending
/// order but releases the files in the reverse order (task work runs
/// last-queued first, as on the 6.18 kernel this was measured on; a
/// kernel that ran it first-queued first would not be helped). With
/// /dev/fuse below the watcher's socket, the socket went first: the
/// watcher woke, and on a loaded machine its open() of the mountpoint
/// could reach the FUSE connection before /dev/fuse's release aborted
/// it. That open failed with ECONNABORTED, not the ENOTCONN the watcher
/// takes for a dead mount, so it left the dead mount in place (9 kills
/// in 100 beside four busy loops on two cores; 0 in 100 with this).
/// Released first, /dev/fuse aborts the connection before the watcher
/// wakes.
fn released_before_the_watcher_socket(
    fuse: &impl std::os::fd::AsFd,
) -> Result<std::os::fd::OwnedFd> {
    let mut top = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(n) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        {
            top = top.max(n);
        }
    }
    rustix::io::fcntl_dupfd_cloexec(fuse, top + 1)
        .map_err(|e| anyhow::anyhow!("duplicating the /dev/fuse descriptor above {top}: {e}"))
}

/// Unmounts and waits for the FUSE thread. A busy mount (a file inside
/// open, a shell in it, a loop device on an image) refuses umount(2)
/// with EBUSY; it is then detached lazily (`umount -l`): gone from the
/// tree at once, and its open files fail with ENOTCONN once xfull has
/// exited, rather than a dead mount left until someone unmounts it.
///
/// Root unmounts here, not through fuser: with auto_unmount, fuser's
/// unmount only closes the socket to fusermount3's watcher, which
/// leaves a live mount alone (and joining the FUSE thread would then
/// wait forever). Other users get EPERM from umount(2); fuser then runs
/// `fusermount3 -u -z`.
fn unmount(s: fuser::BackgroundSession, at: &Path) -> Result<()> {
    use rustix::io::Errno;
    use rustix::mount::UnmountFlags;
    match rustix::mount::unmount(at, UnmountFlags::empty()) {
        // Gone: fuser closes the watcher's socket (nothing left for it
        // to do) and the FUSE thread has ended.
        Ok(()) => s
            .umount_and_join()
            .map_err(|e| anyhow::anyhow!("unmounting {}: {e}", at.display())),
        // Detached, its FUSE thread still answering the open files:
        // not joined; xfull exits.
        Err(Errno::BUSY) => rustix::mount::unmount(at, UnmountFlags::DETACH)
            .map_err(|e| anyhow::anyhow!("unmounting {} (busy): {e}", at.display())),
        Err(Errno::PERM) => s
            .umount_and_join()
            .map_err(|e| anyhow::anyhow!("unmounting {}: {e}", at.display())),
        Err(e) => Err(anyhow::anyhow!("unmounting {}: {e}", at.display())),
    }
}
