use anyhow::Result;

use xfull_core::stats::LeaseStates;

use crate::cli::Cli;
use crate::output::{bytes, print_json, printable};

/// Not an integrity check: damaged manifests are reported (stderr, and
/// `damaged` in JSON) and left out of the counts; the command succeeds.
pub async fn run(cli: &Cli) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let s = xfull_core::stats::collect(&repo, chrono::Utc::now()).await?;
    for d in &s.damaged {
        say!(
            "xfull: warning: point {} is damaged and not counted: {} (run `xfull verify`)",
            d.point,
            printable(&d.reason)
        );
    }
    if cli.json {
        return print_json(&s);
    }
    for (vm, v) in &s.vms {
        println!(
            "vm {vm}: {} points, {} logical",
            v.points,
            bytes(v.logical_bytes)
        );
    }
    println!(
        "{} points, {} logical; stored {} ({} chunks in {} packs: {}, {} index objects: {}, \
         {} nodes: {}, manifests {})",
        s.points,
        bytes(s.logical_bytes),
        bytes(s.stored_bytes),
        s.chunks,
        s.packs,
        bytes(s.pack_bytes),
        s.index_objects,
        bytes(s.index_bytes),
        s.nodes,
        bytes(s.node_bytes),
        bytes(s.manifest_bytes)
    );
    match s.dedup_ratio {
        // Chunks are stored compressed and their plain size is not
        // recorded: this ratio is deduplication and compression together.
        Some(r) => println!(
            "logical / stored {r:.2} (deduplication and compression together; `xfull show` \
             gives each backup's reused and changed data apart)"
        ),
        None => println!("dedup ratio: nothing stored"),
    }
    if let Some(line) = leases_line(&s.lease_states) {
        println!("{line}");
    }
    if s.trash_points > 0 {
        println!("{} trashed manifests awaiting gc", s.trash_points);
    }
    Ok(())
}

/// The leases by state, the states present only; `None` if there are none.
fn leases_line(l: &LeaseStates) -> Option<String> {
    let parts: Vec<String> = [
        (l.ended, "of finished backups (gc removes them)"),
        (
            l.open,
            "open (running backups, or killed within the lease TTL)",
        ),
        (l.stale, "of killed backups (the next gc removes them)"),
        (l.unreadable, "unreadable (damaged, or not xfull's)"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    (!parts.is_empty()).then(|| format!("leases: {}", parts.join(", ")))
}
