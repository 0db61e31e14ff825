use anyhow::Result;
use xfull_core::gc::{self, GcReport, PackOptions};
use xfull_core::repo::Repository;

use crate::cli::{Cli, GcArgs};
use crate::output::{bytes, print_json};

/// How this client's sweeps judge packs (`gc` and `prune` alike): by the
/// class it stores chunk data in on S3 (its flag or profile), else the
/// repository's; a local directory is hot.
pub(crate) fn pack_options(cli: &Cli, repo: &Repository) -> Result<PackOptions> {
    let (location, s3) = crate::profile::resolve(cli)?;
    let client_class = match location.starts_with("s3://") {
        true => s3.s3_storage_class_chunks,
        false => None,
    };
    Ok(PackOptions::for_repository(
        repo.config(),
        client_class.as_deref(),
    ))
}

pub async fn run(cli: &Cli, args: &GcArgs) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let packs = PackOptions {
        max_waste_pct: args.max_waste,
        mark_memory: usize::try_from(args.mark_memory).unwrap_or(usize::MAX),
        ..pack_options(cli, &repo)?
    };
    let progress = crate::progress();
    // No bar (gc knows no total), but the steps of a long sweep as lines.
    let bar = crate::progress_ui::Bar::start(progress.clone(), "gc", cli, false);
    let report = gc::run_batched(
        &repo,
        args.dry_run,
        packs,
        usize::from(args.batch_size),
        &progress,
    )
    .await?;
    drop(bar);
    record_metrics(&report);
    if cli.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    held_exit(&report)
}

/// Exit 3 after the report when damage held every pack back, 1 when the
/// store's listing did: gc then frees nothing until it is mended, which
/// a 0 hid from a cron job.
pub(crate) fn held_exit(r: &GcReport) -> Result<()> {
    let Some(held) = r.held.clone() else {
        return Ok(());
    };
    match (r.held_by_damage, r.held_by_store) {
        (true, _) => Err(xfull_core::Error::SweepHeldByDamage { held }.into()),
        (false, true) => Err(xfull_core::Error::SweepHeldByStore { held }.into()),
        (false, false) => Ok(()),
    }
}

pub fn record_metrics(r: &GcReport) {
    use crate::metrics::record;
    for (kind, v) in [
        ("chunks_deleted", r.chunks_deleted),
        ("nodes_deleted", r.nodes_deleted),
        ("packs_deleted", r.packs_deleted),
        ("packs_rewritten", r.packs_rewritten),
        ("index_objects_deleted", r.index_objects_deleted),
        ("manifests_removed", r.trash_removed),
        ("dead_leases_removed", r.dead_leases_removed),
    ] {
        record("xfull_gc_objects", &[("kind", kind)], v as f64);
    }
    record("xfull_gc_bytes_freed", &[], r.bytes_freed as f64);
    record("xfull_gc_waste_bytes_left", &[], r.waste_bytes_left as f64);
    crate::metrics::record_requests("gc", r.requests.iter().map(|(k, v)| (k.as_str(), *v)));
}

pub fn print_report(r: &GcReport) {
    if let Some(why) = &r.skipped {
        println!("gc sweep {} skipped: {why}", r.seq);
        return;
    }
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    println!(
        "gc sweep {}{}: {} points and {} pinned, {} live leases",
        r.seq,
        if r.dry_run { " (dry run)" } else { "" },
        r.points,
        r.pinned_points,
        r.live_leases
    );
    let passes = match r.mark_passes {
        0 | 1 => String::new(),
        n => format!(", census in {n} passes"),
    };
    println!(
        "  marked {} nodes, {} chunks ({} of mark state{passes})",
        r.nodes_marked,
        r.chunks_marked,
        bytes(r.mark_state_bytes)
    );
    println!(
        "  {verb} {} of {} nodes and {} of {} packs: {} freed; {} unreferenced but recent, kept",
        r.nodes_deleted,
        r.nodes_listed,
        r.packs_deleted,
        r.packs_listed,
        bytes(r.bytes_freed),
        r.young_kept
    );
    let rewrite = if r.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    println!(
        "  {rewrite} {} packs ({} of live chunks moved into {} new packs); {} dead left in packs kept",
        r.packs_rewritten,
        bytes(r.live_bytes_moved),
        r.packs_written,
        bytes(r.waste_bytes_left)
    );
    if r.copies_left_out > 0 {
        println!(
            "  {} copies of live chunks stored more than once counted as waste ({}); one copy of \
             each kept",
            r.copies_left_out,
            bytes(r.copy_bytes_left_out)
        );
    }
    if r.copies_kept_bad_keeper + r.copies_damaged_left_out > 0 {
        println!(
            "  {} copies kept: the copy chosen to keep did not open, its pack's trailer did not list \
             it, or it could not be moved; {} copies that did not open left out of rewrites and recorded as damage (run `xfull verify --read-data`)",
            r.copies_kept_bad_keeper, r.copies_damaged_left_out
        );
    }
    if r.copies_over_cap > 0 {
        println!(
            "  {} chunks stored more than once kept every copy (past this gc's limit); a later gc \
             takes them",
            r.copies_over_cap
        );
    }
    if r.packs_not_rewritten_no_space > 0 {
        println!(
            "  {} packs not rewritten: the repository's disk has room for {} of chunk data \
             (what gc and prune need besides stays free); a gc with more room rewrites them",
            r.packs_not_rewritten_no_space,
            bytes(r.room_for_data.unwrap_or(0))
        );
    }
    if r.index_objects_written + r.index_objects_deleted > 0 {
        println!(
            "  index: {} of {} objects replaced by {} new ones",
            r.index_objects_deleted, r.index_objects_read, r.index_objects_written
        );
    }
    if r.packs_orphaned + r.packs_unindexed_live + r.packs_damaged > 0 {
        println!(
            "  {} packs of killed backups (named by no index object); {} such packs kept as they \
             hold live chunks (run `xfull index rebuild`); {} packs with an unreadable trailer kept",
            r.packs_orphaned, r.packs_unindexed_live, r.packs_damaged
        );
    }
    if r.trash_removed + r.dead_leases_removed + r.incomplete_removed > 0 {
        println!(
            "  {verb} {} trashed manifests, {} dead leases, {} staging files of killed writers",
            r.trash_removed, r.dead_leases_removed, r.incomplete_removed
        );
    }
    if r.removed_records_cleared > 0 {
        println!(
            "  {verb} {} records of removed newest points (a later point was made since)",
            r.removed_records_cleared
        );
    }
    if let (Some(first), Some(last)) = (&r.locked_first_until, &r.locked_last_until) {
        let t = |d: &chrono::DateTime<chrono::Utc>| {
            d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        println!(
            "  object lock: {} unreferenced nodes and packs ({}) kept until their retention \
             ends, from {} to {}: a gc after that deletes them",
            r.locked_kept,
            bytes(r.locked_bytes),
            t(first),
            t(last)
        );
    }
    if let Some(why) = &r.held {
        println!("  held back: {why}");
    }
    if !r.requests.is_empty() {
        let list: Vec<String> = r.requests.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("  requests: {}", list.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep held by the store's listing exits 1, by damage 3 (the
    /// first version of the store's case set the flag and exited 0).
    #[test]
    fn a_held_sweep_exits_by_its_cause() {
        let status = |damage, store| {
            let r = GcReport {
                held: Some("held".into()),
                held_by_damage: damage,
                held_by_store: store,
                ..GcReport::default()
            };
            held_exit(&r).err().map(|e| crate::exit_status(&e))
        };
        assert_eq!(status(true, false), Some(3));
        assert_eq!(status(false, true), Some(1));
        assert_eq!(status(false, false), None);
    }
}
