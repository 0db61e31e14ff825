//! `verify`: proves points restorable.
//!
//! Structural (default): from listings and metadata only (no chunk read,
//! so chunks may sit in an archive tier): every manifest and node decodes
//! and matches its id or checksum, every referenced node is listed and
//! every referenced chunk is in the index (`chunks.rs`). `read_data` also
//! downloads, decompresses and re-hashes every stored copy of the
//! referenced chunks, pack by pack in coalesced runs with bounded memory
//! ([`crate::placement::Placement::check_packs`]), optionally a subset.
//!
//! Verifying every point also checks every index entry against its
//! pack's trailer (`index_check.rs`); a referenced chunk whose entries
//! are all contradicted is damage of the points that use it.
//!
//! The report names every damaged point and disk with the damaged byte
//! ranges (segment-relative damage mapped to disk offsets).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::ObjectRef;
use crate::names::VmName;
use crate::node::Node;
use crate::placement::lookup::default_cache_dir;
use crate::progress::Progress;
use crate::repo::Repository;

mod against_packs;
mod chunks;
mod index_check;
mod lengths;
mod point_damage;
mod removed;

use crate::spilled_set::{self, SpilledSet};
pub use index_check::{IndexProblem, TRAILERS_IN_FLIGHT};
use point_damage::point_damage;

/// Node fetches in flight.
const FETCHES: usize = 32;
/// Problem descriptions kept per disk (the ranges are complete).
const MAX_PROBLEMS: usize = 10;

/// Which chunks `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Subset {
    /// A random sample of about this percentage.
    Percent(f64),
    /// Part `n` of `m` (1-based): running 1/m .. m/m reads every chunk once.
    Part { n: u64, m: u64 },
}

impl Subset {
    pub fn parse(s: &str) -> Result<Subset> {
        let bad = || {
            Error::InvalidArgument(format!(
                "--subset {s:?} must be a percentage (e.g. 10 or 2.5%) or N/M (e.g. 1/7)"
            ))
        };
        if let Some((n, m)) = s.split_once('/') {
            let n: u64 = n.trim().parse().map_err(|_| bad())?;
            let m: u64 = m.trim().parse().map_err(|_| bad())?;
            if m == 0 || n == 0 || n > m {
                return Err(bad());
            }
            return Ok(Subset::Part { n, m });
        }
        let p: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        Ok(Subset::Percent(p))
    }

    fn picks(&self, id: &ObjectId) -> bool {
        match *self {
            Subset::Percent(p) => rand::random::<f64>() * 100.0 < p,
            Subset::Part { n, m } => id.prefix() % m == n - 1,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub read_data: bool,
    pub subset: Option<Subset>,
    /// Write a damage record (`damage/<key>`) for every stored object
    /// found damaged, so that backups store it again and `repair` finds
    /// it. Best effort: failures become warnings.
    pub record_damage: bool,
    /// Objects already found damaged (by the caller's own check): counted
    /// as damage without being read again.
    pub known_bad: BTreeMap<ObjectRef, String>,
}

/// One damaged disk of one point.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DamagedDisk {
    pub disk: String,
    /// Damaged byte ranges of the disk image, `[start, end)`, merged.
    pub ranges: Vec<(u64, u64)>,
    pub damaged_bytes: u64,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DamagedPoint {
    pub point: String,
    /// Set when the manifest itself cannot be read.
    pub manifest: Option<String>,
    pub disks: Vec<DamagedDisk>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub points: u64,
    pub nodes: u64,
    pub chunks_referenced: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    pub damaged: Vec<DamagedPoint>,
    /// Stored chunks and nodes whose bytes are wrong.
    pub objects_damaged: u64,
    /// Referenced chunks and nodes missing from the repository.
    pub objects_missing: u64,
    /// Pack trailers read to check the index against them (every point
    /// verified: the index is checked whole).
    pub pack_trailers_read: u64,
    pub index_entries_checked: u64,
    /// Index entries their pack contradicts, packs whose trailer cannot
    /// be read, unreadable index objects: damage of the repository's
    /// index, whichever points it touches (the first 100; all counted in
    /// `index_problems_found`).
    pub index_problems: Vec<IndexProblem>,
    pub index_problems_found: u64,
    /// What could not be done on the side (recording damage).
    pub warnings: Vec<String>,
    pub seconds: f64,
    /// The damaged objects' keys, with why (for `repair`).
    #[serde(skip)]
    pub bad_objects: Vec<(String, String)>,
    /// The missing chunks and nodes (for `repair`).
    #[serde(skip)]
    pub missing: Vec<ObjectRef>,
    /// Points whose manifest is damaged (not merely gone).
    #[serde(skip)]
    pub damaged_manifests: Vec<(VmName, PointId)>,
    /// Packs an index object names whose trailer cannot be read (for
    /// `repair`; they are among `index_problems`).
    #[serde(skip)]
    pub unreadable_packs: Vec<ObjectId>,
    /// All such packs (`unreadable_packs` keeps the first 4,096).
    #[serde(skip)]
    pub unreadable_packs_found: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.index_problems_found == 0
    }
}

/// What is wrong inside one node: segment-relative ranges and why.
type NodeDamage = Vec<(Range<u64>, String)>;

/// Verifies `points` (every point when empty).
///
/// Memory stays bounded whatever the repository: manifests are read one
/// at a time (read again only to map damage), the distinct node ids are
/// held (32 bytes per node, one node per segment), referenced chunks are
/// held as 8-byte id prefixes in a [`SpilledSet`] (local files beyond its
/// budget) and found in one walk of the index in id order. What grows
/// beyond that grows with the damage found (`--read-data` reads pack by
/// pack and keeps only the runs in flight).
pub async fn verify(
    repo: &Repository,
    points: &[(VmName, PointId)],
    opts: &VerifyOptions,
    progress: Arc<Progress>,
) -> Result<VerifyReport> {
    verify_with(repo, points, opts, progress, spilled_set::DEFAULT_BUDGET).await
}

/// [`verify`] with the memory budget of the referenced chunks' set given
/// (tests make it small to take the files' path).
pub async fn verify_with(
    repo: &Repository,
    points: &[(VmName, PointId)],
    opts: &VerifyOptions,
    progress: Arc<Progress>,
    budget: usize,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    if opts.read_data {
        repo.codec().require_data("verify --read-data")?;
    }
    // Points the caller named must exist; listed ones may be pruned
    // meanwhile, which is no damage.
    let named = !points.is_empty();
    let points = if points.is_empty() {
        repo.list_points(None).await?
    } else {
        points.to_vec()
    };
    let present_nodes = listed_nodes(repo).await?;
    let mut report = VerifyReport {
        points: points.len() as u64,
        ..VerifyReport::default()
    };

    // Manifests one at a time, keeping their distinct nodes.
    let mut read_points = Vec::new();
    let mut todo = BTreeSet::new();
    let mut uses = lengths::Uses::new(repo.config().segment_size);
    for (vm, id) in &points {
        match repo.load_manifest(vm, id).await {
            Ok(m) => {
                for (n, len) in m.disks.iter().flat_map(|d| d.segment_nodes()) {
                    uses.saw(n, len, todo.contains(&n));
                    todo.insert(n);
                }
                read_points.push((vm.clone(), id.clone()));
            }
            // A listed point pruned meanwhile is skipped. A named one gone
            // by now (found by the caller, removed by a prune since) is
            // not found (the last arm, exit 1), not damaged: exit 3 would
            // send the operator to repair a point that is no more.
            Err(Error::PointNotFound { .. }) if !named => {}
            Err(e) if e.is_damage() => {
                report.damaged_manifests.push((vm.clone(), id.clone()));
                report.damaged.push(DamagedPoint {
                    point: format!("{vm}@{id}"),
                    manifest: Some(e.to_string()),
                    disks: Vec::new(),
                })
            }
            Err(e) => return Err(e),
        }
    }
    let todo: Vec<ObjectId> = todo.into_iter().collect();
    report.nodes = todo.len() as u64;

    // Each distinct node once; the chunks they name as id prefixes.
    let base = crate::gc::spill::base_dir(default_cache_dir(&repo.config().repo_id));
    let mut refs = SpilledSet::new(budget, base);
    // Damage by node (only damaged nodes are held).
    let mut nodes: HashMap<ObjectId, NodeDamage> = HashMap::new();
    // Nodes some segment uses at another length than they cover, and
    // what they cover.
    let mut covers: HashMap<ObjectId, u64> = HashMap::new();
    let present_nodes = &present_nodes;
    let mut loaded = futures::stream::iter(todo.iter().copied())
        .map(|id| async move {
            if present_nodes.binary_search(&id).is_err() {
                return Ok((
                    id,
                    Err((true, "node missing from the repository".to_string())),
                ));
            }
            if let Some(why) = opts.known_bad.get(&ObjectRef::Node(id)) {
                return Ok((id, Err((false, why.clone()))));
            }
            match repo.load_node(&id).await {
                Ok(n) => Ok((id, Ok(n))),
                Err(e) if e.is_damage() => Ok((id, Err((false, e.to_string())))),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(FETCHES);
    while let Some(r) = loaded.next().await {
        let (id, node) = r?;
        match node {
            Err((missing, why)) => {
                if missing {
                    report.missing.push(ObjectRef::Node(id));
                } else {
                    report.bad_objects.push((keys::node(&id), why.clone()));
                }
                nodes.insert(id, vec![(0..u64::MAX, why)]);
            }
            Ok(n) => {
                if uses.wrong(&id, n.len()) {
                    // Damage of the points that use it so, not of the
                    // node: repair must not remove it.
                    covers.insert(id, n.len());
                }
                for (_, _, c) in entries(&n) {
                    let Some(c) = c else { continue };
                    refs.insert(c.prefix())?;
                }
            }
        }
    }
    drop(loaded);
    refs.seal()?;
    report.chunks_referenced = refs.count();
    let chunks::Missing {
        prefixes: missing,
        damaged_index,
    } = chunks::missing(repo, &refs).await?;
    if named {
        // Verifying every point finds these in its check of the index.
        for (index, why) in damaged_index {
            report.index_problems_found += 1;
            report.index_problems.push(IndexProblem {
                index,
                pack: None,
                chunk: None,
                problem: why,
            });
        }
    }

    // Chunks known damaged (checked by the caller) count as read bad.
    let mut bad: HashMap<ObjectId, String> = opts
        .known_bad
        .iter()
        .filter_map(|(r, why)| match r {
            ObjectRef::Chunk(c) => Some((*c, why.clone())),
            ObjectRef::Node(_) | ObjectRef::Pack(_) | ObjectRef::Index(_) => None,
        })
        .collect();
    if opts.read_data {
        // Pack by pack: every copy of each referenced chunk not known
        // missing or bad (and in the subset).
        let known_bad = &bad;
        let (refs, missing) = (&refs, &missing);
        let want = move |c: &ObjectId| {
            // A local file that cannot be read: read the chunk anyway.
            refs.contains_at_random(c.prefix()).unwrap_or(true)
                && !chunks::is_missing(missing, c)
                && !known_bad.contains_key(c)
                && opts.subset.is_none_or(|s| s.picks(c))
        };
        let checked = repo.chunks().check_packs(&want, &progress).await?;
        report.chunks_read = checked.chunks;
        report.bytes_read = checked.bytes;
        bad.extend(checked.bad);
    }
    // Named points: with --read-data too, since it reads the copies the
    // trailers list, and a chunk that no trailer lists where the index
    // places it was never read (review 100: `verify --read-data v@1`
    // called a point whole whose restore failed). The index's own
    // problems are reported when no point is named.
    if !named || opts.read_data {
        // Referenced chunks whose entries their packs contradict, placed
        // nowhere a pack lists them: their points do not restore.
        let (refs, missing, known) = (&refs, &missing, &bad);
        let wanted = move |c: &ObjectId| {
            refs.contains_at_random(c.prefix()).unwrap_or(true)
                && !chunks::is_missing(missing, c)
                && !known.contains_key(c)
        };
        let unplaced =
            against_packs::check(repo, &progress, named, opts.read_data, &wanted, &mut report)
                .await?;
        bad.extend(unplaced);
    }
    drop(refs);
    if !missing.is_empty() || !bad.is_empty() {
        // Map missing and bad chunks back to the nodes that hold them.
        let found = chunks::map_to_nodes(repo, &todo, &mut nodes, &missing, &bad).await?;
        report
            .missing
            .extend(found.missing.into_iter().map(ObjectRef::Chunk));
        report
            .bad_objects
            .extend(found.bad.iter().map(|c| (keys::chunk(c), bad[c].clone())));
        report
            .bad_objects
            .extend(found.lost.into_iter().map(|(n, why)| (keys::node(&n), why)));
    }

    if !nodes.is_empty() || !covers.is_empty() {
        // Manifests again, to say which points and bytes the damage
        // touches, and which points are gone by now.
        let mut remaining = removed::Remaining::default();
        for (vm, id) in &read_points {
            match repo.load_manifest(vm, id).await {
                Ok(m) => {
                    remaining.saw(&m, &nodes);
                    report.damaged.extend(point_damage(&m, &nodes, &covers));
                }
                Err(Error::PointNotFound { .. }) => remaining.removed(vm, id),
                Err(e) => return Err(e),
            }
        }
        remaining
            .drop_damage_of_removed(repo, &read_points, named, &nodes, &covers, &mut report)
            .await;
    }
    report.objects_damaged = report.bad_objects.len() as u64;
    report.objects_missing = report.missing.len() as u64;
    if opts.record_damage {
        record_damage(repo, &mut report).await;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Best effort: a repository verify may only read still gets its report.
/// Missing nodes are recorded as well as damaged objects: a backup reuses
/// a parent's nodes without fetching most of them, and a record is what
/// tells it not to rely on one (see `backup/parent_check.rs`).
async fn record_damage(repo: &Repository, report: &mut VerifyReport) {
    let missing = report.missing.iter().filter_map(|r| match r {
        ObjectRef::Node(id) => Some((keys::node(id), "missing from the repository".to_string())),
        _ => None,
    });
    let records: Vec<(String, String)> =
        report.bad_objects.iter().cloned().chain(missing).collect();
    if let Some((failed, e)) = crate::damage::record_all(repo, &records, "verify").await {
        report.warnings.push(format!(
            "could not record {failed} damaged object(s) in the repository ({e}): \
             backups will not know to store them again"
        ));
    }
}

/// Sorted ids of the stored nodes.
async fn listed_nodes(repo: &Repository) -> Result<Vec<ObjectId>> {
    let mut v: Vec<ObjectId> = repo
        .backend()
        .list(keys::NODES)
        .try_filter_map(|m| async move { Ok(keys::parse_content(&m.key)) })
        .try_collect()
        .await?;
    v.sort_unstable();
    Ok(v)
}

/// (offset in segment, length, chunk) of each entry.
fn entries(n: &Node) -> impl Iterator<Item = (u64, u32, Option<ObjectId>)> + '_ {
    n.entries.iter().scan(0u64, |off, e| {
        let at = *off;
        *off += e.len();
        Some((at, e.0, e.1))
    })
}

fn chunk_damage(n: &Node, mut bad: impl FnMut(&ObjectId) -> Option<String>) -> NodeDamage {
    entries(n)
        .filter_map(|(at, len, c)| {
            let c = c?;
            bad(&c).map(|why| (at..at + u64::from(len), why))
        })
        .collect()
}
