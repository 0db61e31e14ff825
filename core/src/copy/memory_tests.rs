//! Nodes waiting for their chunks' index object are bounded by their
//! stored bytes as well as by their count: with the cap lowered, a point
//! of many nodes is flushed more than once (an index object each), and
//! still restores.

use futures::TryStreamExt;

use super::nodes::PENDING_BYTES_CAP;
use super::tests::{back_up, every_point, pair, restored, run};
use crate::backend::Backend;
use crate::keys;

#[tokio::test]
async fn waiting_nodes_are_flushed_when_their_bytes_reach_the_cap() {
    let (dir, _sb, tb, source, target) = pair(false).await;
    // 65 segments of 1 MiB, each its own byte (cheap to chunk and
    // compress, one node each): two batches of nodes.
    let disk: Vec<u8> = (0..65u8)
        .flat_map(|i| std::iter::repeat_n(i + 1, 1 << 20))
        .collect();
    let a1 = back_up(&source, &dir, "a", &disk).await;
    PENDING_BYTES_CAP.with(|c| c.set(1));
    run(&source, &target, every_point(&[&a1])).await.unwrap();
    PENDING_BYTES_CAP.with(|c| c.set(usize::MAX));
    let index: Vec<_> = tb.list(keys::INDEX).try_collect().await.unwrap();
    assert!(index.len() > 1, "one flush: {index:?}");
    assert_eq!(restored(&target, &dir, &a1).await, disk);
}
