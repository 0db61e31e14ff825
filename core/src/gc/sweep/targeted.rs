//! A sweep that deletes named objects instead of unreferenced ones: how
//! `repair` removes damaged nodes, and packs whose trailer does not open
//! once their chunks are stored again, while backups run.
//!
//! A damaged object is referenced, so no lease protects it from this
//! sweep, and a backup may rely on it (found "already stored", or stored
//! again over it). The marker therefore observes no session at all: every
//! session that sees the sweep's deletions re-checks all it relies on
//! ([`crate::session::Session::check`]) and stores again from its source
//! what is gone. Each batch is announced before its objects are checked
//! once more, so a copy a backup stored over the damaged one before the
//! announcement is seen sound and kept, and one stored after it is
//! re-checked by that backup.

use std::future::Future;

use futures::{StreamExt, TryStreamExt};

use super::{BATCH, Phase, Sweep};
use crate::damage::Health;
use crate::error::{Error, Result};
use crate::keys;

/// Objects checked at once.
const CHECKS: usize = 16;

/// What a targeted sweep did with each key.
#[derive(Clone, Debug, Default)]
pub struct Removal {
    pub deleted: Vec<String>,
    pub sound: Vec<String>,
    pub gone: Vec<String>,
    /// Damaged, but the store would not delete them (key, why).
    pub undeletable: Vec<(String, String)>,
}

impl Sweep {
    /// Deletes `keys` in one request; if the store calls part of it damage
    /// (e.g. a symbolic link planted under a key of a local repository),
    /// deletes them one by one and returns those that could not go, with
    /// why, so that one of them does not stop the repair for good.
    async fn delete_each_if_need_be(&self, keys: &[String]) -> Result<Vec<(String, String)>> {
        let b = self.repo.backend();
        match b.delete_many(keys).await.map_err(Error::from) {
            Ok(()) => return Ok(Vec::new()),
            Err(e) if !e.is_damage() => return Err(e),
            Err(_) => {}
        }
        let mut failed = Vec::new();
        for k in keys {
            if let Err(e) = b.delete_many(std::slice::from_ref(k)).await {
                let e = Error::from(e);
                if !e.is_damage() {
                    return Err(e);
                }
                failed.push((k.clone(), e.to_string()));
            }
        }
        Ok(failed)
    }

    /// Deletes those of `keys` (chunks, nodes, and packs whose trailer
    /// does not open once their chunks were stored again) that `check`
    /// still finds damaged, then ends the sweep. Fails with [`Error::SweepBusy`] if
    /// another sweep was running when this one began.
    pub async fn remove_objects<F, Fut>(mut self, keys: Vec<String>, check: F) -> Result<Removal>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<(String, Health)>>,
    {
        if let Some((seq, host)) = self.yielded_to() {
            let host = host.to_string();
            return Err(Error::SweepBusy { seq, host });
        }
        if self.dry_run {
            return Err(Error::Internal(
                "a targeted sweep cannot be a dry run".into(),
            ));
        }
        self.marker.update(|s| s.targeted = true);
        self.marker.write().await?;
        let heartbeat = self.heartbeat();
        let result = self.remove_in_batches(keys, check).await;
        drop(heartbeat);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.stop().await;
                return Err(e);
            }
        };
        self.write_done().await?;
        Ok(out)
    }

    async fn remove_in_batches<F, Fut>(&mut self, keys: Vec<String>, check: F) -> Result<Removal>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<(String, Health)>>,
    {
        let mut out = Removal::default();
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| keys::parse_content(k).is_some() || keys::parse_pack(k).is_some())
            .collect();
        for part in keys.chunks(BATCH) {
            self.marker.update(|s| s.phase = Phase::Deleting);
            self.marker.write().await?;
            let verdicts: Vec<(String, Health)> = futures::stream::iter(part.iter().cloned())
                .map(&check)
                .buffer_unordered(CHECKS)
                .try_collect()
                .await?;
            let mut doomed = Vec::new();
            for (key, v) in verdicts {
                match v {
                    Health::Damaged(_) => doomed.push(key),
                    // Stored again since it was found damaged.
                    Health::Sound => out.sound.push(key),
                    Health::Gone => out.gone.push(key),
                }
            }
            // Counted before the request (see `commit_batch`).
            for k in &doomed {
                if k.starts_with(keys::NODES) {
                    self.report.nodes_deleted += 1;
                } else if k.starts_with(keys::PACKS) {
                    self.report.packs_deleted += 1;
                } else {
                    self.report.chunks_deleted += 1;
                }
            }
            self.publish_counts();
            self.refresh().await?;
            let failed = self.delete_each_if_need_be(&doomed).await?;
            self.report.batches += 1;
            for (key, why) in failed {
                doomed.retain(|k| *k != key);
                out.undeletable.push((key, why));
            }
            out.deleted.extend(doomed);
            self.publish_counts();
            self.marker.update(|s| s.phase = Phase::Idle);
            self.marker.write().await?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::chunker::ChunkParams;
    use crate::codec::Codec;
    use crate::config::RepoConfig;
    use crate::frame::{self, Kind};
    use crate::id::ObjectId;
    use crate::lease::ObjectRef;
    use crate::node::{Entry, Node};
    use crate::repo::Repository;
    use crate::session::{Check, Session};
    use crate::testing::MemBackend;

    async fn repo() -> Repository {
        let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
        Repository::init(Arc::new(MemBackend::default()), cfg)
            .await
            .unwrap()
    }

    async fn check(repo: &Repository, key: String) -> Result<(String, Health)> {
        let id = keys::parse_content(&key).unwrap();
        Ok((key, repo.check_node(&id).await?))
    }

    // Nodes: in format 2 chunks live in packs, and nodes are the objects
    // repair removes by name. A node of one segment of zero runs, its id
    // and plaintext; `tag` makes different ones.
    fn node(tag: u32) -> (ObjectId, Vec<u8>) {
        let mut entries = vec![Entry(1 << 18, None); 3];
        entries.push(Entry((1 << 18) - tag - 1, None));
        entries.push(Entry(tag + 1, None));
        Node { entries }.to_plain(&Codec::plain()).unwrap()
    }

    /// Damaged: a valid frame holding other bytes, under `id`'s key.
    async fn put_damaged(repo: &Repository, id: &ObjectId) {
        let wrong = Bytes::from(frame::encode(Kind::Node, b"other bytes", 3).unwrap());
        repo.backend()
            .put(&keys::node(id), wrong, crate::backend::PutMode::Overwrite)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_backup_relying_on_a_removed_object_checks_everything_again() {
        let repo = repo().await;
        let (id, _) = node(1);
        put_damaged(&repo, &id).await;
        let vm = "a".parse().unwrap();
        let mut session = Session::begin(&repo, &vm, "h").await.unwrap();
        session.depend([ObjectRef::Node(id)]);
        // Every dependency is checked once (it is there), then all is clear.
        let first = session.check().await.unwrap();
        assert!(
            matches!(&first, Check::Verify { all: false, deps, .. } if deps.len() == 1),
            "{first:?}"
        );
        session.settle(&first);
        assert_eq!(session.check().await.unwrap(), Check::Clear);

        let sweep = Sweep::begin(&repo, false).await.unwrap();
        let key = keys::node(&id);
        let out = sweep
            .remove_objects(vec![key.clone(), "config".into()], |k| check(&repo, k))
            .await
            .unwrap();
        assert_eq!(out.deleted, vec![key.clone()]);
        assert!(repo.backend().head(&key).await.unwrap_err().is_not_found());
        // The sweep observed no session: this one must look at all it uses.
        match session.check().await.unwrap() {
            Check::Verify { all: true, .. } => {}
            other => panic!("expected a full check, got {other:?}"),
        }
    }

    /// A backup stores a good copy over the damaged one after repair
    /// checked it and before repair deletes it: the backup must wait while
    /// repair deletes, then check everything again (and store it anew).
    #[tokio::test]
    async fn a_copy_stored_over_the_damage_while_repair_deletes_is_checked_again() {
        let repo = repo().await;
        let (id, good) = node(2);
        put_damaged(&repo, &id).await;
        let vm = "a".parse().unwrap();
        let session = Arc::new(tokio::sync::Mutex::new(
            Session::begin(&repo, &vm, "h").await.unwrap(),
        ));
        assert_eq!(session.lock().await.check().await.unwrap(), Check::Clear);

        let sweep = Sweep::begin(&repo, false).await.unwrap();
        let (r, s, g) = (repo.clone(), session.clone(), good.clone());
        let out = sweep
            .remove_objects(vec![keys::node(&id)], move |k| {
                let (repo, session, good) = (r.clone(), s.clone(), g.clone());
                async move {
                    let seen = check(&repo, k).await?;
                    // The backup, now: stores over the damage, relies on it.
                    repo.replace_node(&id, &good).await?;
                    let mut session = session.lock().await;
                    session.depend([ObjectRef::Node(id)]);
                    match session.check().await? {
                        Check::Wait { reason, .. } => {
                            assert!(reason.contains("repair"), "{reason}")
                        }
                        other => panic!("expected a wait while repair deletes, got {other:?}"),
                    }
                    Ok(seen)
                }
            })
            .await
            .unwrap();
        assert_eq!(out.deleted.len(), 1, "repair saw the damaged copy");
        let mut session = session.lock().await;
        let check = session.check().await.unwrap();
        assert!(
            matches!(check, Check::Verify { all: true, .. }),
            "{check:?}"
        );
        // The backup finds its node gone and stores it again.
        assert!(repo.backend().head(&keys::node(&id)).await.is_err());
        repo.put_node(&id, &good).await.unwrap();
        session.settle(&check);
        assert_eq!(session.check().await.unwrap(), Check::Clear);
    }

    /// While a repair sweep runs, a settle round that only looked at the
    /// deps is not the last: repair deletes what no lease protects, so
    /// what the round stored again over damage (a node replaced) may go
    /// in its next batch, and only the next check sees that.
    #[tokio::test]
    async fn no_round_is_the_last_while_a_repair_runs() {
        let repo = repo().await;
        let (id, _) = node(4);
        let vm = "a".parse().unwrap();
        let mut session = Session::begin(&repo, &vm, "h").await.unwrap();
        session.depend([ObjectRef::Node(id)]);
        // A repair between batches: its marker says targeted, idle.
        let sweep = Sweep::begin(&repo, false).await.unwrap();
        sweep.marker.update(|s| s.targeted = true);
        sweep.marker.write().await.unwrap();
        let check = session.check().await.unwrap();
        assert!(
            matches!(&check, Check::Verify { sweeps, all: false, .. } if sweeps.is_empty()),
            "{check:?}"
        );
        assert!(!session.settle(&check), "a repair runs: check again");
    }

    #[tokio::test]
    async fn an_object_stored_again_meanwhile_is_kept() {
        let repo = repo().await;
        let (id, good) = node(3);
        repo.put_node(&id, &good).await.unwrap();
        let gone = node(4).0;
        let sweep = Sweep::begin(&repo, false).await.unwrap();
        let out = sweep
            .remove_objects(vec![keys::node(&id), keys::node(&gone)], |k| {
                check(&repo, k)
            })
            .await
            .unwrap();
        assert!(out.deleted.is_empty());
        assert_eq!(out.sound, vec![keys::node(&id)]);
        assert_eq!(out.gone, vec![keys::node(&gone)]);
        repo.backend().head(&keys::node(&id)).await.unwrap();
    }

    #[tokio::test]
    async fn it_gives_way_to_a_running_sweep() {
        let repo = repo().await;
        let running = Sweep::begin(&repo, false).await.unwrap();
        let second = Sweep::begin(&repo, false).await.unwrap();
        let e = second
            .remove_objects(Vec::new(), |k| check(&repo, k))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::SweepBusy { seq, .. } if seq == running.seq()),
            "{e}"
        );
    }
}
