//! An old orphan pack goes when every live chunk it holds is in an
//! indexed pack too; that other copy must be one gc can rely on: listed
//! by its pack's trailer and opening. Otherwise the orphan's copy may be
//! the only good one, or the only one `index rebuild` can find (found by
//! review at stop 48: both orphans went).

use chrono::Duration;

use super::PackOptions;
use super::pack_sweep_tests::{Chunk, chunk, exists, gc, point, readable, repo};
use super::test_packs::{put_pack, spoil, spoil_trailer, store_pack};
use crate::keys;
#[derive(Clone, Copy, Debug)]
enum Indexed {
    /// The indexed copy's blob does not open.
    BlobDamaged,
    /// The indexed copy's pack trailer does not open.
    TrailerDamaged,
    /// Sound: the orphan may go.
    Sound,
}

#[tokio::test]
async fn an_orphan_goes_only_if_the_indexed_copy_of_its_live_chunks_is_sound() {
    for indexed in [
        Indexed::BlobDamaged,
        Indexed::TrailerDamaged,
        Indexed::Sound,
    ] {
        let (mem, repo) = repo().await;
        let c: Vec<Chunk> = (0..2).map(chunk).collect();
        let o = put_pack(&repo, &c[0..1]).await;
        mem.clock().advance(Duration::minutes(1));
        let (k, _) = store_pack(&repo, &c[0..2]).await;
        match indexed {
            Indexed::BlobDamaged => spoil(&mem, &repo, &k, &c[0].0).await,
            Indexed::TrailerDamaged => spoil_trailer(&mem, &k).await,
            Indexed::Sound => {}
        }
        point(&repo, 1, &c[0..2]).await;
        mem.clock().advance(Duration::hours(1));
        let r = gc(&repo, PackOptions::default()).await;
        let sound = matches!(indexed, Indexed::Sound);
        assert_eq!(
            exists(&mem, &keys::pack(&o)).await,
            !sound,
            "{indexed:?}: {r:?}"
        );
        if sound {
            readable(&repo, &c[0..2]).await;
        }
    }
}
