//! `xfull restore --plan` and `xfull thaw`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;
use xfull_core::archive::{ThawTier, estimate};
use xfull_core::thaw::{Count, ThawOutcome, ThawPlan, plan as make_plan, thaw};

use crate::cli::{Cli, ThawArgs};
use crate::output::bytes;
use crate::progress_ui::Bar;

/// `restore --plan`: what a restore of `disks` of `point` needs from an
/// archive class, and what thawing it costs.
pub async fn plan(cli: &Cli, point: &str, disks: &[String]) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let m = crate::point_name::load(&repo, point).await?;
    for d in disks {
        m.disk(d)?;
    }
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "plan", cli, false);
    let p = make_plan(&repo, &m, disks, &progress).await?;
    drop(bar);
    if cli.json {
        return crate::output::print_json(&json!({
            "point": m.point_name(),
            "disks": disks,
            "packs": p.packs,
            "bytes": p.bytes,
            "unknown_chunks": p.unknown_chunks,
            "missing_packs": p.missing_packs,
            "ready": p.ready(),
            "to_thaw": p.to_thaw(),
            "thawing": p.thawing(),
            "thawed": p.thawed(),
            "estimates": estimates(&p),
        }));
    }
    println!("{}", text(&m.point_name(), &p));
    Ok(())
}

/// `thaw`: asks for readable copies of what `restore` of the point needs.
pub async fn run(cli: &Cli, args: &ThawArgs) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let m = crate::point_name::load(&repo, &args.point).await?;
    let disks: Vec<String> = if args.disk.is_empty() {
        m.disks.iter().map(|d| d.name.to_string()).collect()
    } else {
        args.disk.clone()
    };
    for d in &disks {
        m.disk(d)?;
    }
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "thaw", cli, false);
    let p = make_plan(&repo, &m, &disks, &progress).await?;
    let tier = ThawTier::from(args.tier);
    let out = thaw(&repo, &p, args.days, tier, &progress).await?;
    drop(bar);
    if cli.json {
        return crate::output::print_json(&json!({
            "point": m.point_name(),
            "disks": disks,
            "tier": tier.name(),
            "days": args.days,
            "requested": out.requested,
            "in_progress": out.in_progress,
            "thawed": out.thawed,
            "requests": repo.backend().request_counts(),
        }));
    }
    println!("{}", thaw_text(&m.point_name(), &out, tier, args.days));
    Ok(())
}

/// Cost and time per class still to thaw and tier.
fn estimates(p: &ThawPlan) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for (class, c) in p.to_thaw() {
        for tier in ThawTier::ALL {
            if let Some(e) = estimate(&class, tier, c.objects, c.bytes) {
                v.push(json!({"class": class, "tier": tier.name(), "dollars": e.dollars, "time": e.hours}));
            }
        }
    }
    v
}

fn text(point: &str, p: &ThawPlan) -> String {
    let mut s = format!(
        "{point}: a restore reads {} pack(s), {}",
        p.packs,
        bytes(p.bytes)
    );
    if p.unknown_chunks > 0 {
        s += &format!(
            "\n{} chunk(s) are in no index entry: the restore would report them damaged",
            p.unknown_chunks
        );
    }
    if p.missing_packs > 0 {
        s += &format!(
            "\n{} pack(s) the index names are gone (a gc since, or lost): a restore reads \
             another copy or reports those chunks damaged",
            p.missing_packs
        );
    }
    if p.archive.is_empty() {
        s += "\nnone is in an archive storage class: nothing to thaw";
        return s;
    }
    let line = |what: &str, m: BTreeMap<String, Count>| {
        m.into_iter()
            .map(|(class, c)| {
                format!(
                    "\n{what}: {} object(s), {} in {class}",
                    c.objects,
                    bytes(c.bytes)
                )
            })
            .collect::<String>()
    };
    s += &line("to thaw", p.to_thaw());
    s += &line("thawing", p.thawing());
    s += &line("thawed (readable)", p.thawed());
    for (class, c) in p.to_thaw() {
        s += &format!("\nthawing the {class} objects at AWS list prices (us-east-1):");
        for tier in ThawTier::ALL {
            if let Some(e) = estimate(&class, tier, c.objects, c.bytes) {
                s += &format!("\n  {:<9} ${:.2}, {}", tier.name(), e.dollars, e.hours);
            }
        }
    }
    s += if p.ready() {
        "\neverything is readable: the restore can run"
    } else {
        "\n`xfull thaw POINT --tier T --days N` asks for the copies; run it again to see progress"
    };
    s
}

fn thaw_text(point: &str, out: &ThawOutcome, tier: ThawTier, days: Option<u32>) -> String {
    let kept = match days {
        Some(d) => format!(", Glacier copies kept {d} day(s)"),
        None => String::new(),
    };
    let mut s = format!(
        "{point}: asked for {} object(s), {} ({} tier{kept})",
        out.requested.objects,
        bytes(out.requested.bytes),
        tier.name()
    );
    if out.in_progress.objects > 0 {
        s += &format!(
            "\nalready thawing: {} object(s), {}",
            out.in_progress.objects,
            bytes(out.in_progress.bytes)
        );
    }
    if out.thawed.objects > 0 {
        s += &format!(
            "\nalready readable: {} object(s), {}",
            out.thawed.objects,
            bytes(out.thawed.bytes)
        );
    }
    if out.requested.objects + out.in_progress.objects == 0 {
        s += "\nnothing is waiting for a thaw: the restore can run";
    } else {
        s += "\nrun `xfull restore --plan` or this command again to see progress";
    }
    s
}
