use anyhow::Result;
use xfull_core::Error;
use xfull_core::prune::policy::Policy;
use xfull_core::prune::span::Span;
use xfull_core::prune::{self, VmPlan};

use crate::cli::{Cli, PruneArgs, split_pair};
use crate::output::{print_json, printable};

pub async fn run(cli: &Cli, args: &PruneArgs) -> Result<()> {
    let policy = policy(args)?;
    let repo = crate::open::open(cli.repo()?, &cli.s3).await?;
    let vm = args.vm.as_deref().map(str::parse).transpose()?;
    let plans = prune::plan(&repo, vm.as_ref(), &policy).await?;
    for w in plans.iter().flat_map(|p| &p.warnings) {
        eprintln!("xfull: warning: {}", printable(w));
    }
    let doomed: Vec<_> = plans
        .iter()
        .flat_map(|p| p.to_remove().map(|d| (p.vm.clone(), d.id.clone())))
        .collect();
    let mut removed = prune::Removed::default();
    let mut gc = None;
    if !args.dry_run {
        let pins = prune::read_pins(&repo).await?;
        removed = prune::remove(&repo, &pins, &doomed).await?;
        if !args.no_gc {
            gc = Some(xfull_core::gc::run(&repo, false).await?);
        }
    }
    if cli.json {
        return print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "policy": policy,
            "plan": plans,
            "removed": removed,
            "gc": gc,
        }));
    }
    print_plan(&plans);
    let kept: usize = plans.iter().map(|p| p.decisions.len()).sum::<usize>() - doomed.len();
    if args.dry_run {
        println!(
            "dry run: would keep {kept} and remove {} points",
            doomed.len()
        );
    } else {
        println!(
            "kept {kept}, removed {} points ({} moved to trash: a running backup uses them)",
            removed.removed, removed.trashed
        );
    }
    if let Some(r) = &gc {
        super::gc::print_report(r);
    }
    Ok(())
}

fn print_plan(plans: &[VmPlan]) {
    for p in plans {
        println!("vm {}:", p.vm);
        for d in &p.decisions {
            let what = if d.keep { "keep  " } else { "remove" };
            println!(
                "  {what} {}  {}  {}",
                d.id,
                d.time.format("%Y-%m-%d %H:%M:%S"),
                printable(&d.reasons.join(", "))
            );
        }
    }
}

fn policy(a: &PruneArgs) -> Result<Policy> {
    let within = a
        .keep_within
        .as_deref()
        .map(Span::parse)
        .transpose()
        .map_err(Error::InvalidArgument)?;
    let mut labels = Vec::new();
    for l in &a.keep_labels {
        let (k, v) = split_pair("--keep-label", l)?;
        labels.push((k.to_string(), v.to_string()));
    }
    Ok(Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within,
        labels,
    })
}
