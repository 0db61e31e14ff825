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
            "unknown_chunks": p.unknown_chunks,
            "missing_packs": out.missing_packs,
            "requests": repo.backend().request_counts(),
        }));
    }
    println!("{}", thaw_text(&m.point_name(), &p, &out, tier, args.days));
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
    s += &damage(p.unknown_chunks, p.missing_packs);
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
    s += &if p.ready() {
        can_run("everything is readable", p.unknown_chunks, p.missing_packs)
    } else {
        "\n`xfull thaw POINT --tier T --days N` asks for the copies; run it again to see progress"
            .into()
    };
    s
}

/// What a restore would meet besides archived data: chunks no index
/// entry names, and packs gone (a restore reads another copy of their
/// chunks if there is one), and where to learn more.
fn damage(unknown_chunks: u64, missing_packs: u64) -> String {
    let mut s = String::new();
    if unknown_chunks > 0 {
        s += &format!(
            "\n{unknown_chunks} chunk(s) are in no index entry: the restore would report them \
             damaged"
        );
    }
    if missing_packs > 0 {
        s += &format!(
            "\n{missing_packs} pack(s) the index names are gone (a gc since, or lost): a restore \
             reads another copy or reports those chunks damaged"
        );
    }
    if unknown_chunks + missing_packs > 0 {
        s += "\nrun `xfull verify` to see what is lost";
    }
    s
}

/// The closing line once nothing needs a thaw: "the restore can run" only
/// when it would meet no damage either (it said so whatever the plan
/// found missing: review 95).
fn can_run(what: &str, unknown_chunks: u64, missing_packs: u64) -> String {
    if unknown_chunks + missing_packs == 0 {
        return format!("\n{what}: the restore can run");
    }
    let will = if unknown_chunks > 0 { "would" } else { "may" };
    format!("\n{what}, but the restore {will} report chunks damaged (above)")
}

fn thaw_text(
    point: &str,
    p: &ThawPlan,
    out: &ThawOutcome,
    tier: ThawTier,
    days: Option<u32>,
) -> String {
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
    s += &damage(p.unknown_chunks, out.missing_packs);
    if out.requested.objects + out.in_progress.objects == 0 {
        s += &can_run(
            "nothing is waiting for a thaw",
            p.unknown_chunks,
            out.missing_packs,
        );
    } else {
        s += "\nrun `xfull restore --plan` or this command again to see progress";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "The restore can run" only when it would meet no damage: the thaw
    /// said it whatever the plan found missing, and named neither count
    /// (review 95).
    #[test]
    fn thaw_text_says_what_a_restore_would_miss() {
        let out = |missing_packs| ThawOutcome {
            missing_packs,
            ..ThawOutcome::default()
        };
        let clean = thaw_text(
            "vm@1",
            &ThawPlan::default(),
            &out(0),
            ThawTier::Bulk,
            Some(1),
        );
        assert!(clean.ends_with("the restore can run"), "{clean}");
        assert!(!clean.contains("verify"), "{clean}");

        let unknown = ThawPlan {
            unknown_chunks: 3,
            ..ThawPlan::default()
        };
        let t = thaw_text("vm@1", &unknown, &out(0), ThawTier::Bulk, Some(1));
        assert!(!t.contains("the restore can run"), "{t}");
        assert!(t.contains("3 chunk(s) are in no index entry"), "{t}");
        assert!(t.contains("would report chunks damaged"), "{t}");
        assert!(t.contains("xfull verify"), "{t}");

        // Packs gone since the plan looked count like the plan's.
        let t = thaw_text("vm@1", &ThawPlan::default(), &out(2), ThawTier::Bulk, None);
        assert!(!t.contains("the restore can run"), "{t}");
        assert!(t.contains("2 pack(s) the index names are gone"), "{t}");
        assert!(t.contains("may report chunks damaged"), "{t}");
        assert!(t.contains("xfull verify"), "{t}");
    }
}
