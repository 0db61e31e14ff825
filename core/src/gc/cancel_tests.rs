//! A sweep asked to stop (SIGINT: `Progress::cancel`) at each of its
//! phases: marking, the census, the repack, the index rewrite, between
//! delete batches. Each time it fails with `Cancelled`, its marker says
//! `Stopped`, every point stays readable, and the next gc completes and
//! frees every dead chunk, leaving one copy of each live chunk. (A
//! repack copies sealed blobs verbatim, so rewriting a pack again gives
//! the same new pack, encrypted or not: the stopped sweep's orphan is the
//! next sweep's new pack.)

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Duration;
use futures::TryStreamExt;
use futures::stream::BoxStream;

use super::markers::{Phase, SweepState};
use super::test_packs::{all_entries, forced_passes, read_chunk, store_pack};
use super::{GcReport, PackOptions, Sweep};
use crate::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::gc::pack_sweep_tests::{Chunk, chunk, point};
use crate::id::ObjectId;
use crate::keys;
use crate::placement::pack_read::read_trailer;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Cancels `progress` once the `nth` request of kind `op` ("put", "get",
/// "delete") on a key under `prefix` has been answered.
#[derive(Debug)]
struct CancelOn {
    inner: Arc<MemBackend>,
    op: &'static str,
    prefix: &'static str,
    nth: u64,
    seen: AtomicU64,
    progress: Arc<Progress>,
}

impl CancelOn {
    fn saw(&self, op: &str, key: &str) {
        if op == self.op
            && key.starts_with(self.prefix)
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
        {
            self.progress.cancel();
        }
    }
}

#[async_trait]
impl Backend for CancelOn {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        let r = self.inner.put_opts(key, data, opts).await;
        self.saw("put", key);
        r
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        let r = self.inner.get(key).await;
        self.saw("get", key);
        r
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let r = self.inner.get_range(key, range).await;
        self.saw("get", key);
        r
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        let r = self.inner.delete_many(keys).await;
        if let Some(k) = keys.first() {
            self.saw("delete", k);
        }
        r
    }
}

async fn repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

/// Three packs to rewrite (half of each dead), one dead pack, and one
/// point holding the live halves.
async fn garbage(repo: &Repository) -> Vec<Chunk> {
    let c: Vec<Chunk> = (0..14).map(chunk).collect();
    for part in c.chunks(4) {
        store_pack(repo, part).await;
    }
    let live: Vec<Chunk> = c[0..12].chunks(4).flat_map(|p| p[0..2].to_vec()).collect();
    point(repo, 1, &live).await;
    live
}

/// A whole sweep as `gc::run_with` runs it, in batches of one; with
/// `marks_in`, its census in forced passes, its mark files there.
async fn sweep(
    repo: &Repository,
    progress: &Arc<Progress>,
    marks_in: Option<&std::path::Path>,
) -> Result<GcReport> {
    let mut s = Sweep::begin(repo, false)
        .await?
        .with_batch_size(1)
        .with_progress(progress.clone());
    if let Some(dir) = marks_in {
        s = s.with_pack_options(PackOptions {
            mark_dir: Some(dir.into()),
            ..forced_passes()
        });
    }
    let steps = async {
        s.read_leases().await?;
        s.read_points().await?;
        s.mark().await?;
        s.delete().await
    };
    if let Err(e) = steps.await {
        s.stop().await;
        return Err(e);
    }
    s.finish().await
}

/// Every live chunk is in a listed pack (in exactly one if `once`) and
/// no dead chunk is, every listed pack is named by an index object, and
/// every indexed pack is listed.
async fn nothing_dead_left(repo: &Repository, live: &[Chunk], once: bool) {
    let b = repo.backend();
    let packs: Vec<ObjectMeta> = b.list(keys::PACKS).try_collect().await.unwrap();
    let mut held: Vec<ObjectId> = Vec::new();
    for m in &packs {
        let name = keys::parse_pack(&m.key).unwrap();
        let t = read_trailer(&**b, repo.codec(), &name, m.size, 1 << 24)
            .await
            .unwrap();
        held.extend(t.iter().map(|e| e.id));
    }
    held.sort();
    if !once {
        held.dedup();
    }
    let mut want: Vec<ObjectId> = live.iter().map(|c| c.0).collect();
    want.sort();
    assert_eq!(held, want, "one copy of each live chunk, nothing else");
    let indexed: std::collections::BTreeSet<String> = all_entries(repo)
        .await
        .iter()
        .map(|e| keys::pack(&e.pack))
        .collect();
    let listed: std::collections::BTreeSet<String> = packs.into_iter().map(|m| m.key).collect();
    assert_eq!(indexed, listed, "indexed packs are the listed ones");
}

async fn readable(repo: &Repository, chunks: &[Chunk]) {
    for (id, d) in chunks {
        assert_eq!(&read_chunk(repo, id).await.unwrap(), d);
    }
}

#[tokio::test]
async fn a_sweep_cancelled_at_any_phase_stops_cleanly_and_the_next_finishes() {
    // (what, request kind, key prefix, nth): the cancel lands just after;
    // whether the next gc leaves one copy of each live chunk.
    let phases: &[(&str, &str, &str, u64, bool)] = &[
        ("marking", "get", "nodes/", 1, true),
        ("census", "get", "index/", 1, true),
        ("repack", "put", "packs/", 1, true),
        ("index rewrite", "put", "index/", 1, true),
        // Old packs were deleted: what the sweep wrote stays, and the
        // next gc rewrites the old packs left into the same new packs.
        ("between pack batches", "delete", "packs/", 1, true),
        ("between index batches", "delete", "index/", 1, true),
    ];
    // Each phase with the census in one pass, then in forced passes
    // (their mark files removed when the sweep stops).
    let marks = tempfile::tempdir().unwrap();
    let modes = [None, Some(marks.path())];
    for (&(what, op, prefix, nth, once), marks_in) in modes
        .iter()
        .flat_map(|m| phases.iter().map(move |p| (p, *m)))
    {
        let (mem, repo) = repo().await;
        let live = garbage(&repo).await;
        mem.clock().advance(Duration::hours(1));
        let progress = Arc::new(Progress::default());
        let hooked = Arc::new(CancelOn {
            inner: mem.clone(),
            op,
            prefix,
            nth,
            seen: AtomicU64::new(0),
            progress: progress.clone(),
        });
        let on_hook = Repository::open(hooked).await.unwrap();
        let err = sweep(&on_hook, &progress, marks_in).await.unwrap_err();
        let Error::Cancelled { cleaned } = &err else {
            panic!("{what}: {err}");
        };
        assert!(cleaned.contains("gc stopped"), "{what}: {cleaned}");
        let left = std::fs::read_dir(marks.path()).unwrap().count();
        assert_eq!(left, 0, "{what}: mark files left");
        let marker = SweepState::load(&repo, 1, false).await.unwrap().unwrap();
        assert_eq!(marker.phase, Phase::Stopped, "{what}");
        readable(&repo, &live).await;

        // The next sweep, at once, does not give way to the stopped one
        // and frees what is left once what the stopped one wrote is older
        // than its cutoff.
        mem.clock().advance(Duration::hours(1));
        let r = sweep(&repo, &Arc::new(Progress::default()), marks_in)
            .await
            .unwrap();
        assert!(r.skipped.is_none(), "{what}: {r:?}");
        readable(&repo, &live).await;
        nothing_dead_left(&repo, &live, once).await;
        let again = sweep(&repo, &Arc::new(Progress::default()), marks_in)
            .await
            .unwrap();
        if marks_in.is_some() && what == "marking" {
            assert!(again.mark_passes > 1, "{again:?}");
        }
        assert_eq!(
            again.packs_deleted + again.index_objects_deleted + again.packs_rewritten,
            0,
            "{what}: {again:?}"
        );
        if what == "index rewrite" {
            assert!(
                cleaned.contains("index objects it wrote were removed"),
                "{cleaned}"
            );
        }
    }
}
