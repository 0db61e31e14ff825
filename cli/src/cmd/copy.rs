use anyhow::Result;
use xfull_core::copy::{CopyOutcome, CopyRequest, PointStatus, copy};
use xfull_core::id::PointId;
use xfull_core::names::VmName;
use xfull_core::repo::Repository;

use crate::cli::{Cli, CopyArgs};
use crate::output::{bytes, print_json, printable};
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &CopyArgs) -> Result<()> {
    let source = crate::open::open_of_two(cli).await?;
    let target = match crate::open::open_other(cli, &args.to, &args.to_secret.sources()).await {
        Ok(t) => t,
        Err(e)
            if matches!(
                e.downcast_ref(),
                Some(xfull_core::Error::NotARepository { .. })
            ) =>
        {
            let hint = format!(
                "make the copy's target first, like the source: xfull -r {} init --like {}",
                printable(&args.to),
                printable(&source.location())
            );
            return Err(e.context(hint));
        }
        Err(e) => return Err(e),
    };
    // Refused before anything is listed or written.
    xfull_core::copy::check_like(&source, &target)?;
    let points = points(&source, args).await?;
    let req = CopyRequest {
        points,
        host: xfull_core::host::name(),
    };
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "copy", cli, true);
    let result = copy(&source, &target, req, progress.clone()).await;
    drop(bar);
    let out = result?;
    let requests = serde_json::json!({
        "source": source.backend().request_counts(),
        "target": target.backend().request_counts(),
    });
    if cli.json {
        print_json(&serde_json::json!({
            "source": source.location(),
            "target": target.location(),
            "points": out.points,
            "points_copied": out.count(PointStatus::Copied),
            "points_present": out.count(PointStatus::Present),
            "points_damaged": out.count(PointStatus::Damaged),
            "totals": out.totals,
            "requests": requests,
            "warnings": progress.warnings(),
        }))?;
        return damaged(&out);
    }
    for p in &out.points {
        let c = &p.counts;
        if p.status == PointStatus::Present {
            println!("{}: already in the target", printable(&p.point));
        } else if let Some(why) = &p.damage {
            println!(
                "{}: DAMAGED in the source, not copied: {}",
                printable(&p.point),
                printable(why)
            );
        } else if p.status == PointStatus::Copied && !cli.quiet {
            println!(
                "{}: copied {} chunks ({} read, {} stored), {} nodes; {} chunks and {} nodes \
                 were there",
                printable(&p.point),
                c.chunks_copied,
                bytes(c.bytes_read),
                bytes(c.bytes_stored),
                c.nodes_copied,
                c.chunks_present,
                c.nodes_present
            );
        }
    }
    println!(
        "copied {} point(s) to {}, {} already there; {} read, {} stored",
        out.count(PointStatus::Copied),
        printable(&target.location()),
        out.count(PointStatus::Present),
        bytes(out.totals.bytes_read),
        bytes(out.totals.bytes_stored)
    );
    damaged(&out)
}

/// Exit 3 when points were left out as damaged in the source.
fn damaged(out: &CopyOutcome) -> Result<()> {
    let mut left_out = out
        .points
        .iter()
        .filter(|p| p.status == PointStatus::Damaged);
    let Some(first) = left_out.next() else {
        return Ok(());
    };
    Err(xfull_core::Error::SourcePointsDamaged {
        count: 1 + left_out.count(),
        first: first.point.clone(),
        reason: first.damage.clone().unwrap_or_default(),
    }
    .into())
}

/// The points named (a unique part of an id will do), else every point
/// (of `--vm`), oldest first per VM: each copy then builds on the one
/// before it in the target.
async fn points(source: &Repository, args: &CopyArgs) -> Result<Vec<(VmName, PointId)>> {
    if args.points.is_empty() {
        let vm: Option<VmName> = args.vm.as_deref().map(str::parse).transpose()?;
        let mut out = Vec::new();
        let listed = source.list_points(vm.as_ref()).await?;
        let mut vms: Vec<VmName> = listed.iter().map(|(vm, _)| vm.clone()).collect();
        vms.dedup();
        for vm in vms {
            let of_vm: Vec<PointId> = listed
                .iter()
                .filter(|(v, _)| *v == vm)
                .map(|(_, id)| id.clone())
                .collect();
            let ordered = source.order_points(&vm, of_vm.clone()).await?;
            // A damaged manifest sharing its second with another point
            // has no time to be ordered by and is left out of the order:
            // it goes last, so that copying it fails as damage as a lone
            // one does, instead of being skipped without a word.
            let known: std::collections::HashSet<&PointId> = ordered.iter().collect();
            let unordered: Vec<&PointId> = of_vm.iter().filter(|id| !known.contains(id)).collect();
            out.extend(
                ordered
                    .iter()
                    .chain(unordered)
                    .map(|id| (vm.clone(), id.clone())),
            );
        }
        return Ok(out);
    }
    let mut out: Vec<(VmName, PointId)> = Vec::new();
    for name in &args.points {
        let (vm, id) = crate::point_name::resolve(source, name).await?;
        let id = match id {
            Some(id) => id,
            None => source
                .latest(&vm)
                .await?
                .ok_or_else(|| xfull_core::Error::PointNotFound {
                    point: format!("{vm}@latest (the VM has no points)"),
                })?,
        };
        if !out.iter().any(|(v, i)| *v == vm && *i == id) {
            out.push((vm, id));
        }
    }
    Ok(out)
}
