use anyhow::Result;
use serde::Serialize;
use xfull_core::Error;
use xfull_core::diff::{diff_disks, removed_or};
use xfull_core::manifest::Manifest;

use crate::cli::{Cli, DiffArgs};
use crate::output::{bytes, print_json};

pub async fn run(cli: &Cli, args: &DiffArgs) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let a = crate::point_name::load(&repo, &args.a).await?;
    let b = crate::point_name::load(&repo, &args.b).await?;
    // Points of two VMs share no history: their "difference" is a mistake
    // in the command line far more often than a question.
    if a.vm != b.vm {
        return Err(Error::InvalidArgument(format!(
            "{} and {} are points of two VMs: diff compares two points of one VM",
            a.point_name(),
            b.point_name()
        ))
        .into());
    }
    let names: Vec<String> = match &args.disk {
        Some(d) => {
            a.disk(d)?;
            b.disk(d)?;
            vec![d.clone()]
        }
        None => a
            .disks
            .iter()
            .filter(|d| b.disk(d.name.as_str()).is_ok())
            .map(|d| d.name.to_string())
            .collect(),
    };
    // Disks of one point only are named with their sizes, not compared:
    // they were left out without a word.
    let (only_a, only_b) = match &args.disk {
        Some(_) => (Vec::new(), Vec::new()),
        None => (only_in(&a, &b), only_in(&b, &a)),
    };
    let mut out = Vec::new();
    for name in &names {
        let (da, db) = (a.disk(name)?, b.disk(name)?);
        let set = match diff_disks(&repo, da, db).await {
            Ok(set) => set,
            Err(e) => return Err(removed_or(&repo, [&a, &b], e).await.into()),
        };
        out.push((name.clone(), (da.size, db.size), set));
    }
    if let (true, [(_, _, set)]) = (args.extents, &out[..]) {
        // The native extent list, as `snapshot-diff` prints it.
        println!("{}", serde_json::to_string_pretty(&set.to_extents())?);
        return Ok(());
    }
    if cli.json {
        let disks: serde_json::Map<String, serde_json::Value> = out
            .iter()
            .map(|(n, _, s)| {
                (
                    n.clone(),
                    serde_json::to_value(s.to_extents()).unwrap_or_default(),
                )
            })
            .collect();
        let resized: serde_json::Map<String, serde_json::Value> = out
            .iter()
            .filter(|(_, (sa, sb), _)| sa != sb)
            .map(|(n, (sa, sb), _)| (n.clone(), serde_json::json!({"a": sa, "b": sb})))
            .collect();
        return print_json(&serde_json::json!({
            "a": a.point_name(),
            "b": b.point_name(),
            "disks": disks,
            "resized": resized,
            "only_in_a": only_a,
            "only_in_b": only_b,
        }));
    }
    for (name, (sa, sb), set) in &out {
        println!(
            "disk {name}: {} in {} extents differ",
            bytes(set.bytes()),
            set.ranges().len()
        );
        // The extents are B's: a shrunk disk's removed tail is not among
        // them (`diff_disks`), so its size change is said here.
        if sb > sa {
            println!("  grew from {sa} to {sb} bytes (the new tail is among the extents)");
        } else if sb < sa {
            println!(
                "  shrank from {sa} to {sb} bytes (the removed tail is not among the extents)"
            );
        }
        if !set.ranges().is_empty() {
            println!("  {:>14} {:>12}", "OFFSET", "LENGTH");
        }
        for r in set.ranges() {
            println!("  {:>14} {:>12}", r.start, r.end - r.start);
        }
    }
    for (side, only) in [("A", &only_a), ("B", &only_b)] {
        for d in only {
            println!("disk {}: only in {side} ({} bytes)", d.name, d.size);
        }
    }
    Ok(())
}

/// A disk of one point only.
#[derive(Serialize)]
struct OnlyIn {
    name: String,
    size: u64,
}

/// The disks of `x` that `y` has not.
fn only_in(x: &Manifest, y: &Manifest) -> Vec<OnlyIn> {
    x.disks
        .iter()
        .filter(|d| y.disks.iter().all(|o| o.name != d.name))
        .map(|d| OnlyIn {
            name: d.name.to_string(),
            size: d.size,
        })
        .collect()
}
