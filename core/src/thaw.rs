//! `xfull restore --plan` and `xfull thaw`: which objects a restore of a
//! point needs from an archive class, and asking the store to thaw them.
//!
//! Both read metadata only (the point's nodes and the chunk index, which
//! stay hot) and one HEAD per pack the point uses: every pack that holds
//! a copy of one of its chunks (a chunk stored twice, after a repair or
//! by two backups at once, has two), since a restore falls back to a
//! second copy when the first is gone or damaged. A thaw is idempotent
//! and resumable by construction: it looks at every pack's state first and
//! asks only for those still archived with no thaw running, so an
//! interrupted thaw is finished by running it again, and a second run
//! asks for nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;

use crate::archive::{ArchiveState, ThawAnswer, ThawTier};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::manifest::Manifest;
use crate::placement::archive::PackState;
use crate::progress::Progress;
use crate::repo::Repository;

/// Nodes read and packs looked at, at once.
const IN_FLIGHT: usize = 16;

/// What a restore of some disks of a point needs.
#[derive(Clone, Debug, Default)]
pub struct ThawPlan {
    /// Packs the restore reads, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Chunks the index does not know (a restore reports them damaged).
    pub unknown_chunks: u64,
    /// Packs the index names that are gone (rewritten by a gc since, or
    /// lost): a restore reads another copy or reports the chunk damaged.
    pub missing_packs: u64,
    /// Every pack that is not hot: archived, thawing or thawed.
    pub archive: Vec<PackState>,
}

/// Objects and bytes, per class or state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub objects: u64,
    pub bytes: u64,
}

impl ThawPlan {
    /// Packs archived with no thaw running, or whose thawed copy has
    /// expired, per storage class.
    pub fn to_thaw(&self) -> BTreeMap<String, Count> {
        self.count(ArchiveState::needs_thaw)
    }

    /// Packs being thawed, per storage class.
    pub fn thawing(&self) -> BTreeMap<String, Count> {
        self.count(|s| matches!(s, ArchiveState::Thawing { .. }))
    }

    /// Packs with a readable (unexpired) copy, per storage class.
    pub fn thawed(&self) -> BTreeMap<String, Count> {
        self.count(|s| matches!(s, ArchiveState::Thawed { .. }) && s.readable())
    }

    /// Whether no pack waits for a thaw. Chunks the index does not know
    /// and packs gone are not counted: no thaw brings them back, and
    /// `restore --wait` would wait for them forever.
    pub fn ready(&self) -> bool {
        self.archive.iter().all(|p| p.state.readable())
    }

    fn count(&self, which: impl Fn(&ArchiveState) -> bool) -> BTreeMap<String, Count> {
        let mut m: BTreeMap<String, Count> = BTreeMap::new();
        for p in self.archive.iter().filter(|p| which(&p.state)) {
            let c = m
                .entry(p.state.class().unwrap_or("").to_string())
                .or_default();
            c.objects += 1;
            c.bytes += p.bytes;
        }
        m
    }
}

/// Finds the packs a restore of `disks` of `m` reads and their state.
pub async fn plan(
    repo: &Repository,
    m: &Manifest,
    disks: &[String],
    progress: &Progress,
) -> Result<ThawPlan> {
    let mut segments = Vec::new();
    for d in disks {
        segments.push(m.disk(d)?.segments.as_slice());
    }
    let nodes = crate::point_objects::nodes_of(segments);
    let found = crate::point_objects::packs_of_nodes(repo, &nodes, progress).await?;
    let (packs, unknown) = (found.packs, found.unknown_chunks);
    let (states, missing) = pack_states(&repo.chunks(), &packs, progress).await?;
    Ok(ThawPlan {
        packs: states.len() as u64,
        bytes: states.iter().map(|s| s.bytes).sum(),
        unknown_chunks: unknown,
        missing_packs: missing,
        archive: states
            .into_iter()
            .filter(|s| s.state != ArchiveState::Hot)
            .collect(),
    })
}

/// What `thaw` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThawOutcome {
    /// Thaws asked for now.
    pub requested: Count,
    /// Already being thawed (asked by an earlier run): left alone.
    pub in_progress: Count,
    /// Already readable: left alone.
    pub thawed: Count,
    /// Packs the index names that are gone: the plan's, and those gone
    /// since it looked (a gc rewrote them). A restore reads another copy
    /// or reports the chunk damaged.
    pub missing_packs: u64,
}

/// Asks for a readable copy, for `days` days at `tier`, of every pack of
/// `plan` that is archived with no thaw running. `days` is needed only for
/// classes that keep a thawed copy for a number of days (the Glacier
/// classes; Intelligent-Tiering moves an object back to a hot tier).
pub async fn thaw(
    repo: &Repository,
    plan: &ThawPlan,
    days: Option<u32>,
    tier: ThawTier,
    progress: &Progress,
) -> Result<ThawOutcome> {
    if days == Some(0) {
        return Err(Error::InvalidArgument(
            "a thaw must keep its copy at least 1 day".into(),
        ));
    }
    let mut out = ThawOutcome {
        missing_packs: plan.missing_packs,
        ..ThawOutcome::default()
    };
    let add = |c: &mut Count, p: &PackState| {
        c.objects += 1;
        c.bytes += p.bytes;
    };
    // A copy that ends before the days asked for is asked for again: S3
    // extends it. Left alone, `thaw --days 7` could not keep a copy that
    // expires tonight through a restore that needs the week (review,
    // stop 51).
    let keep_until = days.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
    let mut asks = Vec::new();
    for p in &plan.archive {
        let short = keep_until.is_some_and(|by| p.state.thawed_until_before(by));
        match p.state {
            _ if p.state.needs_thaw() || short => asks.push(p),
            ArchiveState::Thawing { .. } => add(&mut out.in_progress, p),
            ArchiveState::Archived { .. } | ArchiveState::Thawed { .. } | ArchiveState::Hot => {
                add(&mut out.thawed, p)
            }
        }
    }
    // Every class that gets a request, copies to extend included, is
    // checked before the first one: checking only the classes still to
    // thaw sent Expedited requests for DEEP_ARCHIVE copies to extend, a
    // tier that class lacks (review 95).
    let classes: std::collections::BTreeSet<&str> =
        asks.iter().filter_map(|p| p.state.class()).collect();
    for class in classes {
        if days.is_none() && crate::archive::thaw_keeps_days(class) {
            return Err(Error::InvalidArgument(format!(
                "{class} keeps a thawed copy for a number of days: give --days"
            )));
        }
        if crate::archive::estimate(class, tier, 1, 1).is_none() {
            return Err(Error::InvalidArgument(format!(
                "{class} has no {} retrieval tier: use another --tier",
                tier.name()
            )));
        }
    }
    progress.add_total(asks.len() as u64);
    let placement = Arc::new(repo.chunks());
    let mut answers = futures::stream::iter(asks.into_iter().map(|p| {
        let placement = placement.clone();
        // Intelligent-Tiering takes no days: it moves the pack back to
        // its hot tier for good.
        let days = days.filter(|_| p.state.class().is_none_or(crate::archive::thaw_keeps_days));
        async move { Ok::<_, Error>((p, placement.thaw_pack(&p.pack, days, tier).await?)) }
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(r) = answers.next().await {
        let (p, answer) = r?;
        match answer {
            Some(ThawAnswer::Requested) => add(&mut out.requested, p),
            Some(ThawAnswer::InProgress) => add(&mut out.in_progress, p),
            // Moved to a hot class since the plan looked: readable.
            Some(ThawAnswer::NotArchived) => add(&mut out.thawed, p),
            // Gone since the plan looked (a gc rewrote it): a restore
            // reads another copy or reports the chunk damaged, as for a
            // pack the plan found gone.
            None => out.missing_packs += 1,
        }
        progress.add_done(1);
        stop_if_cancelled(progress)?;
    }
    Ok(out)
}

/// Waits until a restore of `disks` of `m` can read everything it needs,
/// as `restore --wait` does: one plan (see [`plan`]), then a look every
/// `poll` at the packs still not readable only (one HEAD each), the last
/// at `max`. Gives up at once when a pack needs a thaw with none running
/// (nothing would ever change: `xfull thaw` first), and after the look at
/// `max`. Returns the last look.
pub async fn wait_ready(
    repo: &Repository,
    m: &Manifest,
    disks: &[String],
    poll: std::time::Duration,
    max: std::time::Duration,
    progress: &Progress,
) -> Result<ThawPlan> {
    let started = std::time::Instant::now();
    let mut looked = plan(repo, m, disks, progress).await?;
    let placement = repo.chunks();
    loop {
        let waiting: Vec<&PackState> = looked
            .archive
            .iter()
            .filter(|p| !p.state.readable())
            .collect();
        if waiting.is_empty() {
            return Ok(looked);
        }
        let count = |which: &dyn Fn(&ArchiveState) -> bool| {
            let ps = waiting.iter().filter(|p| which(&p.state));
            ps.fold((0u64, 0u64), |(n, b), p| (n + 1, b + p.bytes))
        };
        let given_up = |(objects, bytes): (u64, u64), reason: String| Error::NotThawed {
            point: m.point_name(),
            disk: disks.join(","),
            objects,
            bytes,
            reason,
        };
        let archived = count(&ArchiveState::needs_thaw);
        if archived.0 > 0 {
            return Err(given_up(
                archived,
                "no thaw is running for them: run `xfull thaw` first".into(),
            ));
        }
        let thawing = count(&|_| true);
        // The last look is at the deadline: giving up when the next look
        // would pass it, `--wait 4m` with looks every 5 minutes never
        // waited, and `--wait 12m` gave up at 10 (review, stop 51).
        let left = max.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(given_up(
                thawing,
                format!(
                    "are still being thawed after {} s of waiting (--wait)",
                    started.elapsed().as_secs()
                ),
            ));
        }
        progress.notice(crate::progress::Notice::WaitingForThaw {
            objects: thawing.0,
            bytes: thawing.1,
            next_look_secs: poll.min(left).as_secs(),
        });
        tokio::select! {
            _ = tokio::time::sleep(poll.min(left)) => {}
            _ = progress.cancelled() => stop_if_cancelled(progress)?,
        }
        let (ready, waiting): (Vec<PackState>, Vec<PackState>) =
            std::mem::take(&mut looked.archive)
                .into_iter()
                .partition(|p| p.state.readable());
        let waiting: Vec<ObjectId> = waiting.iter().map(|p| p.pack).collect();
        // One gone since (rewritten or lost) is counted: a restore reads
        // another copy or reports the chunk damaged, as after any plan.
        let (states, missing) = pack_states(&placement, &waiting, progress).await?;
        looked.missing_packs += missing;
        looked.archive = ready.into_iter().chain(states).collect();
    }
}

/// The state of each pack (one HEAD each, 16 at once) and how many are
/// gone.
async fn pack_states(
    placement: &crate::placement::Placement,
    packs: &[ObjectId],
    progress: &Progress,
) -> Result<(Vec<PackState>, u64)> {
    let mut states = Vec::new();
    let mut missing = 0;
    let mut looked =
        futures::stream::iter(packs.iter().map(|p| placement.pack_state(p))).buffered(IN_FLIGHT);
    while let Some(r) = looked.next().await {
        stop_if_cancelled(progress)?;
        match r? {
            Some(s) => states.push(s),
            None => missing += 1,
        }
    }
    Ok((states, missing))
}

fn stop_if_cancelled(progress: &Progress) -> Result<()> {
    if progress.is_cancelled() {
        // Nothing to undo: requests already sent stand, and the next run
        // sees them as running.
        return Err(Error::Cancelled {
            cleaned: "nothing to clean up; run it again to finish".into(),
        });
    }
    Ok(())
}
