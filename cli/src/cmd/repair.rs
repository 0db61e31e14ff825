use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::repair::{RepairOptions, RepairReport, RepairSource, repair};
use xfull_core::source::DiskSource;

use crate::cli::{Cli, RepairArgs, split_pair};
use crate::output::{bytes, print_json, printable};
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &RepairArgs) -> Result<()> {
    let sources = sources(args)?;
    let repo = crate::open::open(cli).await?;
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "repair", cli, true);
    let opts = RepairOptions {
        read_data: args.read_data,
        dry_run: args.dry_run,
        sources,
    };
    let report = repair(&repo, &opts, progress).await?;
    drop(bar);
    if cli.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    if !report.still_damaged.is_empty() {
        Err(Error::DamageFound {
            points: report.still_damaged.len(),
        }
        .into())
    } else if report.index_problems_left > 0 {
        // Packs whose trailer cannot be read are counted among the index
        // problems; a rebuild leaves them, a repair again moves their
        // chunks (it takes 4,096 a run).
        let next = if report.packs_unreadable_left > 0 {
            "packs whose trailer cannot be read are left (see the warnings): run `xfull repair` \
             again"
        } else {
            "`xfull verify` names the problems; `xfull index rebuild` writes the index again \
             from the packs"
        };
        Err(anyhow::Error::new(Error::IndexDamaged {
            problems: report.index_problems_left,
        })
        .context(format!(
            "no point was found damaged, but the index disagrees with the packs: {next}"
        )))
    } else {
        Ok(())
    }
}

fn sources(args: &RepairArgs) -> Result<Vec<RepairSource>> {
    let Some(vm) = &args.vm else {
        return Ok(Vec::new());
    };
    let vm: xfull_core::names::VmName = vm.parse()?;
    let mut out: Vec<RepairSource> = Vec::new();
    for d in &args.disks {
        let (name, path) = split_pair("--disk", d)?;
        if path.is_empty() {
            return Err(Error::InvalidArgument(format!("--disk {d:?} has no path")).into());
        }
        let disk = name.parse()?;
        if out.iter().any(|s| s.disk == disk) {
            return Err(Error::InvalidArgument(format!("--disk {name} given twice")).into());
        }
        out.push(RepairSource {
            vm: vm.clone(),
            disk,
            source: Arc::new(DiskSource::open(Path::new(path))?),
        });
    }
    Ok(out)
}

fn print_report(r: &RepairReport) {
    println!(
        "checked {} points: {} stored object(s) damaged, {} missing",
        r.points, r.objects_damaged, r.objects_missing
    );
    for w in &r.warnings {
        say!("xfull: warning: {}", printable(w));
    }
    if r.dry_run {
        if r.packs_unreadable > 0 {
            println!(
                "{} pack(s) whose trailer cannot be read: their chunks would be stored again \
                 and the packs removed",
                r.packs_unreadable
            );
        }
        println!("dry run: nothing changed");
    } else {
        if let Some(seq) = r.sweep {
            println!(
                "removed {} damaged object(s) (sweep {seq}); {} recorded as damaged were sound",
                r.objects_removed, r.objects_sound
            );
        }
        for p in &r.manifests_removed {
            println!("removed the unreadable manifest of point {}", printable(p));
        }
        if r.packs_unreadable > 0 {
            println!(
                "{} pack(s) whose trailer cannot be read: {} chunk(s) stored again ({} did not \
                 open), {} pack(s) removed, {} made again in place",
                r.packs_unreadable,
                r.chunks_salvaged,
                r.chunks_not_salvaged,
                r.packs_salvaged,
                r.packs_healed
            );
        }
        if r.chunks_restored + r.nodes_restored > 0 {
            println!(
                "stored again {} chunk(s) and {} node(s) from the disk images",
                r.chunks_restored, r.nodes_restored
            );
        }
    }
    if r.still_damaged.is_empty() {
        if r.index_problems_left > 0 {
            // Points using chunks verify did not judge may not restore.
            println!("no point was found damaged");
        } else {
            println!("every point is whole");
        }
        if r.packs_unreadable_left > 0 {
            println!(
                "{} pack(s) whose trailer cannot be read are still there (see the warnings)",
                r.packs_unreadable_left
            );
        }
        if r.index_problems_left > 0 {
            println!(
                "{} index problem(s) left: `xfull verify` names them",
                r.index_problems_left
            );
        }
        return;
    }
    println!("{} point(s) still damaged:", r.still_damaged.len());
    for p in &r.still_damaged {
        let lost: u64 = p.disks.iter().map(|d| d.damaged_bytes).sum();
        match &p.manifest {
            Some(m) => println!("  {}: manifest {}", p.point, printable(m)),
            None => println!("  {}: {} unrecoverable", p.point, bytes(lost)),
        }
    }
    println!(
        "a backup of the same data stores missing chunks again; `xfull repair --vm VM --disk \
         D=PATH` does it from an image; `xfull restore --ignore-damage` restores the rest; \
         `xfull forget VM@ID` removes a point"
    );
}
