//! The index check over shard objects: one trailer read per pack however
//! the index is cut, every object's entries checked (a place repeated in
//! two objects too), an object damaged half way reported while the rest
//! is still checked; the same answers with the prints in memory and in
//! local files.

use std::sync::Arc;

use super::{IndexCheck, check_index_with};
use crate::backend::{Backend, PutMode};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::{pack_entries, put_pack, shard_objects};
use crate::id::ObjectId;
use crate::keys;
use crate::placement::index::{BLOCK_ENTRIES, IndexEntry, IndexHead};
use crate::placement::index_write::store_entries;
use crate::placement::pack::PackEntry;
use crate::placement::shard;
use crate::placement::sweep::BLOCKS_PER_READ;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::testing::{MemBackend, ReplaceSim};

const PACKS: usize = 8;
const PER_PACK: usize = 16;

fn chunk(pack: usize, i: usize) -> (ObjectId, Vec<u8>) {
    let data: Vec<u8> = (0..3000u32)
        .map(|b| (b as usize * 13 + pack * 101 + i * 7) as u8)
        .chain([pack as u8, i as u8])
        .collect();
    (ObjectId::of(&data), data)
}

/// Packs with no index object yet, and their entries.
async fn packs() -> (Arc<MemBackend>, Repository, Vec<IndexEntry>) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let mut entries = Vec::new();
    for p in 0..PACKS {
        let chunks: Vec<_> = (0..PER_PACK).map(|i| chunk(p, i)).collect();
        let name = put_pack(&repo, &chunks).await;
        entries.extend(pack_entries(&repo, &name).await);
    }
    (mem, repo, entries)
}

/// Writes `entries` as 16 shard objects (one hex digit); returns their
/// keys by prefix.
async fn shards(repo: &Repository, entries: &[IndexEntry]) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for (prefix, key, bytes) in shard_objects(repo, entries) {
        repo.backend()
            .put(&key, bytes, PutMode::Create)
            .await
            .unwrap();
        keys.push((prefix, key));
    }
    keys
}

async fn replace(mem: &MemBackend, key: &str, bytes: bytes::Bytes) {
    mem.delete_many(&[key.to_string()]).await.unwrap();
    mem.put(key, bytes, PutMode::Create).await.unwrap();
}

async fn check(repo: &Repository, budget: usize) -> IndexCheck {
    let progress = Progress::default();
    check_index_with(repo, &progress, budget).await.unwrap()
}

/// Budgets: in memory, and 64 bytes (8 prints: many runs and parts).
const BUDGETS: [usize; 2] = [64 << 20, 64];

#[tokio::test]
async fn a_sharded_index_costs_one_trailer_read_per_pack() {
    let (_, repo, entries) = packs().await;
    let keys = shards(&repo, &entries).await;
    // Every shard names nearly every pack: the old check read a trailer
    // per shard and pack.
    assert!(keys.len() >= 12, "{keys:?}");
    for budget in BUDGETS {
        let c = check(&repo, budget).await;
        assert_eq!(c.problems_found, 0, "{:?}", c.problems);
        assert_eq!(c.trailers_read, PACKS as u64);
        assert_eq!(c.entries_checked, (PACKS * PER_PACK) as u64);
    }
}

#[tokio::test]
async fn a_wrong_entry_is_found_in_its_shard_and_again_where_it_is_repeated() {
    let (_, repo, entries) = packs().await;
    let keys = shards(&repo, &entries).await;
    // A backup's object of any ids repeats pack 3's places, one of them
    // 16 bytes off; the shard holding that chunk has it right.
    let pack3 = entries[3 * PER_PACK].pack;
    let mut repeated: Vec<IndexEntry> = entries
        .iter()
        .filter(|e| e.pack == pack3)
        .copied()
        .collect();
    repeated[5].entry.offset += 16;
    let wrong = repeated[5];
    let stored = store_entries(&**repo.backend(), repo.codec(), "", repeated)
        .await
        .unwrap();
    let any_key = stored[0].0.clone();
    for budget in BUDGETS {
        let c = check(&repo, budget).await;
        assert_eq!(c.problems_found, 1, "{:?}", c.problems);
        let p = &c.problems[0];
        assert_eq!(p.index, any_key);
        assert_eq!(p.pack.as_deref(), Some(keys::pack(&pack3).as_str()));
        assert_eq!(
            p.chunk.as_deref(),
            Some(keys::chunk(&wrong.entry.id).as_str())
        );
        assert!(p.problem.contains("offset"), "{}", p.problem);
        assert_eq!(c.entries_checked, ((PACKS + 1) * PER_PACK) as u64);
    }
    assert!(!keys.is_empty());
}

#[tokio::test]
async fn an_object_damaged_half_way_is_reported_and_the_rest_still_checked() {
    let (mem, repo, entries) = packs().await;
    let keys = shards(&repo, &entries).await;
    // A block of one shard object edited (its head still opens), and a
    // wrong entry in another shard.
    let (_, damaged) = &keys[2];
    let mut bytes = mem.get(damaged).await.unwrap().to_vec();
    let (head, _) = IndexHead::decode_all(repo.codec(), damaged, &bytes).unwrap();
    let at = head.block_range(0).start as usize + 40;
    bytes[at] ^= 1;
    replace(&mem, damaged, bytes.into()).await;

    let (prefix, edited) = &keys[5];
    let mut mine: Vec<IndexEntry> = entries
        .iter()
        .filter(|e| shard::holds(prefix, &e.entry.id))
        .copied()
        .collect();
    mine[0].entry.stored_len += 1;
    let wrong = mine[0].entry.id;
    mem.delete_many(std::slice::from_ref(edited)).await.unwrap();
    let edited = store_entries(&**repo.backend(), repo.codec(), prefix, mine)
        .await
        .unwrap()
        .remove(0)
        .0;
    for budget in BUDGETS {
        let c = check(&repo, budget).await;
        assert_eq!(c.problems_found, 2, "{:?}", c.problems);
        let broken = c.problems.iter().find(|p| p.pack.is_none()).unwrap();
        assert_eq!(&broken.index, damaged);
        let entry = c.problems.iter().find(|p| p.chunk.is_some()).unwrap();
        assert_eq!(entry.index, edited);
        assert_eq!(entry.chunk.as_deref(), Some(keys::chunk(&wrong).as_str()));
    }
}

#[tokio::test]
async fn a_truncated_pack_is_reported_once_not_per_shard_naming_it() {
    let (mem, repo, entries) = packs().await;
    shards(&repo, &entries).await;
    let victim = keys::pack(&entries[0].pack);
    let intact = mem.get(&victim).await.unwrap();
    replace(&mem, &victim, intact.slice(..intact.len() / 2)).await;
    for budget in BUDGETS {
        let c = check(&repo, budget).await;
        assert_eq!(c.problems_found, 1, "{:?}", c.problems);
        assert_eq!(c.problems[0].pack.as_deref(), Some(victim.as_str()));
        assert!(c.problems[0].chunk.is_none());
        assert!(c.problems[0].problem.contains("trailer cannot be read"));
        assert_eq!(c.trailers_read, PACKS as u64 - 1);
    }
}

#[tokio::test]
async fn an_object_damaged_after_its_first_read_is_reported_once_and_its_first_blocks_checked() {
    let (mem, repo, entries) = packs().await;
    shards(&repo, &entries).await;
    // A backup's object of any ids: every entry again, one of them
    // wrong, among entries of a pack no longer listed (not checked),
    // enough of them that the object takes more than one read.
    let unlisted = ObjectId::from_bytes([0xEE; 32]);
    let first_read = BLOCKS_PER_READ * BLOCK_ENTRIES;
    let mut all = entries.clone();
    all.extend((0..first_read as u32 + 500).map(|i| IndexEntry {
        pack: unlisted,
        entry: PackEntry {
            id: ObjectId::of(&i.to_le_bytes()),
            offset: 0,
            stored_len: 100,
            plain_len: 100,
        },
    }));
    all.sort_by_key(|e| (e.entry.id, e.pack));
    let listed_in_first: Vec<usize> = (0..first_read)
        .filter(|&i| all[i].pack != unlisted)
        .collect();
    all[listed_in_first[0]].entry.offset += 16;
    let wrong = all[listed_in_first[0]].entry.id;
    let mut stored = store_entries(&**repo.backend(), repo.codec(), "", all)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let key = stored.remove(0).0;
    // Its first block after the first read edited.
    let mut bytes = mem.get(&key).await.unwrap().to_vec();
    let (head, _) = IndexHead::decode_all(repo.codec(), &key, &bytes).unwrap();
    assert!(head.blocks() > BLOCKS_PER_READ);
    bytes[head.block_range(BLOCKS_PER_READ).start as usize + 40] ^= 1;
    replace(&mem, &key, bytes.into()).await;
    for budget in BUDGETS {
        let c = check(&repo, budget).await;
        // Once each: the merge goes on without the object, nothing is
        // read or reported twice.
        assert_eq!(c.problems_found, 2, "{:?}", c.problems);
        let broken = c.problems.iter().find(|p| p.pack.is_none()).unwrap();
        assert_eq!(broken.index, key);
        let entry = c.problems.iter().find(|p| p.chunk.is_some()).unwrap();
        assert_eq!(entry.index, key);
        assert_eq!(entry.chunk.as_deref(), Some(keys::chunk(&wrong).as_str()));
        assert_eq!(
            c.entries_checked,
            (PACKS * PER_PACK + listed_in_first.len()) as u64
        );
    }
}

#[tokio::test]
async fn an_object_a_gc_replaces_while_it_is_read_is_no_damage() {
    let (mem, repo, entries) = packs().await;
    let shards = shards(&repo, &entries).await;
    // A backup's object of pack 0's entries, which a gc folds into
    // shards (here: the same shards again, written anew) while the check
    // reads it: its first block read finds it gone.
    let pack0: Vec<IndexEntry> = entries[..PER_PACK].to_vec();
    let victim = store_entries(&**repo.backend(), repo.codec(), "", pack0)
        .await
        .unwrap()
        .remove(0)
        .0;
    let mut replacement: Vec<(String, bytes::Bytes)> = Vec::new();
    for (_, key) in &shards {
        replacement.push((key.clone(), mem.get(key).await.unwrap()));
    }
    mem.delete_many(&shards.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let sim = Arc::new(ReplaceSim::new(mem.clone(), &victim, 2, replacement));
    let repo = Repository::open(sim.clone()).await.unwrap();
    let c = check(&repo, BUDGETS[0]).await;
    assert!(sim.replaced());
    assert_eq!(c.problems_found, 0, "{:?}", c.problems);
    // Listed before the gc: the shards were not there, the victim went.
    assert_eq!(c.entries_checked, 0);
    assert_eq!(c.trailers_read, PACKS as u64);
}

#[test]
fn a_print_changes_with_every_field_and_the_key_and_sorts_by_the_id() {
    const K: [u8; 32] = [3; 32];
    use crate::placement::pack::PackEntry;
    let entry = |seed: u8, offset: u64| PackEntry {
        id: ObjectId::from_bytes([seed; 32]),
        offset,
        stored_len: 100,
        plain_len: 200,
    };
    let pack = ObjectId::from_bytes([9; 32]);
    let e = entry(1, 0);
    let p = super::print(&K, &pack, &e);
    assert_ne!(p, super::print(&K, &ObjectId::from_bytes([8; 32]), &e));
    assert_ne!(p, super::print(&K, &pack, &entry(1, 1)));
    // Another run's key: the same id prefix, another hash.
    let other = super::print(&[4; 32], &pack, &e);
    assert_eq!(other >> 32, p >> 32);
    assert_ne!(other, p);
    assert_ne!(
        p,
        super::print(
            &K,
            &pack,
            &PackEntry {
                stored_len: 99,
                ..e
            }
        )
    );
    assert_ne!(
        p,
        super::print(
            &K,
            &pack,
            &PackEntry {
                plain_len: 199,
                ..e
            }
        )
    );
    assert!(super::print(&K, &pack, &entry(2, 0)) > super::print(&K, &pack, &entry(1, 5)));
}
