//! Test helpers: chunks stored as a backup of format 2 stores them (a pack
//! and one index object naming it), and read back as readers do (every
//! place the index gives, in turn).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::chunker::ChunkParams;
use crate::config::{Protocol, RepoConfig};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::ObjectRef;
use crate::placement::index::{self, IndexEntry, IndexHead};
use crate::placement::index_write::store_entries;
use crate::placement::known::entries_of;
use crate::placement::lookup::ChunkIndex;
use crate::placement::pack::PackWriter;
use crate::placement::pack_read::{ReadRun, read_run};
use crate::placement::packer::StoredPack;
use crate::placement::shard;
use crate::repo::{Repository, Stored, put_once_as};
use crate::testing::MemBackend;

/// An in-memory repository of 1 MiB segments whose leases and sweep
/// markers live `ttl_secs`, with no clock margin (the protocol must hold
/// without it).
pub async fn mem_repo(ttl_secs: u64) -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    cfg.protocol = Protocol {
        lease_ttl_secs: ttl_secs,
        clock_margin_secs: 0,
        sweep_ttl_secs: ttl_secs,
    };
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

/// Stores a node of `chunks` and the point `vm@id` of one disk `d` of one
/// segment (the repository's segment size), dated 2026-01-01.
pub async fn write_point(
    repo: &Repository,
    vm: &str,
    id: &PointId,
    chunks: &[(ObjectId, Vec<u8>)],
) {
    use crate::node::{Entry, Node};
    let node = Node {
        entries: chunks
            .iter()
            .map(|(id, d)| Entry(d.len() as u32, Some(*id)))
            .collect(),
    };
    let (nid, plain) = node.to_plain(repo.codec()).unwrap();
    repo.put_node(&nid, &plain).await.unwrap();
    // A disk of one short segment the node covers (verify holds a node
    // to its segment's length, as restore does).
    write_disk(repo, vm, id, vec![Some(nid)], node.len()).await;
}

/// Stores the point `vm@id` of one disk `d` of the nodes `segments` (of
/// the repository's segment size), dated 2026-01-01.
pub async fn write_point_of(
    repo: &Repository,
    vm: &str,
    id: &PointId,
    segments: Vec<Option<ObjectId>>,
) {
    let size = repo.config().segment_size * segments.len() as u64;
    write_disk(repo, vm, id, segments, size).await;
}

/// As [`write_point_of`], the disk `size` bytes.
async fn write_disk(
    repo: &Repository,
    vm: &str,
    id: &PointId,
    segments: Vec<Option<ObjectId>>,
    size: u64,
) {
    use crate::manifest::{BackupStats, DiskManifest, Manifest};
    use chrono::TimeZone;
    let time = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let seg = repo.config().segment_size;
    repo.write_manifest(&Manifest {
        vm: vm.parse().unwrap(),
        id: id.clone(),
        time,
        created: time,
        parent: None,
        host: "h".into(),
        labels: BTreeMap::new(),
        disks: vec![DiskManifest {
            name: "d".parse().unwrap(),
            size,
            segment_size: seg,
            segments,
            last_data: Vec::new(),
            source: "test".into(),
            parent: None,
            audit: None,
            stats: BackupStats::default(),
            checkpoint: None,
            lock_generation: None,
        }],
        stats: BackupStats::default(),
        writer: "test".into(),
    })
    .await
    .unwrap();
}

/// Stores `chunks` (id, plaintext) as one pack and one index object
/// naming it; returns the pack's name and the index object's key.
pub async fn store_pack(repo: &Repository, chunks: &[(ObjectId, Vec<u8>)]) -> (ObjectId, String) {
    let (name, key, _) = store_pack_deps(repo, chunks).await;
    (name, key)
}

/// As [`store_pack`], and what a backup relies on without having written
/// it: the pack, or the index object, if its create-only put found the
/// same bytes already there.
pub async fn store_pack_deps(
    repo: &Repository,
    chunks: &[(ObjectId, Vec<u8>)],
) -> (ObjectId, String, Vec<ObjectRef>) {
    let (name, stored) = put_pack_as(repo, chunks).await;
    let mut deps = Vec::new();
    if stored == Stored::Existed {
        deps.push(ObjectRef::Pack(name));
    }
    let entries = pack_entries(repo, &name).await;
    let (key, stored) = store_entries(&**repo.backend(), repo.codec(), "", entries)
        .await
        .unwrap()
        .remove(0);
    if stored == Stored::Existed {
        deps.push(ObjectRef::Index(keys::parse_index(&key).unwrap()));
    }
    (name, key, deps)
}

/// Flips a byte inside the stored blob of `id` in `pack` (written again
/// in place: its time is now).
pub async fn spoil(mem: &MemBackend, repo: &Repository, pack: &ObjectId, id: &ObjectId) {
    use crate::backend::{Backend, PutMode};
    let e = pack_entries(repo, pack)
        .await
        .into_iter()
        .find(|e| e.entry.id == *id)
        .unwrap();
    let key = keys::pack(pack);
    let mut bytes = mem.get(&key).await.unwrap().to_vec();
    bytes[(e.entry.offset + u64::from(e.entry.stored_len) / 2) as usize] ^= 1;
    mem.delete_many(std::slice::from_ref(&key)).await.unwrap();
    mem.put(&key, bytes.into(), PutMode::Create).await.unwrap();
}

/// Stores `chunks` as one pack that no index object names (what a backup
/// killed before writing its index object leaves).
pub async fn put_pack(repo: &Repository, chunks: &[(ObjectId, Vec<u8>)]) -> ObjectId {
    put_pack_as(repo, chunks).await.0
}

async fn put_pack_as(repo: &Repository, chunks: &[(ObjectId, Vec<u8>)]) -> (ObjectId, Stored) {
    let mut w = PackWriter::new();
    for (id, plain) in chunks {
        w.push(repo.codec(), *id, plain, 3).unwrap();
    }
    let (name, bytes, _) = w.finish(repo.codec());
    let backend = repo.backend();
    let stored = put_once_as(
        &**backend,
        &keys::pack(&name),
        bytes,
        crate::backend::ObjectClass::Data,
    )
    .await
    .unwrap();
    (name, stored)
}

/// The index entries of a stored pack (from its trailer).
pub async fn pack_entries(repo: &Repository, name: &ObjectId) -> Vec<IndexEntry> {
    let key = keys::pack(name);
    let bytes: Bytes = repo.backend().get(&key).await.unwrap();
    let entries = crate::placement::pack::decode_trailer(
        repo.codec(),
        &key,
        &bytes,
        bytes.len() as u64,
        1 << 24,
    )
    .unwrap();
    entries_of(&[StoredPack {
        name: *name,
        size: bytes.len() as u64,
        entries,
        stored: crate::repo::Stored::New,
    }])
}

/// `entries` as the shard objects of one hex digit a gc's index sweep
/// writes, encoded, not stored: (prefix, key, bytes).
pub fn shard_objects(repo: &Repository, entries: &[IndexEntry]) -> Vec<(String, String, Bytes)> {
    let mut out = Vec::new();
    for digit in 0..16u8 {
        let prefix = format!("{digit:x}");
        let mine: Vec<IndexEntry> = entries
            .iter()
            .filter(|e| shard::holds(&prefix, &e.entry.id))
            .copied()
            .collect();
        for round in index::rounds(mine) {
            let object = index::encode_in(repo.codec(), &prefix, round);
            let key = keys::index_in(&prefix, &index::index_name(&object));
            out.push((prefix.clone(), key, object));
        }
    }
    out
}

/// Every index entry of the repository (small test repositories).
pub async fn all_entries(repo: &Repository) -> Vec<IndexEntry> {
    let b = repo.backend();
    let listed: Vec<_> = b.list(keys::INDEX).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in listed {
        let bytes = b.get(&m.key).await.unwrap();
        let (_, entries) = IndexHead::decode_all(repo.codec(), &m.key, &bytes).unwrap();
        out.extend(entries);
    }
    out
}

/// How many index entries place `id`.
pub async fn places(repo: &Repository, id: &ObjectId) -> usize {
    let all = all_entries(repo).await;
    all.iter().filter(|e| e.entry.id == *id).count()
}

/// Reads a chunk as a restore would: every place the index gives, in
/// turn, until one opens and matches its id.
pub async fn read_chunk(repo: &Repository, id: &ObjectId) -> Result<Vec<u8>, String> {
    let places: Vec<IndexEntry> = all_entries(repo)
        .await
        .into_iter()
        .filter(|e| e.entry.id == *id)
        .collect();
    let mut why = format!("chunk {}: in no index object", id.short());
    for p in places {
        let run = ReadRun {
            pack: p.pack,
            range: p.entry.range(),
            entries: vec![p.entry],
        };
        match read_run(&**repo.backend(), repo.codec(), &run).await {
            Ok(mut v) => match v.pop() {
                Some((_, Ok(plain))) => return Ok(plain),
                Some((_, Err(e))) => why = e.to_string(),
                None => why = "nothing read".into(),
            },
            Err(e) => why = format!("chunk {}: {e}", id.short()),
        }
    }
    Err(why)
}

/// Where the index places each chunk (the first place found, whether or
/// not its pack is still there), as a backup's lookup does.
pub async fn find(repo: &Repository, ids: &[ObjectId]) -> Vec<Option<IndexEntry>> {
    let index = ChunkIndex::open(repo.backend().clone(), repo.codec().clone(), None)
        .await
        .unwrap();
    // As a backup's lookup: the pack is not looked at, it may be gone.
    index.lookup(ids).await.unwrap()
}

/// A backup's use of stored chunks: the packs it takes chunks from, each
/// with those chunks, and its own packs with their index objects.
#[derive(Clone, Debug, Default)]
pub struct Reused {
    pub from: BTreeMap<ObjectId, Vec<ObjectId>>,
    pub own: Vec<(ObjectId, String)>,
    /// Own packs or index objects found already stored (relied on).
    pub existed: Vec<ObjectRef>,
}

/// What a backup does with the chunks it needs: looks them up (a chunk
/// found in pack P is reused from P) and stores the others in a pack of
/// its own with its index object.
pub async fn dedup(repo: &Repository, chunks: &[(ObjectId, Vec<u8>)], into: &mut Reused) {
    let ids: Vec<ObjectId> = chunks.iter().map(|c| c.0).collect();
    let found = find(repo, &ids).await;
    let mut new = Vec::new();
    for (c, place) in chunks.iter().zip(found) {
        match place {
            Some(p) => into.from.entry(p.pack).or_default().push(c.0),
            None => new.push(c.clone()),
        }
    }
    if !new.is_empty() {
        let (pack, key, deps) = store_pack_deps(repo, &new).await;
        into.own.push((pack, key));
        into.existed.extend(deps);
    }
}

/// The dependencies a backup records for what it reused.
pub fn deps_of(reused: &Reused) -> Vec<ObjectRef> {
    let from = reused.from.keys().map(|p| ObjectRef::Pack(*p));
    from.chain(reused.existed.iter().copied()).collect()
}

/// What a backup does for a `Check::Verify`: its own index objects are
/// written again if gone (one may have been an older object with the same
/// bytes, which a sweep replaced); for each dependency pack listed (or
/// every one, with `all`) that is gone, the chunks it took from it are
/// stored again from the source in a pack of its own; with `all`, or when
/// an own pack the check names is gone, every chunk of `chunks` that
/// cannot be read is too. Returns whether anything was
/// stored again.
pub async fn restore_deps(
    repo: &Repository,
    session: &crate::session::Session,
    check: &crate::session::Check,
    reused: &mut Reused,
    chunks: &[(ObjectId, Vec<u8>)],
) -> bool {
    let crate::session::Check::Verify { all, deps, .. } = check else {
        return false;
    };
    let listed: Vec<ObjectId> = deps
        .iter()
        .filter_map(|d| match d {
            ObjectRef::Pack(p) => Some(*p),
            _ => None,
        })
        .collect();
    let mut again = false;
    // An own pack gone that the check names (one the backup found
    // already stored, a dep) or that a full check covers: its chunks are
    // stored again below, as the backup's repair reads their segments
    // again. (Review found the harness dropped it unless `all`.)
    let mut own_lost = false;
    for (pack, key) in reused.own.clone() {
        if repo.backend().head(&keys::pack(&pack)).await.is_err() {
            reused.own.retain(|o| o.0 != pack);
            own_lost |= *all || listed.contains(&pack);
            continue;
        }
        if repo.backend().head(&key).await.is_err() {
            let entries = pack_entries(repo, &pack).await;
            store_entries(&**repo.backend(), repo.codec(), "", entries)
                .await
                .unwrap();
            again = true;
        }
    }
    let mut lost: Vec<ObjectId> = Vec::new();
    for (pack, ids) in reused.from.clone() {
        if (*all || listed.contains(&pack))
            && repo.backend().head(&keys::pack(&pack)).await.is_err()
        {
            reused.from.remove(&pack);
            lost.extend(ids);
        }
    }
    if *all || own_lost {
        for (id, _) in chunks {
            if read_chunk(repo, id).await.is_err() && !lost.contains(id) {
                lost.push(*id);
            }
        }
    }
    if lost.is_empty() {
        return again;
    }
    let lost: Vec<(ObjectId, Vec<u8>)> = chunks
        .iter()
        .filter(|c| lost.contains(&c.0))
        .cloned()
        .collect();
    // In a pack of its own whatever the index says, as the backup's repair
    // does: the index may still place them in the pack that is gone.
    let (pack, key, existed) = store_pack_deps(repo, &lost).await;
    reused.own.push((pack, key));
    let new_deps: Vec<ObjectRef> = existed
        .into_iter()
        .filter(|d| !reused.existed.contains(d))
        .collect();
    reused.existed.extend(new_deps.iter().copied());
    session.depend(new_deps);
    true
}

/// Pack options that force a sweep's census into passes: one chunk mark
/// in memory at a time, every mark its own part on disk (the tests run
/// the same schedules with and without, see `gc/pass_tests.rs`).
pub fn forced_passes() -> crate::gc::PackOptions {
    crate::gc::PackOptions {
        mark_memory: 8,
        mark_dir: Some(std::env::temp_dir()),
        ..Default::default()
    }
}

/// A sweep as it begins, with passes forced or not.
pub fn with_passes(sweep: crate::gc::Sweep, passes: bool) -> crate::gc::Sweep {
    match passes {
        true => sweep.with_pack_options(forced_passes()),
        false => sweep,
    }
}

/// Flips a byte of `pack`'s trailer (written again in place).
pub async fn spoil_trailer(mem: &MemBackend, pack: &ObjectId) {
    use crate::backend::{Backend, PutMode};
    let key = keys::pack(pack);
    let mut bytes = mem.get(&key).await.unwrap().to_vec();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    mem.delete_many(std::slice::from_ref(&key)).await.unwrap();
    mem.put(&key, bytes.into(), PutMode::Create).await.unwrap();
}

/// A chunk of about 3 KB, distinct for each `i` (id and plaintext).
pub fn small_chunk(i: usize) -> (ObjectId, Vec<u8>) {
    let data: Vec<u8> = (0..3000u32)
        .map(|b| (b as usize * 13 + i * 41) as u8)
        .chain((i as u32).to_le_bytes())
        .collect();
    (ObjectId::of(&data), data)
}

/// An unencrypted in-memory repository of 1 MiB segments.
pub async fn small_repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}
