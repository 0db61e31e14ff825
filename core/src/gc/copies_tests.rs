//! Copies of a live chunk in several packs: gc keeps one (the oldest
//! readable copy, once it opens) and counts the others as waste.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;

use super::PackOptions;
use super::copies_rewrite_tests::remove;
use super::pack_plan::class_rules;
use super::pack_sweep_tests::{Chunk, chunk, exists, gc, point, readable, repo};
use super::test_packs::{places, read_chunk, spoil, store_pack};
use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::crypto::{Access, Argon2Params, Secret};
use crate::id::ObjectId;
use crate::keys;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Two backups that stored the same new chunks at once: pack `a` first,
/// then `b` (c0-c2 again, and c3, which no point uses). With `spoiled`,
/// that chunk's copy in `a` is damaged.
async fn stored_twice(
    mem: &MemBackend,
    repo: &Repository,
    c: &[Chunk],
    spoiled: Option<&ObjectId>,
) -> (ObjectId, ObjectId) {
    let (a, _) = store_pack(repo, &c[0..3]).await;
    if let Some(id) = spoiled {
        spoil(mem, repo, &a, id).await;
    }
    mem.clock().advance(Duration::minutes(1));
    let (b, _) = store_pack(repo, &[&c[3..4], &c[0..3]].concat()).await;
    point(repo, 1, &c[0..3]).await;
    mem.clock().advance(Duration::hours(1));
    (a, b)
}

#[tokio::test]
async fn a_live_chunk_stored_in_two_packs_keeps_the_older_copy_only() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..4).map(chunk).collect();
    let (a, b) = stored_twice(&mem, &repo, &c, None).await;
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (r.copies_left_out, r.copies_kept_bad_keeper),
        (3, 0),
        "{r:?}"
    );
    assert!(r.copy_bytes_left_out > 0, "{r:?}");
    // b held nothing but copies and a dead chunk: it goes whole.
    assert_eq!((r.packs_deleted, r.packs_rewritten), (1, 0), "{r:?}");
    assert!(exists(&mem, &keys::pack(&a)).await);
    assert!(!exists(&mem, &keys::pack(&b)).await);
    for (id, data) in &c[0..3] {
        assert_eq!(places(&repo, id).await, 1);
        assert_eq!(&read_chunk(&repo, id).await.unwrap(), data);
    }
    let again = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (again.copies_left_out, again.packs_deleted),
        (0, 0),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_keeper_that_does_not_open_keeps_the_other_copy() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..4).map(chunk).collect();
    let (a, b) = stored_twice(&mem, &repo, &c, Some(&c[1].0)).await;
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (r.copies_left_out, r.copies_kept_bad_keeper),
        (2, 1),
        "{r:?}"
    );
    assert!(exists(&mem, &keys::pack(&a)).await);
    // b is now c1 live and three quarters waste: rewritten without the
    // copies of c0 and c2 (and dead c3).
    assert_eq!((r.packs_rewritten, r.packs_written), (1, 1), "{r:?}");
    assert!(!exists(&mem, &keys::pack(&b)).await);
    assert_eq!(places(&repo, &c[0].0).await, 1);
    assert_eq!(places(&repo, &c[2].0).await, 1);
    // c1: its damaged copy in a, its good one in the new pack.
    assert_eq!(places(&repo, &c[1].0).await, 2);
    readable(&repo, &c[0..3]).await;
}

#[tokio::test]
async fn copies_in_an_archive_class_are_all_kept() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..4).map(chunk).collect();
    let (a, b) = stored_twice(&mem, &repo, &c, None).await;
    mem.clock().advance(Duration::days(400));
    // gc may not read chunk data there, so no keeper can be checked.
    let deep = PackOptions {
        rules: class_rules("DEEP_ARCHIVE", &BTreeMap::new()),
        ..Default::default()
    };
    let r = gc(&repo, deep).await;
    assert_eq!((r.copies_left_out, r.packs_deleted), (0, 0), "{r:?}");
    assert!(exists(&mem, &keys::pack(&a)).await);
    assert!(exists(&mem, &keys::pack(&b)).await);
}

#[tokio::test]
async fn a_key_that_cannot_read_chunk_data_keeps_every_copy() {
    let fast = Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let pw = |s: &str| Secret::password(s.as_bytes().to_vec(), format!("password {s:?}"));
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let full = Repository::init_encrypted(mem.clone(), cfg, &pw("admin"), fast)
        .await
        .unwrap();
    let keys = full.codec().master_keys().unwrap();
    crate::crypto::add_slot(&*mem, keys, &pw("host"), Access::BackupOnly, fast)
        .await
        .unwrap();
    let c: Vec<Chunk> = (0..4)
        .map(|i| {
            let (_, data) = chunk(i);
            (full.codec().chunk_id(&data), data)
        })
        .collect();
    let (a, b) = stored_twice(&mem, &full, &c, None).await;
    let host = Repository::open_with(mem.clone(), || Ok(pw("host")))
        .await
        .unwrap();
    assert_eq!(host.codec().access(), Access::BackupOnly);
    let r = gc(&host, PackOptions::default()).await;
    assert_eq!(
        (r.copies_left_out, r.copies_kept_bad_keeper, r.packs_deleted),
        (0, 0, 0),
        "{r:?}"
    );
    assert!(exists(&mem, &keys::pack(&a)).await);
    assert!(exists(&mem, &keys::pack(&b)).await);
    // The full key does.
    let r = gc(&full, PackOptions::default()).await;
    assert_eq!((r.copies_left_out, r.packs_deleted), (3, 1), "{r:?}");
    readable(&full, &c[0..3]).await;
}

#[tokio::test]
async fn a_copy_in_a_pack_that_stays_is_kept_and_its_keeper_not_read() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..9).map(chunk).collect();
    let (a, _) = store_pack(&repo, &c[0..3]).await;
    // Damaged, which a read of the keeper would find.
    spoil(&mem, &repo, &a, &c[1].0).await;
    mem.clock().advance(Duration::minutes(1));
    // c1 again with six more live chunks: one copy in seven is waste
    // under `--max-waste`, so b stays whole and nothing of c1 goes.
    let (b, _) = store_pack(&repo, &c[1..9]).await;
    point(&repo, 1, &c).await;
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (r.copies_left_out, r.copies_kept_bad_keeper, r.packs_deleted),
        (0, 0, 0),
        "{r:?}"
    );
    assert!(r.waste_bytes_left > 0, "{r:?}");
    assert!(exists(&mem, &keys::pack(&b)).await);
    assert_eq!(&read_chunk(&repo, &c[1].0).await.unwrap(), &c[1].1);
}

/// An index object whose entries name a pack its table does not (hostile:
/// a plain repository, or any holder of the metadata key such as a
/// backup-only host). Counted, the orphan it names was the keeper (the
/// oldest copy), still deleted as an orphan, and the one real copy
/// dropped as extra (found by review): entries of packs no table names
/// are not counted.
#[tokio::test]
async fn an_orphan_named_by_a_hostile_entry_is_no_keeper() {
    use crate::backend::PutMode;
    use crate::placement::index::{IndexEntry, encode_in, index_name};
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..3).map(chunk).collect();
    // The orphan, first (c2 makes it differ from the real pack).
    let h = super::test_packs::put_pack(&repo, &[c[0].clone(), c[2].clone()]).await;
    mem.clock().advance(Duration::minutes(1));
    let (p, _) = store_pack(&repo, &c[0..2]).await;
    point(&repo, 1, &c[0..2]).await;
    // c0 -> h, at its true place; the table names some other pack.
    let at = super::test_packs::pack_entries(&repo, &h)
        .await
        .into_iter()
        .find(|e| e.entry.id == c[0].0)
        .unwrap();
    let mut obj = encode_in(
        repo.codec(),
        "",
        vec![IndexEntry {
            pack: h,
            entry: at.entry,
        }],
    )
    .to_vec();
    let n = obj.len();
    obj[n - 64..n - 32].copy_from_slice(ObjectId::from_bytes([7; 32]).as_bytes());
    let sum = *blake3::hash(&obj[n - 72..n - 32]).as_bytes();
    obj[n - 32..].copy_from_slice(&sum);
    let key = keys::index_in("", &index_name(&obj));
    mem.put(&key, obj.into(), PutMode::Create).await.unwrap();
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(r.copies_left_out, 0, "{r:?}");
    assert!(exists(&mem, &keys::pack(&p)).await, "{r:?}");
    for (id, data) in &c[0..2] {
        assert_eq!(
            &read_chunk(&repo, id).await.expect("a live chunk lost"),
            data
        );
    }
}

/// The kept copy does not open, and both its pack and the pack of the
/// other copy are rewritten (each mostly dead). The kept copy's pack goes
/// first (oldest): its damaged blob was copied verbatim into the open new
/// pack, and the good copy, counted live again, then skipped because the
/// open pack held the chunk; both old packs went (found by review). Now a
/// chunk whose kept copy did not open is opened before a rewrite copies
/// it, and a copy that does not open is left out.
#[tokio::test]
async fn a_damaged_kept_copy_does_not_stand_for_a_good_one_in_a_rewrite() {
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..5).map(chunk).collect();
    // a: c0 (live, damaged), c1 and c2 dead: two thirds waste.
    let (a, _) = store_pack(&repo, &c[0..3]).await;
    spoil(&mem, &repo, &a, &c[0].0).await;
    mem.clock().advance(Duration::minutes(1));
    // b: c0 again, c3 and c4 dead.
    let (b, _) = store_pack(&repo, &[c[0].clone(), c[3].clone(), c[4].clone()]).await;
    point(&repo, 1, &c[0..1]).await;
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (
            r.copies_kept_bad_keeper,
            r.copies_damaged_left_out,
            r.packs_rewritten
        ),
        (1, 1, 2),
        "{r:?}"
    );
    assert!(!exists(&mem, &keys::pack(&a)).await, "{r:?}");
    assert!(!exists(&mem, &keys::pack(&b)).await, "{r:?}");
    assert_eq!(places(&repo, &c[0].0).await, 1);
    assert_eq!(&read_chunk(&repo, &c[0].0).await.unwrap(), &c[0].1);
    // The copy left out is recorded (a hint for the next backup, should
    // no copy open).
    let key = keys::damage(&crate::placement::chunk_name(&c[0].0));
    assert!(exists(&mem, &key).await);
}

/// A sweep killed after its rewrite stored a new pack leaves it as an
/// orphan; damaged since, it was taken as the next sweep's rewrite of the
/// same pack (same blobs, same name: "already exists" is success), its
/// chunks indexed there and their old pack deleted: a live chunk lost
/// (found by review; older than copies). Now a pack there under the name
/// of a rewrite must hold its bytes, else the sweep holds its deletions.
#[tokio::test]
async fn a_damaged_pack_of_a_killed_sweep_is_not_taken_for_its_rewrite() {
    use crate::placement::packer::DEFAULT_TARGET;
    use crate::placement::sweep::Repacker;
    let (mem, repo) = repo().await;
    let c: Vec<Chunk> = (0..3).map(chunk).collect();
    let (a, _) = store_pack(&repo, &c[0..3]).await;
    point(&repo, 1, &c[0..1]).await;
    // What the killed sweep stored: a's live chunk in a new pack.
    let mut rp = Repacker::new(repo.codec().clone(), DEFAULT_TARGET);
    let live0 = c[0].0;
    let max = repo.config().chunking.max;
    let backend = repo.backend().clone();
    rp.take(&*backend, &a, max, |id| *id == live0, |_| false)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let n = rp.finish(&*backend).await.unwrap().unwrap().name;
    spoil(&mem, &repo, &n, &c[0].0).await;
    mem.clock().advance(Duration::hours(1));
    let r = gc(&repo, PackOptions::default()).await;
    assert!(
        r.held.as_deref().is_some_and(|h| h.contains("other blobs")),
        "{r:?}"
    );
    assert!(exists(&mem, &keys::pack(&a)).await, "{r:?}");
    assert_eq!(
        &read_chunk(&repo, &c[0].0).await.expect("a live chunk lost"),
        &c[0].1
    );
}

/// The oldest copy's pack has a damaged trailer, and stays (all live, so
/// not rewritten): its copy opens through the index, but a trailer that
/// does not list it means `index rebuild` would not find it. It was taken as the keeper
/// and the other copy went (a suspicion of review 2 at stop 47). Now a
/// keeper must be listed at its place by its pack's own trailer; here it
/// is not, so the other copy stays, live in its pack (x: with c3 dead,
/// and with `x_rewritten` c4 live and c5 dead).
#[tokio::test]
async fn a_keeper_its_trailer_does_not_list_keeps_the_other_copy() {
    use crate::backend::{Backend, PutMode};
    for x_rewritten in [false, true] {
        let (mem, repo) = repo().await;
        let c: Vec<Chunk> = (0..6).map(chunk).collect();
        let (k, _) = store_pack(&repo, &c[0..3]).await;
        let key = keys::pack(&k);
        let mut bytes = mem.get(&key).await.unwrap().to_vec();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        remove(&mem, &k).await;
        mem.put(&key, bytes.into(), PutMode::Create).await.unwrap();
        mem.clock().advance(Duration::minutes(1));
        let in_x = if x_rewritten { 6 } else { 4 };
        store_pack(&repo, &[&c[0..1], &c[3..in_x]].concat()).await;
        let mut live = c[0..3].to_vec();
        if x_rewritten {
            live.push(c[4].clone());
        }
        point(&repo, 1, &live).await;
        mem.clock().advance(Duration::hours(1));
        let r = gc(&repo, PackOptions::default()).await;
        let case = format!("x rewritten {x_rewritten}: {r:?}");
        assert_eq!(
            (r.copies_kept_bad_keeper, r.copies_left_out),
            (1, 0),
            "{case}"
        );
        readable(&repo, &live).await;
        // A copy of c0 in a pack whose trailer lists it (x, or the pack
        // it was rewritten into).
        let mut listed = 0;
        for e in super::test_packs::all_entries(&repo).await {
            if e.entry.id == c[0].0 && e.pack != k && exists(&mem, &keys::pack(&e.pack)).await {
                let entries = super::test_packs::pack_entries(&repo, &e.pack).await;
                listed += entries.iter().filter(|t| t.entry == e.entry).count();
            }
        }
        assert_eq!(listed, 1, "{case}");
    }
}

/// Chunk c0 in pack `a` (older) with c1-c3, none of them live: three
/// quarters waste, so `a` is rewritten; and in `b` with c4-c9, all live:
/// one copy in seven is waste, below `--max-waste`, so `b` stays. With
/// `spoiled`, c0's copy in `b` is damaged. Returns the chunks, `a`, `b`
/// and the live chunks (the point's).
async fn one_pack_goes_one_stays(
    mem: &MemBackend,
    repo: &Repository,
    spoiled: bool,
) -> (Vec<Chunk>, ObjectId, ObjectId, Vec<Chunk>) {
    let c: Vec<Chunk> = (0..10).map(chunk).collect();
    let (a, _) = store_pack(repo, &c[0..4]).await;
    mem.clock().advance(Duration::minutes(1));
    let live = [&c[0..1], &c[4..10]].concat();
    let (b, _) = store_pack(repo, &live).await;
    if spoiled {
        spoil(mem, repo, &b, &c[0].0).await;
    }
    point(repo, 1, &live).await;
    mem.clock().advance(Duration::hours(1));
    (c, a, b, live)
}

/// The oldest copy's pack is rewritten (mostly dead), another copy's pack
/// stays whole (its waste below `--max-waste`). The oldest copy was kept:
/// moved into a new pack, while the copy in the pack that stays was
/// counted as waste there, and the next gc, finding the moved copy the
/// youngest, left it out in turn (bytes moved twice for nothing; seen in
/// `clones_backed_up_at_once_are_stored_once_after_gc` at stop 54). Now a
/// copy in a pack that stays is kept in preference to one in a pack that
/// goes: nothing moves, and the next gc has nothing to do.
#[tokio::test]
async fn a_copy_in_a_pack_that_stays_is_kept_rather_than_one_that_would_move() {
    let (mem, repo) = repo().await;
    let (c, a, b, live) = one_pack_goes_one_stays(&mem, &repo, false).await;
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (
            r.copies_left_out,
            r.packs_deleted,
            r.packs_rewritten,
            r.live_bytes_moved
        ),
        (1, 1, 0, 0),
        "{r:?}"
    );
    assert!(!exists(&mem, &keys::pack(&a)).await, "{r:?}");
    assert!(exists(&mem, &keys::pack(&b)).await, "{r:?}");
    assert_eq!(places(&repo, &c[0].0).await, 1);
    readable(&repo, &live).await;
    // Past the clock margin, or the next gc takes a moved copy's new pack
    // for young and leaves it alone whatever it holds (review 90).
    mem.clock().advance(Duration::hours(1));
    let again = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (
            again.copies_left_out,
            again.packs_deleted,
            again.packs_rewritten
        ),
        (0, 0, 0),
        "{again:?}"
    );
}

/// As above, but the copy in the pack that stays does not open: the
/// check of kept copies finds it, every copy stays, and the pack that
/// goes is rewritten with its good copy opened and moved.
#[tokio::test]
async fn a_copy_preferred_as_it_stays_that_does_not_open_keeps_the_other() {
    let (mem, repo) = repo().await;
    let (_, a, b, live) = one_pack_goes_one_stays(&mem, &repo, true).await;
    let r = gc(&repo, PackOptions::default()).await;
    assert_eq!(
        (
            r.copies_kept_bad_keeper,
            r.copies_left_out,
            r.packs_rewritten,
            r.packs_written
        ),
        (1, 0, 1, 1),
        "{r:?}"
    );
    assert!(r.live_bytes_moved > 0, "{r:?}");
    assert!(!exists(&mem, &keys::pack(&a)).await, "{r:?}");
    assert!(exists(&mem, &keys::pack(&b)).await, "{r:?}");
    readable(&repo, &live).await;
}
