//! Restores from an archive class, the edges found in review (stop 51): a
//! thawed copy whose expiry date has passed, and a `restore --wait`
//! shorter than the time between two looks. Over `ArchiveSim`, with the
//! helpers of `thaw.rs`.

use std::sync::Arc;

use xfull_core::Error;
use xfull_core::archive::ThawTier;
use xfull_core::progress::Progress;
use xfull_core::testing::{ArchiveSim, MemBackend};
use xfull_core::thaw::{ThawPlan, thaw, wait_ready};

use crate::thaw::{one_point, plan_of, restore_to};

/// A store whose HEAD still shows a finished restore whose copy has
/// expired: S3 answers `x-amz-restore: ongoing-request="false",
/// expiry-date="<a date in the past>"` (`state_of` reads it as `Thawed`
/// with that date) while reads of the object answer "archived" again
/// (AWS removes the copy at expiry; its header lags, a lying or stale
/// server keeps it). Every other call goes to the `ArchiveSim` wrapped.
#[derive(Debug)]
struct Expired(Arc<ArchiveSim>);

#[async_trait::async_trait]
impl xfull_core::backend::Backend for Expired {
    fn location(&self) -> String {
        self.0.location()
    }
    async fn put_opts(
        &self,
        key: &str,
        data: bytes::Bytes,
        opts: xfull_core::backend::PutOptions,
    ) -> Result<(), xfull_core::backend::BackendError> {
        self.0.put_opts(key, data, opts).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, xfull_core::backend::BackendError> {
        self.0.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, xfull_core::backend::BackendError> {
        self.0.get_range(key, range).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> Result<xfull_core::backend::ObjectMeta, xfull_core::backend::BackendError> {
        self.0.head(key).await
    }
    fn list(
        &self,
        prefix: &str,
    ) -> futures::stream::BoxStream<
        '_,
        Result<xfull_core::backend::ObjectMeta, xfull_core::backend::BackendError>,
    > {
        self.0.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), xfull_core::backend::BackendError> {
        self.0.delete_many(keys).await
    }
    async fn archive_state(
        &self,
        key: &str,
    ) -> Result<
        (
            xfull_core::backend::ObjectMeta,
            xfull_core::archive::ArchiveState,
        ),
        xfull_core::backend::BackendError,
    > {
        use xfull_core::archive::ArchiveState;
        let (meta, state) = self.0.archive_state(key).await?;
        let state = match state {
            // The copy a thaw made yesterday has expired.
            ArchiveState::Archived { class } => ArchiveState::Thawed {
                class,
                until: Some(chrono::Utc::now() - chrono::Duration::days(1)),
            },
            s => s,
        };
        Ok((meta, state))
    }
    async fn thaw(
        &self,
        key: &str,
        days: Option<u32>,
        tier: ThawTier,
    ) -> Result<xfull_core::archive::ThawAnswer, xfull_core::backend::BackendError> {
        self.0.thaw(key, days, tier).await
    }
}

/// A thawed copy whose expiry date has passed is not readable: the plan
/// must not call it ready, `thaw` must ask for it again, and `restore
/// --wait` must not return at once. Today `ArchiveState::readable` takes
/// every `Thawed` as readable whatever its `until`, so the plan says
/// ready, `thaw` asks for nothing ("already readable": an operator's
/// `xfull thaw --days 7` cannot renew or extend a copy), `restore --wait`
/// returns at once, and the restore then fails "archived".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_thawed_copy_is_not_readable() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(ArchiveSim::new(Arc::new(MemBackend::default())));
    let expired = Arc::new(Expired(sim.clone()));
    let (_, repo, m) = one_point(dir.path(), expired, 2 << 20, 11).await;
    // The restore cannot read the data: every pack is archived.
    let out = dir.path().join("restored");
    let r = restore_to(&repo, &m, &out).await;
    assert!(matches!(r, Err(Error::Archived { .. })), "{r:?}");

    let p = plan_of(&repo, &m).await;
    assert!(p.packs >= 1, "{p:?}");
    let expired = p
        .archive
        .iter()
        .filter(|s| {
            matches!(&s.state, xfull_core::archive::ArchiveState::Thawed { until: Some(u), .. }
                if *u < chrono::Utc::now())
        })
        .count() as u64;
    assert_eq!(expired, p.packs, "{p:?}");
    let ready = p.ready();
    let before = sim.thaw_requests();
    let t = thaw(&repo, &p, Some(3), ThawTier::Bulk, &Progress::default())
        .await
        .unwrap();
    let asked = sim.thaw_requests() - before;
    let ms = std::time::Duration::from_millis;
    let waited = wait_ready(
        &repo,
        &m,
        &["d".to_string()],
        ms(10),
        ms(50),
        &Progress::default(),
    )
    .await;
    assert!(
        !ready && asked == p.packs && t.requested.objects == p.packs && waited.is_err(),
        "copies that expired a day ago: plan ready {ready}, thaw asked for {asked} of {} \
         pack(s) ({t:?}), restore --wait returned {:?}",
        p.packs,
        waited.map(|w| w.ready())
    );
}

/// `restore --wait D` waits up to D: a wait shorter than the time between
/// two looks (5 minutes by default, so `--wait 4m`) must still look again
/// at its end instead of giving up at once ("still being thawed after 0 s
/// of waiting"), and a longer one must look at its end too, not give up
/// at the last look before it (`--wait 12m` gave up at 10 minutes).
/// `wait_ready` gives up as soon as `elapsed + poll > max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_shorter_than_the_poll_still_waits() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(ArchiveSim::new(Arc::new(MemBackend::default())));
    let (_, repo, m) = one_point(dir.path(), sim.clone(), 1 << 20, 12).await;
    let p = Progress::default();
    thaw(
        &repo,
        &plan_of(&repo, &m).await,
        Some(1),
        ThawTier::Bulk,
        &p,
    )
    .await
    .unwrap();
    let ms = std::time::Duration::from_millis;
    // The thaw finishes 200 ms in; the wait is 1.5 s, a look every 5 s.
    let finisher = {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(200)).await;
            sim.finish_thaws();
        })
    };
    let started = std::time::Instant::now();
    let waited = wait_ready(&repo, &m, &["d".to_string()], ms(5_000), ms(1_500), &p).await;
    let took = started.elapsed();
    finisher.await.unwrap();
    assert!(
        waited.as_ref().is_ok_and(ThawPlan::ready),
        "--wait 1.5s with a thaw done at 0.2s gave up after {took:?}: {:?}",
        waited.map(|w| w.ready())
    );
}

/// Copies already thawed that end before `--days` are asked for again (S3
/// extends them), so their class must have the tier asked for too: a tier
/// it lacks is refused before any request, as for archived packs. Only
/// the classes still to thaw were checked, so `--tier expedited --days 7`
/// over DEEP_ARCHIVE copies ending in an hour sent Expedited requests
/// (review 95).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_the_class_lacks_is_refused_for_copies_to_extend() {
    use xfull_core::archive::ArchiveState;
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(ArchiveSim::new(Arc::new(MemBackend::default())));
    let (_, repo, m) = one_point(dir.path(), sim.clone(), 1 << 20, 13).await;
    let mut p = plan_of(&repo, &m).await;
    assert!(p.packs >= 1, "{p:?}");
    // As a HEAD shows copies a thaw made, ending in an hour.
    let until = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    for s in &mut p.archive {
        s.state = ArchiveState::Thawed {
            class: "DEEP_ARCHIVE".into(),
            until,
        };
    }
    assert!(p.to_thaw().is_empty() && p.ready(), "{p:?}");
    let e = thaw(
        &repo,
        &p,
        Some(7),
        ThawTier::Expedited,
        &Progress::default(),
    )
    .await;
    assert!(
        matches!(&e, Err(Error::InvalidArgument(m)) if m.contains("DEEP_ARCHIVE")),
        "{e:?}"
    );
    assert_eq!(sim.thaw_requests(), 0);
    // A tier the class has extends every one of them.
    let t = thaw(&repo, &p, Some(7), ThawTier::Bulk, &Progress::default())
        .await
        .unwrap();
    assert_eq!(t.requested.objects, p.packs, "{t:?}");
    assert_eq!(sim.thaw_requests(), p.packs);
}
