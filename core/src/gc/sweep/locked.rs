//! Object lock in a sweep: garbage whose retention has not ended is not
//! deleted (on S3 a DELETE would only hide it behind a delete marker, its
//! bytes still billed and still locked), but counted with the dates its
//! retentions end, for a later gc. Index objects are never locked (see
//! `crate::lock::store`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::{Candidate, Listed, Sweep};
use crate::error::{Error, Result};

/// Retentions read at once.
const IN_FLIGHT: usize = 16;

impl Sweep {
    /// Drops from `batch` what object lock still retains (one HEAD per
    /// node or pack candidate, in a repository with object lock only).
    pub(super) async fn keep_locked(&mut self, batch: &mut Vec<Candidate>) -> Result<()> {
        if self.repo.config().object_lock.is_none() || batch.is_empty() {
            return Ok(());
        }
        let margin = self.repo.config().protocol.margin();
        let backend = self.repo.backend().clone();
        let keys: Vec<String> = batch
            .iter()
            .filter(|c| !matches!(c.listed, Listed::Index(..)))
            .map(|c| c.key().to_string())
            .collect();
        // The keys still locked, with when their retention ends.
        let untils: HashMap<String, DateTime<Utc>> = futures::stream::iter(keys)
            .map(|key| {
                let backend = backend.clone();
                async move {
                    match crate::lock::locked_until(backend.as_ref(), &key, margin).await {
                        Ok(until) => Ok(until.map(|u| (key, u))),
                        // Gone already: deleting it again is harmless.
                        Err(Error::Backend(e)) if e.is_not_found() => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_filter_map(|r| futures::future::ready(Ok(r)))
            .try_collect()
            .await?;
        let mut kept_packs = Vec::new();
        let report = &mut self.report;
        batch.retain(|c| match untils.get(c.key()) {
            Some(until) => {
                if let Listed::Pack(_, name) = &c.listed {
                    kept_packs.push(*name);
                }
                report.locked_kept += 1;
                report.locked_bytes += c.meta().size;
                report.locked_first_until =
                    Some(report.locked_first_until.map_or(*until, |u| u.min(*until)));
                report.locked_last_until =
                    Some(report.locked_last_until.map_or(*until, |u| u.max(*until)));
                false
            }
            None => true,
        });
        // A kept pack stays indexed: the index objects naming it are not
        // deleted (a backup may have found a chunk in it meanwhile, and
        // a pack that exists must be findable, see "gc over packs").
        self.spare(kept_packs);
        Ok(())
    }
}
