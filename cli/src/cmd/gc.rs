use anyhow::Result;
use xfull_core::gc::{self, GcReport};

use crate::cli::{Cli, GcArgs};
use crate::output::{bytes, print_json};

pub async fn run(cli: &Cli, args: &GcArgs) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let report = gc::run(&repo, args.dry_run).await?;
    record_metrics(&report);
    if cli.json {
        print_json(&report)
    } else {
        print_report(&report);
        Ok(())
    }
}

pub fn record_metrics(r: &GcReport) {
    use crate::metrics::record;
    for (kind, v) in [
        ("chunks_deleted", r.chunks_deleted),
        ("nodes_deleted", r.nodes_deleted),
        ("manifests_removed", r.trash_removed),
        ("dead_leases_removed", r.dead_leases_removed),
    ] {
        record("xfull_gc_objects", &[("kind", kind)], v as f64);
    }
    record("xfull_gc_bytes_freed", &[], r.bytes_freed as f64);
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
    println!(
        "  marked {} nodes, {} chunks ({} of mark state)",
        r.nodes_marked,
        r.chunks_marked,
        bytes(r.mark_state_bytes)
    );
    println!(
        "  {verb} {} of {} nodes and {} of {} chunks: {} freed; {} unreferenced but recent, kept",
        r.nodes_deleted,
        r.nodes_listed,
        r.chunks_deleted,
        r.chunks_listed,
        bytes(r.bytes_freed),
        r.young_kept
    );
    if r.trash_removed + r.dead_leases_removed + r.incomplete_removed > 0 {
        println!(
            "  {verb} {} trashed manifests, {} dead leases, {} staging files of killed writers",
            r.trash_removed, r.dead_leases_removed, r.incomplete_removed
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
