//! Helpers shared by the local backend's integration tests.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Sets a file's modification time (not following a symlink) to `ago` in
/// the past.
pub fn age(p: &Path, ago: Duration) {
    let d = (SystemTime::now() - ago)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let t = rustix::fs::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: 0,
    };
    let ts = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub const DAY: Duration = Duration::from_secs(86_400);
