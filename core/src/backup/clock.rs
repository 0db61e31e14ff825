//! A backup's checks of time: a point is never dated where retention
//! would count from a moment that has not come.

use chrono::Utc;

use super::BackupRequest;
use super::prepare::Newest;
use crate::error::{Error, Result};
use crate::repo::Repository;

/// A point dated in the future becomes every VM's newest for retention:
/// `prune --keep-within 7d` would then remove every real point.
pub(super) fn check_time(repo: &Repository, req: &BackupRequest) -> Result<()> {
    let margin = repo.config().protocol.margin();
    match req.time {
        Some(t) if !req.allow_future && t > Utc::now() + margin => {
            Err(Error::InvalidArgument(format!(
                "--time {} is ahead of this machine's clock by more than the clock margin ({} s): \
                 retention would count from it and remove real points; pass --allow-future if \
                 that is meant",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                margin.num_seconds()
            )))
        }
        _ => Ok(()),
    }
}

/// A point is dated after the VM's newest (`commit::point_time`), but
/// not by moving it past the clock margin (plus a second: an unreadable
/// point counts by the end of its id's second): a newest point far
/// ahead (a host's clock, a `--time --allow-future`) would pull every
/// later point into its second, and retention would count from there
/// (review at stop 49). Such a backup stops before it stores anything.
pub(super) fn check_newest_not_ahead(
    repo: &Repository,
    req: &BackupRequest,
    newest: Option<&Newest>,
) -> Result<()> {
    let margin = repo.config().protocol.margin();
    let Some(newest) = newest.filter(|_| req.time.is_none()) else {
        return Ok(());
    };
    let ahead = newest.time - Utc::now();
    if ahead <= margin + chrono::Duration::seconds(1) {
        return Ok(());
    }
    Err(Error::NewestPointAhead {
        point: format!("{}@{}", req.vm, newest.point),
        // Rounded up: "60 s ahead, more than 60 s" read as a contradiction.
        ahead_secs: (ahead.num_milliseconds() + 999) / 1000,
        margin_secs: margin.num_seconds().max(0) as u64,
    })
}
