use anyhow::Result;
use xfull_core::Error;
use xfull_core::point_spec::PointSpec;
use xfull_core::prune::forget::forget;

use crate::cli::{Cli, ForgetArgs};
use crate::output::print_json;

pub async fn run(cli: &Cli, args: &ForgetArgs) -> Result<()> {
    let mut points = Vec::new();
    for p in &args.points {
        let spec: PointSpec = p.parse()?;
        // Removing "whatever is latest now" is too easy to get wrong.
        let id = spec.id.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "forget {p:?}: name the point by its id (`xfull points` lists them), not @latest"
            ))
        })?;
        points.push((spec.vm, id));
    }
    let repo = crate::open::open(cli.repo()?, &cli.s3).await?;
    let out = forget(&repo, &points, args.dry_run).await?;
    if cli.json {
        return print_json(&out);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for p in &out.points {
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
    for vm in &out.newest_removed {
        eprintln!(
            "xfull: warning: the newest point of VM {vm} {} removed: change information \
             (--changed, --base) taken since it does not apply to the point now newest; \
             back up {vm} next with --full-scan",
            if args.dry_run { "would be" } else { "was" }
        );
    }
    Ok(())
}
