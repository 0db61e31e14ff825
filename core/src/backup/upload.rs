//! The last pipeline stage: a segment's new chunks into the disk's open
//! pack, then its node.
//!
//! A node may be stored before the pack holding its chunks is: nothing
//! names a node before the point's manifest, which is written only after
//! every pack and the session's index object (see
//! `crate::placement::session`).

use std::sync::Mutex;

use bytes::Bytes;

use crate::damage::Health;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::BackupStats;
use crate::placement::session::DiskPacks;
use crate::progress::Progress;
use crate::repo::{Repository, Stored};

use super::trust::Trust;

/// One segment's result, ready to store.
pub(super) struct UploadJob {
    pub idx: usize,
    pub segment: Option<ObjectId>,
    /// The node to store (None when reused from the parent or all zero).
    pub node: Option<Vec<u8>>,
    /// New chunks: id, plain length, stored bytes, and `true` when stored
    /// again for a damaged copy (its damage record can go).
    pub chunks: Vec<(ObjectId, usize, Bytes, bool)>,
    pub stats: BackupStats,
    /// Only some of a segment's chunks (one window of a segment read in
    /// windows): `segment` means nothing, a later job completes it.
    pub part: bool,
    /// The segment's last-data mark, when the job knows its entries
    /// (`None`: reused unread, or no node, whose mark is 0; see
    /// `zero_check::last_data_marks`).
    pub mark: Option<u64>,
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
            part: false,
            mark: None,
        }
    }

    /// New chunks of one window of segment `idx`.
    pub fn part(
        idx: usize,
        chunks: Vec<(ObjectId, usize, Bytes, bool)>,
        stats: BackupStats,
    ) -> Self {
        UploadJob {
            idx,
            segment: None,
            node: None,
            chunks,
            stats,
            part: true,
            mark: None,
        }
    }
}

/// What storing needs from the pipeline.
pub(super) struct Uploader<'a> {
    pub repo: &'a Repository,
    /// The disk's packer (segments upload two at a time).
    pub packs: &'a tokio::sync::Mutex<DiskPacks>,
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

    /// Stores a segment's new chunks, then its node. Gives the segment's
    /// node id (None for a hole) and mark once a job completes it.
    pub async fn upload(
        &self,
        job: UploadJob,
    ) -> Result<(usize, Option<(Option<ObjectId>, Option<u64>)>, BackupStats)> {
        let mut stats = job.stats;
        let mut existed = Vec::new();
        if !job.chunks.is_empty() {
            let mut packs = self.packs.lock().await;
            for (id, plain_len, blob, replaced) in job.chunks {
                let len = blob.len() as u64;
                packs.add(id, plain_len, &blob).await?;
                self.progress.add_transferred(len);
                stats.new_chunks += 1;
                if replaced {
                    self.note_replaced(crate::keys::chunk(&id));
                }
            }
        }
        if let (Some(id), Some(plain)) = (job.segment, job.node) {
            let replaced = self.trust.damaged_nodes.contains(&id);
            let (stored, len) = if replaced {
                let r = self.replace_node(&id, &plain).await?;
                self.note_replaced(crate::keys::node(&id));
                r
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
        Ok((
            job.idx,
            (!job.part).then_some((job.segment, job.mark)),
            stats,
        ))
    }
}

impl Uploader<'_> {
    /// Stores a node over a copy known damaged. Credentials that may not
    /// overwrite (the backup role, docs/least-privilege.md) are refused;
    /// then a create-only put stores the node if it is gone, and a copy
    /// already there is relied on only if it is sound (its record was
    /// stale, e.g. left by an earlier backup that could not delete it). A
    /// damaged copy must first be removed by `repair`: the refusal stands,
    /// and no point relying on the damaged copy is committed.
    async fn replace_node(&self, id: &ObjectId, plain: &[u8]) -> Result<(Stored, u64)> {
        let refused = match self.repo.replace_node(id, plain).await {
            Ok(len) => return Ok((Stored::New, len)),
            Err(Error::Backend(e)) if e.is_permission_denied() => e,
            Err(e) => return Err(e),
        };
        let (stored, len) = self.repo.put_node(id, plain).await?;
        if stored == Stored::New {
            return Ok((stored, len));
        }
        match self.repo.check_node(id).await? {
            Health::Sound => Ok((Stored::Existed, len)),
            Health::Damaged(_) | Health::Gone => Err(Error::Backend(refused)),
        }
    }
}
