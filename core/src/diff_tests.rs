//! Diff from metadata: how pieces compare, and what a damaged manifest
//! or node makes of it.

use super::*;
use crate::error::Error;
use crate::gc::test_packs::{mem_repo, write_point_of};
use crate::id::PointId;
use crate::node::{Entry, Node};

fn p(start: u64, end: u64, c: Option<u8>) -> Piece {
    Piece {
        start,
        end,
        chunk: c.map(|x| ObjectId::of(&[x])),
    }
}

#[test]
fn compares_pieces() {
    let a = [p(0, 10, Some(1)), p(10, 30, None), p(30, 40, Some(2))];
    let b = [
        p(0, 10, Some(1)),
        p(10, 15, None),
        p(15, 25, None),
        p(25, 40, Some(2)),
    ];
    // Zeros equal zeros whatever their boundaries; a chunk at another
    // offset is a difference.
    assert_eq!(differing(&a, &b), vec![25..40]);
    let c = [p(0, 40, Some(9))];
    assert_eq!(differing(&a, &c), vec![0..40]);
    assert!(differing(&a, &a).is_empty());
}

/// Stores a node of `n` chunks of 256 KiB (the most this repository's
/// chunks may hold); returns its id.
async fn node_of(repo: &Repository, n: usize) -> ObjectId {
    let node = Node {
        entries: (0..n as u8)
            .map(|k| Entry(256 << 10, Some(ObjectId::of(&[k]))))
            .collect(),
    };
    let (id, plain) = node.to_plain(repo.codec()).unwrap();
    repo.put_node(&id, &plain).await.unwrap();
    id
}

/// A node shorter than its segment (a damaged or hostile manifest names
/// it there) is damage, as restore takes it: diff walked both pieces
/// lists until the shorter ended and called the rest equal.
#[tokio::test]
async fn a_node_shorter_than_its_segment_is_damage() {
    let (_mem, repo) = mem_repo(3600).await;
    // Segments of 1 MiB: four chunks, or only the first two.
    let (whole, short) = (node_of(&repo, 4).await, node_of(&repo, 2).await);
    let vm = "vm".parse().unwrap();
    let (a, b): (PointId, PointId) = (
        "20260101T000000Z-0001".parse().unwrap(),
        "20260101T000000Z-0002".parse().unwrap(),
    );
    write_point_of(&repo, "vm", &a, vec![Some(whole), Some(whole)]).await;
    write_point_of(&repo, "vm", &b, vec![Some(whole), Some(short)]).await;
    let (ma, mb) = (
        repo.load_manifest(&vm, &a).await.unwrap(),
        repo.load_manifest(&vm, &b).await.unwrap(),
    );
    let (da, db) = (&ma.disks[0], &mb.disks[0]);
    for (x, y) in [(da, db), (db, da)] {
        match diff_disks(&repo, x, y).await {
            Err(e @ Error::Corrupt { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&short.to_string()), "{text}");
                assert!(e.is_damage());
            }
            other => panic!("a short node is damage, got {other:?}"),
        }
    }
}

/// A disk of `size` bytes cut into segments of `seg`, all zeros.
fn zeros(size: u64, seg: u64) -> DiskManifest {
    DiskManifest {
        name: "d".parse().unwrap(),
        size,
        segment_size: seg,
        segments: vec![None; size.div_ceil(seg) as usize],
        last_data: Vec::new(),
        source: "test".into(),
        parent: None,
        audit: None,
        stats: Default::default(),
        checkpoint: None,
        lock_generation: None,
    }
}

/// The extents are the second disk's: a grown disk's new tail is among
/// them, a shrunk disk's removed tail is not (it is no range of the new
/// image, and `backup --changed` refuses extents past the disk's end:
/// listed, it made `diff --extents` a change file backup refused).
#[tokio::test]
async fn extents_are_ranges_of_the_second_disk() {
    let (_mem, repo) = mem_repo(3600).await;
    let seg = repo.config().segment_size;
    let (big, small) = (zeros(3 * seg, seg), zeros(seg + seg / 2, seg));
    let shrunk = diff_disks(&repo, &big, &small).await.unwrap();
    assert!(shrunk.is_empty(), "{shrunk:?}");
    let grown = diff_disks(&repo, &small, &big).await.unwrap();
    assert_eq!(grown.ranges(), &[seg + seg / 2..3 * seg]);
}

/// Disks of two segment sizes (a manifest of another size than the
/// repository's does not load, so only a caller's mistake gives them)
/// are refused: they were compared by clipped pieces, whose starts are
/// not the chunks' starts where a chunk crosses the other's segments.
#[tokio::test]
async fn disks_of_two_segment_sizes_are_refused() {
    let (_mem, repo) = mem_repo(3600).await;
    let seg = repo.config().segment_size;
    let (a, b) = (zeros(2 * seg, seg), zeros(2 * seg, seg / 2));
    let got = diff_disks(&repo, &a, &b).await;
    assert!(matches!(got, Err(Error::Internal(_))), "{got:?}");
}

/// A node gone because its point was removed meanwhile (forget, then a
/// gc) is told as the point removed, not damage; gone while the point
/// stays, it is damage (review, stop 56).
#[tokio::test]
async fn a_node_gone_with_its_point_is_the_point_removed() {
    let (mem, repo) = mem_repo(3600).await;
    let two = node_of(&repo, 4).await;
    let vm = "vm".parse().unwrap();
    let (a, b): (PointId, PointId) = (
        "20260101T000000Z-0001".parse().unwrap(),
        "20260101T000000Z-0002".parse().unwrap(),
    );
    write_point_of(&repo, "vm", &a, vec![None]).await;
    write_point_of(&repo, "vm", &b, vec![Some(two)]).await;
    let (ma, mb) = (
        repo.load_manifest(&vm, &a).await.unwrap(),
        repo.load_manifest(&vm, &b).await.unwrap(),
    );
    let gone = |key: String| {
        let mem = mem.clone();
        async move {
            use crate::backend::Backend;
            mem.delete_many(&[key]).await.unwrap();
        }
    };
    gone(crate::keys::node(&two)).await;
    let e = diff_disks(&repo, &ma.disks[0], &mb.disks[0])
        .await
        .unwrap_err();
    assert!(e.is_damage(), "{e}");
    // The point stays: damage.
    let still = removed_or(&repo, [&ma, &mb], e).await;
    assert!(still.is_damage(), "{still}");
    // Its point removed too: what diff met went with it.
    gone(crate::keys::point(&vm, &b)).await;
    let e = diff_disks(&repo, &ma.disks[0], &mb.disks[0])
        .await
        .unwrap_err();
    match removed_or(&repo, [&ma, &mb], e).await {
        Error::PointRemoved { point } => assert!(point.ends_with(b.as_str()), "{point}"),
        other => panic!("want the point removed, got {other}"),
    }
}
