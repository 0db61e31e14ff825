use anyhow::Result;
use xfull_core::Error;
use xfull_core::prune::policy::Policy;
use xfull_core::prune::span::Span;
use xfull_core::prune::{self, VmPlan};

use crate::cli::{Cli, PruneArgs, split_pair};
use crate::output::{json_time, print_json, printable};

pub async fn run(cli: &Cli, args: &PruneArgs) -> Result<()> {
    let policy = policy(args)?;
    let repo = crate::open::open(cli).await?;
    let vm = args.vm.as_deref().map(str::parse).transpose()?;
    let plans = prune::plan(&repo, vm.as_ref(), &policy).await?;
    for w in plans.iter().flat_map(|p| &p.warnings) {
        say!("xfull: warning: {}", printable(w));
    }
    let doomed: Vec<_> = plans
        .iter()
        .flat_map(|p| p.to_remove().map(|d| (p.vm.clone(), d.id.clone())))
        .collect();
    // The plan first, so that a removal or gc that fails part-way leaves
    // the operator knowing what was meant (review, stop 56).
    if !cli.json {
        print_plan(&plans);
    }
    let mut removed = prune::Removed::default();
    let mut gc = None;
    if !args.dry_run {
        let pins = prune::read_pins(&repo).await?;
        removed = prune::remove(&repo, &pins, &doomed).await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "prune stopped while removing the {} points its plan removes: some may be \
                 gone, the others are still there (`xfull points` lists them; prune again \
                 finishes the plan)",
                doomed.len()
            ))
        })?;
        if !args.no_gc {
            let packs = super::gc::pack_options(cli, &repo)?;
            let progress = crate::progress();
            let bar = crate::progress_ui::Bar::start(progress.clone(), "gc", cli, false);
            let swept = xfull_core::gc::run_with(&repo, false, packs, &progress).await;
            drop(bar);
            gc = Some(swept.map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "prune removed {} points ({} kept by object lock), then its gc failed; \
                     their data goes with the next `xfull gc`",
                    removed.removed,
                    removed.locked.len()
                ))
            })?);
        }
    }
    let kept = plans.iter().map(|p| p.decisions.len()).sum::<usize>() - doomed.len();
    crate::metrics::record("xfull_prune_points", &[("kind", "kept")], kept as f64);
    crate::metrics::record(
        "xfull_prune_points",
        &[("kind", "removed")],
        removed.removed as f64,
    );
    if let Some(r) = &gc {
        super::gc::record_metrics(r);
    }
    // Its sweep held back (by damage, or the store's listing) exits
    // after the report as gc's does.
    let held = || gc.as_ref().map_or(Ok(()), super::gc::held_exit);
    if cli.json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "policy": policy_json(&policy),
            "plan": plans.iter().map(plan_json).collect::<Vec<_>>(),
            "removed": removed.removed,
            "trashed": removed.trashed,
            "locked": removed.locked,
            "gc": gc,
        }))?;
        return held();
    }
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
        super::forget::print_locked(&removed.locked);
    }
    if let Some(r) = &gc {
        super::gc::print_report(r);
    }
    held()
}

fn print_plan(plans: &[VmPlan]) {
    for p in plans {
        println!("vm {}:", p.vm);
        for d in &p.decisions {
            let what = if d.keep { "keep  " } else { "remove" };
            let damaged = d.damaged.as_ref().map(|w| format!(" (damaged: {w})"));
            println!(
                "  {what} {}  {}  {}{}",
                d.id,
                d.time.format("%Y-%m-%d %H:%M:%S"),
                printable(&d.reasons.join(", ")),
                printable(damaged.as_deref().unwrap_or_default())
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
        forget_disks: a.forget_disks,
    })
}

/// The policy as JSON: the span as it is written (`7d`), labels as
/// `KEY=VALUE` strings.
fn policy_json(p: &Policy) -> serde_json::Value {
    serde_json::json!({
        "keep_last": p.last,
        "keep_hourly": p.hourly,
        "keep_daily": p.daily,
        "keep_weekly": p.weekly,
        "keep_monthly": p.monthly,
        "keep_yearly": p.yearly,
        "keep_within": p.within.map(|s| s.to_string()),
        "keep_labels": p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "forget_disks": p.forget_disks,
    })
}

fn plan_json(p: &VmPlan) -> serde_json::Value {
    let decisions: Vec<_> = p
        .decisions
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id.as_str(),
                "point": format!("{}@{}", p.vm, d.id),
                "time": json_time(&d.time),
                "keep": d.keep,
                "reasons": d.reasons,
                "damaged": d.damaged,
            })
        })
        .collect();
    serde_json::json!({
        "vm": p.vm.as_str(),
        "decisions": decisions,
        "newest_removed": p.newest_removed,
        "warnings": p.warnings,
    })
}
