use anyhow::Result;
use xfull_core::verify::{Subset, VerifyOptions, VerifyReport, verify};

use crate::cli::{Cli, VerifyArgs};
use crate::output::{bytes, print_json, printable};
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &VerifyArgs) -> Result<()> {
    let subset = args.subset.as_deref().map(Subset::parse).transpose()?;
    let repo = crate::open::open(cli).await?;
    let mut points = Vec::new();
    for name in &args.points {
        let m = crate::point_name::load(&repo, name).await?;
        points.push((m.vm, m.id));
    }
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "verify", cli, args.read_data);
    let opts = VerifyOptions {
        read_data: args.read_data,
        subset,
        record_damage: true,
        ..VerifyOptions::default()
    };
    let result = verify(&repo, &points, &opts, progress).await;
    drop(bar);
    let requests = repo.backend().request_counts();
    crate::metrics::record_requests("verify", requests.iter().map(|(k, v)| (*k, *v)));
    let report = result?;
    record_metrics(&report);
    if cli.json {
        print_json(&serde_json::json!({
            "clean": report.is_clean(),
            "read_data": args.read_data,
            "subset": subset.map(subset_text),
            "report": report,
        }))?;
    } else {
        print_report(&report, args.read_data);
    }
    if report.is_clean() {
        Ok(())
    } else if report.damaged.is_empty() {
        Err(xfull_core::Error::IndexDamaged {
            problems: report.index_problems_found,
        }
        .into())
    } else {
        Err(xfull_core::Error::DamageFound {
            points: report.damaged.len(),
        }
        .into())
    }
}

/// `--subset` as a plain string: `10%` or `3/7`.
fn subset_text(s: Subset) -> String {
    match s {
        Subset::Percent(p) => format!("{p}%"),
        Subset::Part { n, m } => format!("{n}/{m}"),
    }
}

fn record_metrics(r: &VerifyReport) {
    use crate::metrics::record;
    record("xfull_verify_points", &[], r.points as f64);
    record("xfull_verify_damaged_points", &[], r.damaged.len() as f64);
    for (kind, v) in [
        ("damaged", r.objects_damaged),
        ("missing", r.objects_missing),
    ] {
        record("xfull_verify_damaged_objects", &[("kind", kind)], v as f64);
    }
}

fn print_report(r: &VerifyReport, read_data: bool) {
    println!(
        "checked {} points, {} nodes, {} chunks referenced{}",
        r.points,
        r.nodes,
        r.chunks_referenced,
        if read_data {
            format!("; read {} chunks ({})", r.chunks_read, bytes(r.bytes_read))
        } else {
            " (structure only; --read-data also reads the chunks)".into()
        }
    );
    for w in &r.warnings {
        say!("xfull: warning: {}", printable(w));
    }
    for p in &r.damaged {
        println!("DAMAGED point {}", p.point);
        if let Some(m) = &p.manifest {
            println!("  manifest: {}", printable(m));
        }
        for d in &p.disks {
            println!(
                "  disk {}: {} damaged in {} range(s)",
                d.disk,
                bytes(d.damaged_bytes),
                d.ranges.len()
            );
            for (s, e) in d.ranges.iter().take(20) {
                println!("    bytes {s}..{e}");
            }
            if d.ranges.len() > 20 {
                println!(
                    "    ... ({} more ranges; --json lists all)",
                    d.ranges.len() - 20
                );
            }
            for why in &d.problems {
                println!("    {}", printable(why));
            }
        }
    }
    for p in &r.index_problems {
        let pack = p
            .pack
            .as_deref()
            .map(|k| format!(", pack {k}"))
            .unwrap_or_default();
        let chunk = p
            .chunk
            .as_deref()
            .map(|k| format!(", chunk {k}"))
            .unwrap_or_default();
        println!(
            "DAMAGED index object {}{}{}: {}",
            printable(&p.index),
            printable(&pack),
            printable(&chunk),
            printable(&p.problem)
        );
    }
    if r.index_problems_found > r.index_problems.len() as u64 {
        println!(
            "  ... ({} more index problems)",
            r.index_problems_found - r.index_problems.len() as u64
        );
    }
    if r.index_problems_found > 0 {
        println!(
            "the index disagrees with the packs in {} place(s): `xfull index rebuild` writes an \
             index from the packs' trailers",
            r.index_problems_found
        );
    }
    let unused = r.objects_damaged + r.objects_missing;
    if r.is_clean() && unused > 0 {
        // Only objects of points removed while verify ran (see its
        // warning), still stored and damaged: recorded, and garbage.
        println!(
            "no point is damaged; {unused} damaged object(s) that no point uses any more were \
             recorded (gc deletes them)"
        );
    } else if r.is_clean() {
        println!("no damage found");
    } else if !r.damaged.is_empty() {
        println!(
            "{} stored object(s) damaged, {} missing; `xfull repair` removes the damaged ones \
             and stores again what it can (from --disk sources, or later backups)",
            r.objects_damaged, r.objects_missing
        );
    }
}
