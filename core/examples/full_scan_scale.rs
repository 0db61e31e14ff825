//! What a full-scan backup's listing of the repository costs at scale:
//! `Present::load` (`backup/trust.rs`, the only part of a backup whose
//! memory grows with the repository) against gc_scale's synthetic
//! repository (`synthetic_repo`: N chunk ids in shard objects, N/128
//! packs, N/128 nodes), generated on demand by a store that holds
//! nothing. Counted by request as S3 bills them, measured by peak RSS
//! (the whole process's, the generator's shard object included) after
//! each phase, and by the bytes of the `SpilledSet`'s files under
//! `$TMPDIR`; then checked: sampled ids of the index and nodes must be
//! present, random ids absent. Output: one JSON object.
//!
//! ```text
//! TMPDIR=<empty dir on disk> full_scan_scale [--entries N] [--check C] [--seed S]
//! ```
//!
//! The store awaits once per page of a listing (1,000 keys) and once per
//! GET, as a network store would: the nodes' listing then runs alongside
//! the index's walk, as it does in `load` against S3 (without the awaits
//! the walk would finish before the nodes are listed, and the peak would
//! be lower than a real one).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

mod synthetic;
mod synthetic_repo;

use chrono::{Duration, Utc};
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};
use synthetic::arg;
use synthetic_repo::{Synthetic, node_name, rss_mib};
use xfull_core::backend::Backend;
use xfull_core::backup::trust::{Present, Trust};
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::id::ObjectId;
use xfull_core::keys;
use xfull_core::repo::Repository;

/// The phases of `load` the sampler tells apart, by what the store has
/// served and what is on disk.
const PHASES: [&str; 5] = ["listing", "heads", "merge", "seal", "loaded"];

/// Peaks seen by the sampler thread while `load` runs.
#[derive(Debug, Default)]
struct Seen {
    /// Per phase: the highest `VmRSS` (MiB) and when the phase was last
    /// seen (seconds from the start of `load`).
    rss: [f64; 5],
    until: [f64; 5],
    disk_peak: u64,
}

/// Bytes and names of the files in the `SpilledSet`'s private
/// directories under `base` (named as gc's mark files are).
fn spill_files(base: &Path) -> (u64, Vec<String>) {
    let mut bytes = 0;
    let mut names = Vec::new();
    let dirs = std::fs::read_dir(base).into_iter().flatten().flatten();
    for dir in dirs.filter(|d| {
        d.file_name()
            .to_string_lossy()
            .starts_with("xfull-gc-marks-")
    }) {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            bytes += f.metadata().map_or(0, |m| m.len());
            names.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    (bytes, names)
}

/// Samples RSS and the files every 20 ms until `stop`.
fn sample(
    store: Arc<Synthetic>,
    base: PathBuf,
    stop: Arc<AtomicBool>,
    loaded: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let t = Instant::now();
    let mut tick = 0u64;
    let mut disk = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        // Walking the files costs more than reading /proc: every 100 ms.
        if tick.is_multiple_of(5) {
            disk = spill_files(&base);
        }
        tick += 1;
        let gets = store.gets.load(Ordering::Relaxed);
        let phase = if loaded.load(Ordering::Relaxed) {
            4
        } else if disk.1.iter().any(|n| n.starts_with("part-")) {
            3
        } else if gets > store.shards() {
            2
        } else if gets > 0 {
            1
        } else {
            0
        };
        let rss = rss_mib("VmRSS:");
        {
            let mut s = seen.lock().expect("not poisoned");
            s.rss[phase] = s.rss[phase].max(rss);
            s.until[phase] = t.elapsed().as_secs_f64();
            s.disk_peak = s.disk_peak.max(disk.0);
        }
        std::thread::sleep(StdDuration::from_millis(20));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries = arg(&args, "--entries", 200_000_000);
    let check = arg(&args, "--check", 10_000);
    let seed = arg(&args, "--seed", 1);
    // Where `load`'s SpilledSet puts its files ($TMPDIR wins over the
    // repository's cache directory); the example measures them there.
    let base = PathBuf::from(
        std::env::var_os("TMPDIR").expect("set TMPDIR to an empty directory on disk"),
    );
    let store = Arc::new(Synthetic::new(
        entries,
        seed,
        Utc::now() - Duration::days(30),
    ));
    let cfg = RepoConfig::new(16 << 20, ChunkParams::from_avg(128 << 10), 3).expect("config");
    let repo = Repository::init(store.clone(), cfg).await.expect("init");
    // The generator's own peak: one shard object made (and dropped by
    // the next), before the load; its requests are not counted.
    let first = store
        .list(keys::INDEX)
        .try_next()
        .await
        .expect("list")
        .expect("a shard");
    store.get_range(&first.key, 0..1).await.expect("get");
    let generator_peak = rss_mib("VmHWM:");
    store.gets.store(0, Ordering::Relaxed);
    store.get_bytes.store(0, Ordering::Relaxed);
    store.lists[1].store(0, Ordering::Relaxed);
    let rss_before = rss_mib("VmRSS:");

    let stop = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sampler = {
        let (store, base) = (store.clone(), base.clone());
        let (stop, loaded, seen) = (stop.clone(), loaded.clone(), seen.clone());
        std::thread::spawn(move || sample(store, base, stop, loaded, seen))
    };
    let t = Instant::now();
    let present = Present::load(&repo).await.expect("load");
    let load_s = t.elapsed().as_secs_f64();
    loaded.store(true, Ordering::Relaxed);
    let peak_load = rss_mib("VmHWM:");
    let rss_loaded = rss_mib("VmRSS:");
    let (disk_after, files_after) = spill_files(&base);
    let gets = store.gets.load(Ordering::Relaxed);
    let get_bytes = store.get_bytes.load(Ordering::Relaxed);
    let lists: Vec<u64> = store
        .lists
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .collect();

    // The answers a backup gets, through `Trust` as the pipeline asks.
    let trust = Trust {
        present: Some(Arc::new(present)),
        ..Default::default()
    };
    // Ids that are there: `check` of them, spread over the shards.
    let shards = store.shards();
    let per = check.div_ceil(shards.min(check)).max(1);
    let step = (store.per_shard / per).max(1) as usize;
    let mut there = Vec::new();
    for k in (0..shards).step_by((shards / check.min(shards)).max(1) as usize) {
        there.extend(
            store
                .entries(k)
                .step_by(step)
                .take(per as usize)
                .map(|(_, e)| e.entry.id),
        );
    }
    // Bytes this process had read from storage (not the page cache): a
    // question that misses the cache reads its 32 KiB from the disk.
    let io_read = || {
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        io.lines()
            .find_map(|l| l.strip_prefix("read_bytes:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let read_before = io_read();
    let t = Instant::now();
    let present_found = there.iter().filter(|id| trust.has_chunk(id)).count();
    let present_s = t.elapsed().as_secs_f64();
    // The same questions again: their stretches of the files are cached
    // now, so this is the cost without the disk.
    let t = Instant::now();
    let again = there.iter().filter(|id| trust.has_chunk(id)).count();
    let again_s = t.elapsed().as_secs_f64();
    assert_eq!(again, present_found, "answers changed");
    // Random ids: absent, but for a prefix collision (odds about
    // N / 2^64 each: 1e-11 at 200 M).
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabcdef);
    let t = Instant::now();
    let absent_found = (0..check)
        .filter(|_| trust.has_chunk(&ObjectId::from_bytes(rng.random())))
        .count();
    let absent_s = t.elapsed().as_secs_f64();
    let read_questions = io_read() - read_before;
    let nodes = store.packs();
    let nodes_found = (0..check)
        .map(|i| i * nodes / check)
        .filter(|&n| trust.has_node(&node_name(n)))
        .count();
    let nodes_absent_found = (0..check)
        .filter(|_| trust.has_node(&ObjectId::from_bytes(rng.random())))
        .count();
    let checks = there.len() as u64 + 3 * check;
    let peak_all = rss_mib("VmHWM:");
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let seen = seen.lock().expect("not poisoned");
    let phases: serde_json::Map<String, serde_json::Value> = PHASES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let v = serde_json::json!({"rss_mib": seen.rss[i], "until_s": seen.until[i]});
            (p.to_string(), v)
        })
        .collect();
    let spilled = files_after
        .iter()
        .filter(|n| n.starts_with("part-"))
        .count();
    println!(
        "{}",
        serde_json::json!({
            "entries": store.entries_total(),
            "depth": store.depth,
            "shards": shards,
            "entries_per_shard": store.per_shard,
            "packs": store.packs(),
            "nodes": nodes,
            "load": {
                "seconds": load_s,
                "list_requests_packs": lists[0],
                "list_requests_index": lists[1],
                "list_requests_nodes": lists[2],
                "list_requests": store.list_requests(),
                "gets": gets,
                "bytes_read": get_bytes,
                "peak_rss_mib": peak_load,
                "rss_after_mib": rss_loaded,
                "rss_before_mib": rss_before,
                "generator_peak_mib": generator_peak,
                "phases_rss_mib": phases,
                "spill_bytes_peak": seen.disk_peak.max(disk_after),
                "spill_bytes_after": disk_after,
                "spill_parts": spilled,
                // The parts hold 8 bytes per distinct prefix, nothing else.
                "spilled_prefixes": disk_after / 8,
                "spill_files": files_after.len(),
            },
            "present_checked": there.len(),
            "present_found": present_found,
            "absent_checked": check,
            "absent_found": absent_found,
            "nodes_checked": check,
            "nodes_found": nodes_found,
            "nodes_absent_checked": check,
            "nodes_absent_found": nodes_absent_found,
            "us_per_question": (present_s + absent_s) * 1e6 / (there.len() as u64 + check) as f64,
            "us_per_question_cached": again_s * 1e6 / there.len() as f64,
            "questions_storage_read_bytes": read_questions,
            "questions": checks,
            "peak_rss_mib": peak_all,
        })
    );
    // Keeps the set (and its files) until the figures above are taken.
    drop(trust);
}
