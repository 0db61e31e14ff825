//! Which index objects a sweep merges (docs/design.md, "The index in
//! shards"), besides those naming a pack that goes.

use std::collections::HashMap;

use super::{Census, IndexUse, SHARD_OBJECTS, SMALL_INDEX};
use crate::placement::shard;

impl Census {
    /// Which index objects are merged (docs/design.md, "The index in
    /// shards"), besides those naming a pack that goes. Only objects older
    /// than the cutoff: a backup may still be writing younger ones' twins.
    ///
    /// - Objects of any ids (one per backup) are all consulted by every
    ///   lookup. Once there are enough of their entries to give each shard
    ///   a block (1,024 entries at the default size) on average, they are
    ///   distributed into
    ///   shard objects; before that, the small ones are merged into one
    ///   when there are several.
    /// - A shard prefix shallower than the depth the index's size calls
    ///   for is rewritten at that depth (the index grew 16-fold); one with
    ///   [`SHARD_OBJECTS`] objects is merged into one.
    pub(super) fn choose_merges(&mut self, shard_entries: u64) {
        let total: u64 = self.objects.iter().map(|o| o.object.head.entries()).sum();
        self.depth = shard::depth_for(total, shard_entries);
        let depth = self.depth;
        let old = |o: &IndexUse| o.older_than(self.cutoff);
        let any: Vec<usize> = (0..self.objects.len())
            .filter(|&k| self.objects[k].object.prefix.is_empty() && old(&self.objects[k]))
            .collect();
        let any_entries: u64 = any
            .iter()
            .map(|&k| self.objects[k].object.head.entries())
            .sum();
        // A 512th of a shard per shard: 1,024 entries (a block) each at
        // the default size.
        let distribute =
            depth > 0 && any_entries > 0 && any_entries >= (shard_entries >> 9) << (4 * depth);
        if distribute {
            any.iter().for_each(|&k| self.objects[k].replace = true);
        } else {
            let small: Vec<usize> = any
                .into_iter()
                .filter(|&k| self.objects[k].object.head.entries() < SMALL_INDEX)
                .collect();
            if small.len() >= 2 {
                small
                    .into_iter()
                    .for_each(|k| self.objects[k].replace = true);
            }
        }
        let mut per_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
        for (k, o) in self.objects.iter().enumerate() {
            if !o.object.prefix.is_empty() && old(o) {
                per_prefix.entry(&o.object.prefix).or_default().push(k);
            }
        }
        // Distributing adds an object to a prefix: merge it first if that
        // would make SHARD_OBJECTS.
        let most = SHARD_OBJECTS - usize::from(distribute);
        let mut merge = Vec::new();
        for (prefix, ks) in per_prefix {
            if prefix.len() < depth || ks.len() >= most {
                merge.extend(ks);
            }
        }
        merge
            .into_iter()
            .for_each(|k| self.objects[k].replace = true);
        self.distribute = distribute;
    }
}
