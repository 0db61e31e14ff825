//! The last pipeline stage: storing a segment's new chunks, then its node.

use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::BackupStats;
use crate::progress::Progress;
use crate::repo::{Repository, Stored};

use super::trust::Trust;

/// Chunk puts at once per segment (hides per-object latency: fsync on a
/// local disk, a round trip on S3).
const PUTS_PER_SEGMENT: usize = 16;

/// One segment's result, ready to store.
pub(super) struct UploadJob {
    pub idx: usize,
    pub segment: Option<ObjectId>,
    /// The node to store (None when reused from the parent or all zero).
    pub node: Option<Vec<u8>>,
    /// New chunks, framed; `true` to store over a damaged copy.
    pub chunks: Vec<(ObjectId, Bytes, bool)>,
    pub stats: BackupStats,
}

impl UploadJob {
    /// A segment with nothing to store.
    pub fn unchanged(idx: usize, segment: Option<ObjectId>, stats: BackupStats) -> Self {
        UploadJob {
            idx,
            segment,
            node: None,
            chunks: Vec::new(),
            stats,
        }
    }
}

/// What storing needs from the pipeline.
pub(super) struct Uploader<'a> {
    pub repo: &'a Repository,
    pub progress: &'a Progress,
    /// Objects found already stored (the lease's dependencies).
    pub existed: &'a Mutex<Vec<ObjectRef>>,
    /// Keys stored over damaged copies.
    pub replaced: &'a Mutex<Vec<String>>,
    /// Objects known damaged: stored over, not trusted as "already there".
    pub trust: &'a Trust,
}

impl Uploader<'_> {
    fn note_replaced(&self, key: String) {
        self.replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key);
    }

    /// Stores a segment's new chunks, then its node.
    pub async fn upload(&self, job: UploadJob) -> Result<(usize, Option<ObjectId>, BackupStats)> {
        let mut stats = job.stats;
        let store = self.repo.chunks();
        let results: Vec<(ObjectId, Stored, u64, bool)> = futures::stream::iter(job.chunks)
            .map(|(id, framed, replace)| {
                let store = &store;
                async move {
                    let len = framed.len() as u64;
                    let stored = if replace {
                        store.replace(&id, framed).await?;
                        self.note_replaced(crate::keys::chunk(&id));
                        Stored::New
                    } else {
                        store.put(&id, framed).await?
                    };
                    self.progress.add_transferred(len);
                    Ok::<_, Error>((id, stored, len, replace))
                }
            })
            .buffer_unordered(PUTS_PER_SEGMENT)
            .try_collect()
            .await?;
        let mut existed = Vec::new();
        for (id, stored, len, replaced) in results {
            stats.bytes_uploaded += len;
            if stored == Stored::New {
                stats.new_chunks += 1;
                stats.bytes_stored += len;
            }
            // A copy stored over a damaged one existed before: `repair`
            // may delete it (as a sweep) before seeing the new bytes, so
            // the session checks it like an object found stored.
            if stored != Stored::New || replaced {
                existed.push(ObjectRef::Chunk(id));
            }
        }
        if let (Some(id), Some(plain)) = (job.segment, job.node) {
            let replaced = self.trust.damaged_nodes.contains(&id);
            let (stored, len) = if replaced {
                let len = self.repo.replace_node(&id, &plain).await?;
                self.note_replaced(crate::keys::node(&id));
                (Stored::New, len)
            } else {
                self.repo.put_node(&id, &plain).await?
            };
            stats.bytes_uploaded += len;
            if stored == Stored::New {
                stats.new_nodes += 1;
                stats.bytes_stored += len;
            }
            if stored != Stored::New || replaced {
                existed.push(ObjectRef::Node(id));
            }
        }
        if !existed.is_empty() {
            let mut all = self.existed.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(existed);
        }
        Ok((job.idx, job.segment, stats))
    }
}
