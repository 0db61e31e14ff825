use anyhow::Result;
use xfull_core::Error;
use xfull_core::prune::forget::forget;

use crate::cli::{Cli, ForgetArgs};
use crate::output::print_json;

pub async fn run(cli: &Cli, args: &ForgetArgs) -> Result<()> {
    // Removing "whatever is latest now" is too easy to get wrong.
    if let Some(p) = args.points.iter().find(|p| p.ends_with("@latest")) {
        return Err(Error::InvalidArgument(format!(
            "forget {p:?}: name the point by its id (`xfull points` lists them), not @latest"
        ))
        .into());
    }
    let repo = crate::open::open(cli).await?;
    let mut points = Vec::new();
    for p in &args.points {
        let (vm, id) = crate::point_name::resolve(&repo, p).await?;
        let Some(id) = id else { continue };
        // Removal is for good: a part of an id (`web1@2`, which a VM's
        // only point matches) is a slip too easy to make (review, stop 56).
        let asked = p.split_once('@').map_or("", |(_, i)| i);
        if asked != id.as_str() {
            return Err(Error::InvalidArgument(format!(
                "forget {p:?}: give the whole id; it matches {vm}@{id}"
            ))
            .into());
        }
        points.push((vm, id));
    }
    let out = forget(&repo, &points, args.dry_run).await?;
    if cli.json {
        return print_json(&serde_json::json!({
            "dry_run": out.dry_run,
            "points": out.points,
            "pinned": out.pinned,
            "removed": out.removed.removed,
            "trashed": out.removed.trashed,
            "locked": out.removed.locked,
            "newest_removed": out.newest_removed,
        }));
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let locked = |p: &String| out.removed.locked.iter().any(|l| &l.point == p);
    for p in out.points.iter().filter(|p| !locked(p)) {
        let pinned = if out.pinned.contains(p) {
            " (to the trash: a running backup uses it)"
        } else {
            ""
        };
        println!("{verb} point {p}{pinned}");
    }
    if !args.dry_run {
        println!("their data goes with the next `xfull gc` unless other points share it");
    }
    print_locked(&out.removed.locked);
    for vm in &out.newest_removed {
        say!(
            "xfull: warning: the newest point of VM {vm} {} removed: change information \
             (--changed, --base, --bitmap) taken since it does not apply to the point now \
             newest; the next backup of {vm} reads its disks in full (told by a record under \
             removed/)",
            if args.dry_run { "would be" } else { "was" }
        );
    }
    Ok(())
}

/// Points object lock kept, and from when they can be removed.
pub fn print_locked(locked: &[xfull_core::prune::LockedPoint]) {
    for l in locked {
        println!(
            "kept point {} : object lock retains it until {} (remove it after that)",
            l.point,
            l.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}
