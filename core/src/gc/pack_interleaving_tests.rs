//! A backup that deduplicates against chunks in packs a sweep deletes or
//! rewrites: every ordering of the backup's steps (lease, look up, record
//! the dependencies, rewrite the lease and check, commit) against the
//! sweep's (begin, look at the leases, list points, mark, census, write
//! the new pack P' and its index object, announce the batch holding P, D
//! and their old index objects, delete it, finish). After each, the
//! committed point and the other VM's point are whole: every chunk
//! readable from some place the index gives. The backup may wait only
//! while the batch is in flight.
//!
//! The store: pack P = [l, d1, d2], where only l is live (point Q of VM
//! b), so P is rewritten (2/3 waste); pack D = [e], dead, deleted; pack
//! K = [k] and, a minute younger, X = [k, x]: two backups stored live k
//! at once, so X's copy is waste (`gc/copies.rs`) and X, with dead x, is
//! deleted. The backup's point needs l, d1, e and k (found in P, D and
//! X) and a new chunk n.

use std::sync::Arc;

use chrono::Duration;

use super::test_packs::{
    Reused, all_entries, deps_of, find, read_chunk, restore_deps, store_pack_deps, with_passes,
    write_point,
};
use super::{GcReport, Sweep};
use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::error::Error;
use crate::gc::sweep::Candidate;
use crate::id::{ObjectId, PointId};
use crate::placement::index::IndexEntry;
use crate::repo::Repository;
use crate::session::{Check, Session};
use crate::testing::MemBackend;

const SEG: u64 = 1 << 20;
const TTL: u64 = 60;

type Chunk = (ObjectId, Vec<u8>);

fn chunk(tag: u8) -> Chunk {
    let data = vec![tag; 1500 + tag as usize];
    (ObjectId::of(&data), data)
}

struct Data {
    l: Chunk,
    d1: Chunk,
    d2: Chunk,
    e: Chunk,
    n: Chunk,
    k: Chunk,
    x: Chunk,
}

impl Data {
    fn new() -> Data {
        Data {
            l: chunk(1),
            d1: chunk(2),
            d2: chunk(3),
            e: chunk(4),
            n: chunk(5),
            k: chunk(6),
            x: chunk(7),
        }
    }

    /// What the backup's point holds.
    fn needed(&self) -> Vec<Chunk> {
        vec![
            self.l.clone(),
            self.d1.clone(),
            self.e.clone(),
            self.n.clone(),
            self.k.clone(),
        ]
    }

    /// What the other VM's point holds.
    fn other(&self) -> Vec<Chunk> {
        vec![self.l.clone(), self.k.clone()]
    }
}

/// Stores a node of `chunks` and the point `vm@id` of one segment.
async fn point(repo: &Repository, vm: &str, id: &PointId, chunks: &[Chunk]) {
    write_point(repo, vm, id, chunks).await;
}

fn q() -> PointId {
    "20260101T000000Z-0001".parse().unwrap()
}

fn mine() -> PointId {
    "20260101T010000Z-0002".parse().unwrap()
}

/// The store, and the name of pack X.
async fn base(data: &Data) -> (MemBackend, ObjectId) {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(SEG, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: TTL,
        clock_margin_secs: 0,
        sweep_ttl_secs: TTL,
    };
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let p = [data.l.clone(), data.d1.clone(), data.d2.clone()];
    store_pack_deps(&repo, &p).await;
    store_pack_deps(&repo, std::slice::from_ref(&data.e)).await;
    store_pack_deps(&repo, std::slice::from_ref(&data.k)).await;
    mem.clock().advance(Duration::minutes(1));
    let (x, _, _) = store_pack_deps(&repo, &[data.k.clone(), data.x.clone()]).await;
    point(&repo, "b", &q(), &data.other()).await;
    mem.clock().advance(Duration::hours(1));
    (mem.fork(), x)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    Backup,
    Sweep,
}

const BACKUP_STEPS: usize = 5;
const SWEEP_STEPS: usize = 9;

#[derive(Default)]
struct Outcome {
    repaired: bool,
    report: Option<GcReport>,
}

/// One schedule; `None` if the backup would have had to wait there.
async fn run(
    (base, x): &(MemBackend, ObjectId),
    data: &Data,
    schedule: &[Actor],
    passes: bool,
) -> Option<Outcome> {
    let mem = Arc::new(base.fork());
    let repo = Repository::open(mem.clone()).await.unwrap();
    let mut out = Outcome::default();
    let (mut b_step, mut s_step) = (0, 0);
    let mut session: Option<Session> = None;
    let mut found: Vec<Option<IndexEntry>> = Vec::new();
    let mut reused = Reused::default();
    let mut sweep: Option<Sweep> = None;
    let mut batch: Vec<Candidate> = Vec::new();
    let mut mid = false;
    let mut stopped = false;
    let needed = data.needed();
    for actor in schedule {
        match actor {
            Actor::Backup => {
                match b_step {
                    0 => {
                        session = Some(
                            Session::begin(&repo, &"a".parse().unwrap(), "h")
                                .await
                                .unwrap(),
                        )
                    }
                    // Look up.
                    1 => {
                        let ids: Vec<ObjectId> = needed.iter().map(|c| c.0).collect();
                        found = find(&repo, &ids).await;
                        // k from X, the copy the sweep leaves out, while
                        // the index still names it (either may be found).
                        let in_x = all_entries(&repo)
                            .await
                            .into_iter()
                            .find(|e| e.pack == *x && e.entry.id == data.k.0);
                        if let Some(e) = in_x {
                            found[ids.iter().position(|id| *id == data.k.0).unwrap()] = Some(e);
                        }
                    }
                    // Record the dependencies (in the lease at the next
                    // write); store what was not found.
                    2 => {
                        let mut new = Vec::new();
                        for (c, place) in needed.iter().zip(&found) {
                            match place {
                                Some(p) => reused.from.entry(p.pack).or_default().push(c.0),
                                None => new.push(c.clone()),
                            }
                        }
                        if !new.is_empty() {
                            let (pack, key, deps) = store_pack_deps(&repo, &new).await;
                            reused.own.push((pack, key));
                            reused.existed.extend(deps);
                        }
                        session.as_ref().unwrap().depend(deps_of(&reused));
                    }
                    // Rewrite the lease and check.
                    3 => {
                        let s = session.as_mut().unwrap();
                        if !settle(s, &repo, &mut reused, &needed, &mut out, mid).await {
                            return None;
                        }
                    }
                    _ => {
                        point(&repo, "a", &mine(), &needed).await;
                        let key = crate::keys::point(&"a".parse().unwrap(), &mine());
                        let at = mem.head(&key).await.unwrap().last_modified;
                        let s = session.as_mut().unwrap();
                        if s.committed_late(at)
                            && !settle(s, &repo, &mut reused, &needed, &mut out, mid).await
                        {
                            return None;
                        }
                        session.take().unwrap().end(Some(mine())).await.unwrap();
                    }
                }
                b_step += 1;
            }
            Actor::Sweep => {
                let step = s_step;
                s_step += 1;
                if stopped {
                    continue;
                }
                let r = match step {
                    0 => Sweep::begin(&repo, false)
                        .await
                        .map(|s| sweep = Some(with_passes(s, passes))),
                    1 => sweep.as_mut().unwrap().read_leases().await,
                    2 => sweep.as_mut().unwrap().read_points().await,
                    3 => sweep.as_mut().unwrap().mark().await,
                    4 => sweep.as_mut().unwrap().plan_packs().await,
                    5 => {
                        let s = sweep.as_mut().unwrap();
                        let r = s.write_replacements().await;
                        batch = s.pack_candidates();
                        r
                    }
                    6 => {
                        mid = !batch.is_empty();
                        sweep.as_mut().unwrap().begin_batch(&mut batch).await
                    }
                    7 => {
                        mid = false;
                        sweep.as_mut().unwrap().commit_batch(&mut batch).await
                    }
                    _ => sweep.take().unwrap().finish().await.map(|r| {
                        out.report = Some(r);
                    }),
                };
                match r {
                    Ok(()) => {}
                    Err(Error::SweepStopped { damage: false, .. }) => {
                        stopped = true;
                        mid = false;
                    }
                    Err(e) => panic!("schedule {schedule:?}: sweep step {step}: {e}"),
                }
            }
        }
    }
    for (vm, id, chunks) in [("a", mine(), needed.clone()), ("b", q(), data.other())] {
        for (c, plain) in &chunks {
            match read_chunk(&repo, c).await {
                Ok(p) if p == *plain => {}
                Ok(_) => panic!(
                    "schedule {schedule:?}: {vm}@{id}: chunk {} wrong",
                    c.short()
                ),
                Err(e) => panic!("schedule {schedule:?}: {vm}@{id}: {e}"),
            }
        }
    }
    Some(out)
}

/// Step (c) with the backup's repair; false if it would have to wait,
/// which it may only while a batch is in flight (`mid`).
async fn settle(
    s: &mut Session,
    repo: &Repository,
    reused: &mut Reused,
    needed: &[Chunk],
    out: &mut Outcome,
    mid: bool,
) -> bool {
    loop {
        let check = s.check().await.unwrap();
        match &check {
            Check::Clear => return true,
            Check::Wait { .. } => {
                assert!(mid, "waited with no batch in flight: {check:?}");
                return false;
            }
            Check::Verify { .. } => {
                if restore_deps(repo, s, &check, reused, needed).await {
                    out.repaired = true;
                }
                if s.settle(&check) {
                    return true;
                }
            }
        }
    }
}

fn schedules(b: usize, s: usize) -> Vec<Vec<Actor>> {
    fn go(b: usize, s: usize, cur: &mut Vec<Actor>, out: &mut Vec<Vec<Actor>>) {
        if b == 0 && s == 0 {
            out.push(cur.clone());
            return;
        }
        for (a, left) in [(Actor::Backup, b), (Actor::Sweep, s)] {
            if left > 0 {
                cur.push(a);
                let (nb, ns) = if a == Actor::Backup {
                    (b - 1, s)
                } else {
                    (b, s - 1)
                };
                go(nb, ns, cur, out);
                cur.pop();
            }
        }
    }
    let mut out = Vec::new();
    go(b, s, &mut Vec::new(), &mut out);
    out
}

#[test]
fn every_ordering_of_a_backup_reusing_chunks_of_packs_a_sweep_deletes_or_rewrites() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = Data::new();
    let base = rt.block_on(base(&data));
    let all = schedules(BACKUP_STEPS, SWEEP_STEPS);
    assert_eq!(all.len(), 2002);
    let mut waited = 0;
    let mut outcomes = Vec::new();
    // Each with the census in one pass and in forced passes.
    for passes in [false, true] {
        for s in &all {
            match rt.block_on(run(&base, &data, s, passes)) {
                Some(o) => outcomes.push(o),
                None => waited += 1,
            }
        }
    }
    // Not vacuous: some orderings waited for the batch in flight, some
    // re-stored or re-found chunks whose pack went, some had the sweep
    // rewrite P and delete D and X, and some had the backup's lease spare
    // them.
    assert!(waited > 0);
    assert!(outcomes.iter().any(|o| o.repaired));
    let reports: Vec<&GcReport> = outcomes.iter().filter_map(|o| o.report.as_ref()).collect();
    assert!(
        reports
            .iter()
            .any(|r| r.packs_rewritten == 1 && r.packs_deleted == 3 && r.copies_left_out == 1)
    );
    assert!(
        reports
            .iter()
            .any(|r| r.packs_deleted == 0 && r.spared_late > 0)
    );
}
