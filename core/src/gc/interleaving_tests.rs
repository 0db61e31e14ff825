//! Every ordering of the steps of one backup session and one sweep (and,
//! in some scenarios, a prune that forgets the session's parent, or the
//! store's clock jumping past the lease TTL), and a random sample of the
//! orderings with two sweeps, over the in-memory backend. After each
//! ordering, a committed point must be whole: every node and chunk it
//! references present and matching its id. A backup may only ever wait
//! while a sweep has a delete batch in flight, never for a whole sweep.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, TimeZone, Utc};

use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::error::Error;
use crate::frame::{self, Kind};
use crate::gc::Sweep;
use crate::gc::sweep::{Candidate, Listed};
use crate::gc::test_packs::{
    Reused, dedup, deps_of, read_chunk, restore_deps, store_pack, with_passes,
};
use crate::id::{ObjectId, PointId};
use crate::lease::ObjectRef;
use crate::manifest::{BackupStats, DiskManifest, Manifest};
use crate::names::VmName;
use crate::node::{Entry, Node};
use crate::prune;
use crate::repo::{Repository, Stored};
use crate::session::{Check, Session};
use crate::testing::MemBackend;

const SEG: u64 = 1 << 20;
const TTL: u64 = 60;

fn chunk(tag: u8) -> (ObjectId, Vec<u8>) {
    let data = vec![tag; 1000 + tag as usize];
    (ObjectId::of(&data), data)
}

fn node(chunks: &[(ObjectId, Vec<u8>)]) -> (ObjectId, Vec<u8>) {
    let n = Node {
        entries: chunks
            .iter()
            .map(|(id, d)| Entry(d.len() as u32, Some(*id)))
            .collect(),
    };
    n.to_plain(&crate::codec::Codec::plain()).unwrap()
}

fn vm() -> VmName {
    "a".parse().unwrap()
}

fn manifest(id: PointId, nodes: Vec<ObjectId>, parent: Option<PointId>) -> Manifest {
    let time = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    Manifest {
        vm: vm(),
        id,
        time,
        created: time,
        parent: parent.clone(),
        host: "h".into(),
        labels: BTreeMap::new(),
        disks: vec![DiskManifest {
            name: "d".parse().unwrap(),
            size: SEG * nodes.len() as u64,
            segment_size: SEG,
            segments: nodes.into_iter().map(Some).collect(),
            last_data: Vec::new(),
            source: "test".into(),
            parent,
            audit: None,
            stats: BackupStats::default(),
            checkpoint: None,
            lock_generation: None,
        }],
        stats: BackupStats::default(),
        writer: "test".into(),
    }
}

/// The objects of the two points: the parent P has segments N1 = [c1, c2]
/// and N2 = [c3], its chunks in one pack; the session's point keeps N1 and
/// writes N3 = [c3, c4, c5]. c5 is left over from a killed backup (in a
/// pack of its own, indexed, unreferenced, old).
struct Data {
    c: Vec<(ObjectId, Vec<u8>)>,
    n1: (ObjectId, Vec<u8>),
    n2: (ObjectId, Vec<u8>),
    n3: (ObjectId, Vec<u8>),
    parent: PointId,
}

impl Data {
    fn new() -> Data {
        let c: Vec<_> = (0..=5).map(chunk).collect();
        Data {
            n1: node(&c[1..3]),
            n2: node(&c[3..4]),
            n3: node(&c[3..6]),
            c,
            parent: "20260101T000000Z-0001".parse().unwrap(),
        }
    }

    /// Every node the session's point references, with its bytes.
    fn session_nodes(&self) -> Vec<(ObjectRef, Bytes)> {
        [&self.n1, &self.n3]
            .into_iter()
            .map(|(id, plain)| {
                let framed = Bytes::from(frame::encode(Kind::Node, plain, 3).unwrap());
                (ObjectRef::Node(*id), framed)
            })
            .collect()
    }
}

async fn base(data: &Data) -> MemBackend {
    let mem = MemBackend::default();
    let mut cfg = RepoConfig::new(SEG, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: TTL,
        // No margin: the protocol must hold without it.
        clock_margin_secs: 0,
        sweep_ttl_secs: TTL,
    };
    let mem = Arc::new(mem);
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    store_pack(&repo, &data.c[1..=3]).await;
    store_pack(&repo, &data.c[5..=5]).await;
    repo.put_node(&data.n1.0, &data.n1.1).await.unwrap();
    repo.put_node(&data.n2.0, &data.n2.1).await.unwrap();
    repo.write_manifest(&manifest(
        data.parent.clone(),
        vec![data.n1.0, data.n2.0],
        None,
    ))
    .await
    .unwrap();
    // Everything so far is an hour old when the actors start.
    mem.clock().advance(Duration::hours(1));
    mem.fork()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    Backup,
    Sweep,
    /// A second sweep, concurrent with the first.
    Sweep2,
    Prune,
    Jump,
}

/// A sweep driven step by step: begin, read leases, read points, mark,
/// list the candidates, then `slots` delete batches of two steps each
/// (announce and filter; delete), then finish.
struct SweepActor {
    sweep: Option<Sweep>,
    step: usize,
    stopped: bool,
    slots: usize,
    /// The census in forced passes (marks on disk).
    passes: bool,
    batches: Vec<Vec<Candidate>>,
    /// A batch is announced and not yet deleted.
    mid_batch: bool,
}

impl SweepActor {
    fn new(slots: usize, passes: bool) -> Self {
        SweepActor {
            passes,
            sweep: None,
            step: 0,
            stopped: false,
            slots,
            batches: Vec::new(),
            mid_batch: false,
        }
    }

    fn steps(slots: usize) -> usize {
        5 + 2 * slots + 1
    }

    async fn step(&mut self, repo: &Repository, out: &mut Outcome) -> Result<(), String> {
        let step = self.step;
        self.step += 1;
        if self.stopped {
            return Ok(());
        }
        let r = match step {
            0 => Sweep::begin(repo, false).await.map(|s| {
                // Gave way to a running sweep: it does nothing.
                self.stopped = s.yielded_to().is_some();
                self.sweep = Some(with_passes(s, self.passes));
            }),
            1 => self.sweep.as_mut().unwrap().read_leases().await,
            2 => self.sweep.as_mut().unwrap().read_points().await,
            3 => self.sweep.as_mut().unwrap().mark().await,
            4 => {
                let sweep = self.sweep.as_mut().unwrap();
                let listed: Vec<Listed> = futures::TryStreamExt::try_collect::<Vec<_>>(
                    repo.backend().list(crate::keys::NODES),
                )
                .await
                .unwrap()
                .into_iter()
                .filter_map(Listed::node)
                .collect();
                let mut all: Vec<_> = listed
                    .into_iter()
                    .filter_map(|l| sweep.candidate(l))
                    .collect();
                let r = sweep.prepare_packs().await;
                all.extend(sweep.pack_candidates());
                // Spread over the slots, the first ones fullest.
                let per = all.len().div_ceil(self.slots).max(1);
                let mut it = all.into_iter();
                self.batches = (0..self.slots)
                    .map(|_| it.by_ref().take(per).collect())
                    .collect();
                r
            }
            n if n < 5 + 2 * self.slots => {
                let i = (n - 5) / 2;
                let sweep = self.sweep.as_mut().unwrap();
                let batch = &mut self.batches[i];
                if (n - 5) % 2 == 0 {
                    self.mid_batch = !batch.is_empty();
                    sweep.begin_batch(batch).await
                } else {
                    self.mid_batch = false;
                    let had = batch.len();
                    let r = sweep.commit_batch(batch).await;
                    out.swept_garbage |= r.is_ok() && had > 0;
                    r
                }
            }
            _ => self.sweep.take().unwrap().finish().await.map(|_| ()),
        };
        match r {
            Ok(()) => Ok(()),
            Err(Error::SweepStopped { damage: false, .. }) => {
                self.stopped = true;
                self.mid_batch = false;
                Ok(())
            }
            Err(e) => Err(format!("sweep step {step} failed: {e}")),
        }
    }
}

#[derive(Default)]
struct Outcome {
    committed: Option<PointId>,
    parent_removed: bool,
    repaired: bool,
    swept_garbage: bool,
}

/// Runs one schedule; `None` if the backup would have had to wait there
/// (that schedule is covered by the one that runs the sweep first).
async fn run(
    base: &MemBackend,
    data: &Data,
    schedule: &[Actor],
    slots: usize,
    passes: bool,
) -> Option<Outcome> {
    let mem = Arc::new(base.fork());
    let repo = Repository::open(mem.clone()).await.unwrap();
    let mut out = Outcome::default();
    let (mut s_step, mut p_step) = (0, 0);
    let mut session: Option<Session> = None;
    let mut parent_found = false;
    let mut needed = Vec::new();
    let mut reused = Reused::default();
    let mut sweeps = [
        SweepActor::new(slots, passes),
        SweepActor::new(slots, passes),
    ];
    let mut pins = None;
    for actor in schedule {
        match actor {
            Actor::Backup => {
                match s_step {
                    0 => session = Some(Session::begin(&repo, &vm(), "h").await.unwrap()),
                    1 => {
                        let s = session.as_ref().unwrap();
                        let latest = repo.latest(&vm()).await.unwrap();
                        if let Some(p) = latest {
                            repo.load_manifest(&vm(), &p).await.unwrap();
                            s.pin([(vm(), p)]).await.unwrap();
                            parent_found = true;
                        }
                    }
                    2 => {
                        let s = session.as_ref().unwrap();
                        // Without a parent, every chunk is looked up and
                        // both nodes are stored; with one, N1 is reused and
                        // c3 is the parent's (protected by the pin).
                        let first = if parent_found { 4 } else { 1 };
                        needed = data.c[first..=5].to_vec();
                        dedup(&repo, &needed, &mut reused).await;
                        let mut existed = deps_of(&reused);
                        let mut nodes = vec![&data.n3];
                        if !parent_found {
                            nodes.push(&data.n1);
                        }
                        for (id, plain) in nodes {
                            if repo.put_node(id, plain).await.unwrap().0 == Stored::Existed {
                                existed.push(ObjectRef::Node(*id));
                            }
                        }
                        s.depend(existed);
                    }
                    3 => {
                        let mid = sweeps.iter().any(|g| g.mid_batch);
                        let s = session.as_mut().unwrap();
                        let mut b = Backup {
                            repo: &repo,
                            reused: &mut reused,
                            needed: &needed,
                        };
                        if !settle(s, &mut b, data, &mut out, mid).await {
                            return None;
                        }
                    }
                    _ => {
                        let id: PointId = "20260101T010000Z-0002".parse().unwrap();
                        let parent = parent_found.then(|| data.parent.clone());
                        let m = manifest(id.clone(), vec![data.n1.0, data.n3.0], parent);
                        repo.write_manifest(&m).await.unwrap();
                        let key = crate::keys::point(&vm(), &id);
                        let at = mem.head(&key).await.unwrap().last_modified;
                        let s = session.as_mut().unwrap();
                        let mid = sweeps.iter().any(|g| g.mid_batch);
                        let mut b = Backup {
                            repo: &repo,
                            reused: &mut reused,
                            needed: &needed,
                        };
                        if s.committed_late(at) && !settle(s, &mut b, data, &mut out, mid).await {
                            return None;
                        }
                        session.take().unwrap().end(Some(id.clone())).await.unwrap();
                        out.committed = Some(id);
                    }
                }
                s_step += 1;
            }
            Actor::Sweep | Actor::Sweep2 => {
                let g = &mut sweeps[usize::from(*actor == Actor::Sweep2)];
                if let Err(e) = g.step(&repo, &mut out).await {
                    panic!("schedule {schedule:?}: {e}");
                }
            }
            Actor::Prune => {
                if p_step == 0 {
                    pins = Some(prune::read_pins(&repo).await.unwrap());
                } else {
                    let target = [(vm(), data.parent.clone())];
                    prune::remove(&repo, pins.as_ref().unwrap(), &target)
                        .await
                        .unwrap();
                    out.parent_removed = true;
                }
                p_step += 1;
            }
            Actor::Jump => mem.clock().advance(Duration::seconds(TTL as i64 + 1)),
        }
    }
    if let Some(id) = &out.committed
        && let Err(e) = whole(&repo, id).await
    {
        panic!("schedule {schedule:?}: {e}");
    }
    if !out.parent_removed
        && let Err(e) = whole(&repo, &data.parent).await
    {
        panic!("schedule {schedule:?}: {e}");
    }
    Some(out)
}

/// What the backup knows of the chunks it uses.
struct Backup<'a> {
    repo: &'a Repository,
    reused: &'a mut Reused,
    /// The chunks it looked up (the parent's are protected by the pin).
    needed: &'a [(ObjectId, Vec<u8>)],
}

/// Step (c) with the backup's repair; false if it would have to wait,
/// which it may only while a sweep has a delete batch in flight (`mid`).
async fn settle(
    s: &mut Session,
    b: &mut Backup<'_>,
    data: &Data,
    out: &mut Outcome,
    mid: bool,
) -> bool {
    loop {
        let check = s.check().await.unwrap();
        match &check {
            Check::Clear => return true,
            Check::Wait { .. } => {
                assert!(
                    mid,
                    "the backup waited with no delete batch in flight: {check:?}"
                );
                return false;
            }
            Check::Verify { all, .. } => {
                // What the backup's repair does: store again whatever is
                // gone (the test knows the bytes; the backup re-reads them
                // from the source disk).
                let chunks = if *all { &data.c[1..=5] } else { b.needed };
                if restore_deps(b.repo, s, &check, b.reused, chunks).await {
                    out.repaired = true;
                }
                for (r, bytes) in data.session_nodes() {
                    if b.repo.backend().head(&r.key()).await.is_err() {
                        crate::repo::put_once(&**b.repo.backend(), &r.key(), bytes)
                            .await
                            .unwrap();
                        out.repaired = true;
                    }
                }
                if s.settle(&check) {
                    return true;
                }
            }
        }
    }
}

/// Every node and chunk of the point is there and matches its id.
async fn whole(repo: &Repository, id: &PointId) -> Result<(), String> {
    let m = repo
        .load_manifest(&vm(), id)
        .await
        .map_err(|e| e.to_string())?;
    for n in m.disks[0].segments.iter().flatten() {
        let node = repo
            .load_node(n)
            .await
            .map_err(|e| format!("point {id}: node {}: {e}", n.short()))?;
        for e in &node.entries {
            let c = e.1.unwrap();
            let plain = read_chunk(repo, &c)
                .await
                .map_err(|e| format!("point {id}: {e}"))?;
            if plain.len() != e.len() as usize {
                return Err(format!("point {id}: chunk {}: wrong length", c.short()));
            }
        }
    }
    Ok(())
}

/// Every sequence with `counts[i]` steps of `actors[i]`.
fn schedules(actors: &[(Actor, usize)]) -> Vec<Vec<Actor>> {
    fn go(left: &mut [(Actor, usize)], cur: &mut Vec<Actor>, out: &mut Vec<Vec<Actor>>) {
        if left.iter().all(|(_, n)| *n == 0) {
            out.push(cur.clone());
            return;
        }
        for i in 0..left.len() {
            if left[i].1 > 0 {
                left[i].1 -= 1;
                cur.push(left[i].0);
                go(left, cur, out);
                cur.pop();
                left[i].1 += 1;
            }
        }
    }
    let mut out = Vec::new();
    go(&mut actors.to_vec(), &mut Vec::new(), &mut out);
    out
}

/// Runs the schedules, each with the census in one pass and in forced
/// passes; returns (schedules, runs that had to wait, outcomes).
fn explore_these(all: Vec<Vec<Actor>>, slots: usize) -> (usize, usize, Vec<Outcome>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = Data::new();
    let base = rt.block_on(base(&data));
    let mut waited = 0;
    let mut outcomes = Vec::new();
    // Each schedule with the census in one pass, and up to 4,000 of them
    // (a seeded random choice) again with the census in forced passes: the passes
    // change how the sweep counts its marks, not when it reads or writes
    // the store, so every ordering in both modes only doubled the time
    // (84 s for the 18,018 orderings below).
    for s in &all {
        match rt.block_on(run(&base, &data, s, slots, false)) {
            Some(o) => outcomes.push(o),
            None => waited += 1,
        }
    }
    // A seeded random choice, not a stride: schedules come out in an
    // order where a fixed stride could skip whole families of them.
    let picked = {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(all.len() as u64);
        let mut v = rand::seq::index::sample(&mut rng, all.len(), all.len().min(4000)).into_vec();
        v.sort_unstable();
        v
    };
    for i in picked {
        match rt.block_on(run(&base, &data, &all[i], slots, true)) {
            Some(o) => outcomes.push(o),
            None => waited += 1,
        }
    }
    (all.len(), waited, outcomes)
}

/// Runs every schedule of these actors.
fn explore(actors: &[(Actor, usize)], slots: usize) -> (usize, usize, Vec<Outcome>) {
    explore_these(schedules(actors), slots)
}

/// `n` random orderings of these actors' steps (seeded).
fn sample(actors: &[(Actor, usize)], n: usize, seed: u64) -> Vec<Vec<Actor>> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let steps: Vec<Actor> = actors
        .iter()
        .flat_map(|(a, k)| std::iter::repeat_n(*a, *k))
        .collect();
    (0..n)
        .map(|_| {
            let mut s = steps.clone();
            s.shuffle(&mut rng);
            s
        })
        .collect()
}

const BACKUP_STEPS: usize = 5;

#[test]
fn every_ordering_of_a_backup_and_a_sweep() {
    let (runs, waited, outcomes) = explore(
        &[
            (Actor::Backup, BACKUP_STEPS),
            (Actor::Sweep, SweepActor::steps(2)),
        ],
        2,
    );
    assert_eq!(runs, 3003);
    assert!(outcomes.iter().all(|o| o.committed.is_some()));
    // Not vacuous: some orderings waited for a batch in flight, some had
    // the sweep delete the killed backup's leftovers, some re-stored them.
    assert!(waited > 0);
    assert!(outcomes.iter().any(|o| o.swept_garbage));
    assert!(outcomes.iter().any(|o| o.repaired));
}

#[test]
fn every_ordering_with_the_lease_expiring_mid_backup() {
    let (runs, _, outcomes) = explore(
        &[
            (Actor::Backup, BACKUP_STEPS),
            (Actor::Sweep, SweepActor::steps(1)),
            (Actor::Jump, 1),
        ],
        1,
    );
    assert_eq!(runs, 18018);
    assert!(outcomes.iter().all(|o| o.committed.is_some()));
    assert!(outcomes.iter().any(|o| o.repaired));
}

/// All 135,135 orderings with `XFULL_INTERLEAVINGS=all`, else a seeded
/// sample of 12,000 (the whole set takes a few minutes).
#[test]
fn orderings_with_a_prune_forgetting_the_parent() {
    let actors = [
        (Actor::Backup, BACKUP_STEPS),
        (Actor::Sweep, SweepActor::steps(1)),
        (Actor::Prune, 2),
    ];
    let all = std::env::var("XFULL_INTERLEAVINGS").is_ok_and(|v| v == "all");
    let (runs, _, outcomes) = if all {
        explore(&actors, 1)
    } else {
        explore_these(sample(&actors, 12_000, 11), 1)
    };
    assert_eq!(runs, if all { 135_135 } else { 12_000 });
    assert!(
        outcomes
            .iter()
            .all(|o| o.committed.is_some() && o.parent_removed)
    );
    assert!(outcomes.iter().any(|o| o.repaired));
}

#[test]
fn sampled_orderings_with_two_sweeps_and_an_expiring_lease() {
    let actors = [
        (Actor::Backup, BACKUP_STEPS),
        (Actor::Sweep, SweepActor::steps(2)),
        (Actor::Sweep2, SweepActor::steps(2)),
        (Actor::Jump, 1),
    ];
    let (runs, waited, outcomes) = explore_these(sample(&actors, 6000, 7), 2);
    assert_eq!(runs, 6000);
    assert!(outcomes.iter().all(|o| o.committed.is_some()));
    assert!(waited > 0);
    assert!(outcomes.iter().any(|o| o.repaired));
}
