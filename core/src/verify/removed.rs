//! Points removed while verify ran. verify lists the points and reads
//! their manifests before it reads their nodes and chunks, so a prune and
//! the gc after it may remove a point it listed, and sweep what only
//! that point used, in between. Those objects are then missing, and that
//! is no damage: nothing that exists refers to them (a crash walk found
//! verify stopping with exit 3 on such a node).
//!
//! So when the manifests are read again to place the damage, the damage
//! found only in nodes of points gone by then is dropped: nodes no
//! remaining point references, chunks only such nodes hold. What a
//! remaining point references is never swept (gc marks it live, and a
//! point that exists now existed at every sweep's mark since verify
//! began), so damage there is reported and recorded as always.

use std::collections::{HashMap, HashSet};

use super::{NodeDamage, VerifyReport};
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::lease::ObjectRef;
use crate::manifest::Manifest;
use crate::names::VmName;

/// Points named in a warning, at most.
const NAMED: usize = 5;

/// What the second reading of the manifests found.
#[derive(Debug, Default)]
pub(super) struct Remaining {
    /// Damaged nodes that a point still there references.
    nodes: HashSet<ObjectId>,
    /// Points whose manifest is gone.
    removed: Vec<String>,
}

impl Remaining {
    /// `m` is still there: the damaged nodes it references stay damage.
    pub(super) fn saw(&mut self, m: &Manifest, damaged: &HashMap<ObjectId, NodeDamage>) {
        let ids = m.disks.iter().flat_map(|d| d.segments.iter().flatten());
        self.nodes
            .extend(ids.filter(|id| damaged.contains_key(*id)).copied());
    }

    pub(super) fn removed(&mut self, vm: &VmName, id: &PointId) {
        self.removed.push(format!("{vm}@{id}"));
    }

    /// Drops from `report` the missing and damaged objects that only
    /// removed points used (`holders`: the nodes each damaged chunk is
    /// in), and says so in a warning. Nothing changes when no point was
    /// removed.
    pub(super) fn drop_damage_of_removed(
        self,
        report: &mut VerifyReport,
        holders: &HashMap<ObjectId, Vec<ObjectId>>,
    ) {
        if self.removed.is_empty() {
            return;
        }
        let used = |n: &ObjectId| self.nodes.contains(n);
        let chunk_used = |c: &ObjectId| holders.get(c).is_some_and(|h| h.iter().any(used));
        let before = report.missing.len() + report.bad_objects.len();
        report.missing.retain(|r| match r {
            ObjectRef::Node(n) => used(n),
            ObjectRef::Chunk(c) => chunk_used(c),
            ObjectRef::Pack(_) | ObjectRef::Index(_) => true,
        });
        report
            .bad_objects
            .retain(|(key, _)| match keys::parse_content(key) {
                Some(id) if key.starts_with(keys::NODES) => used(&id),
                Some(id) => chunk_used(&id),
                None => true,
            });
        let dropped = before - report.missing.len() - report.bad_objects.len();
        let mut named = self.removed[..self.removed.len().min(NAMED)].join(", ");
        if self.removed.len() > NAMED {
            named.push_str(&format!(" and {} more", self.removed.len() - NAMED));
        }
        let mut said = format!(
            "{} point(s) were removed (pruned or forgotten) while verify ran: {named}",
            self.removed.len()
        );
        if dropped > 0 {
            said.push_str(&format!(
                "; {dropped} object(s) only they used were gone by the time verify read them, \
                 which is no damage"
            ));
        }
        report.warnings.push(said);
    }
}
