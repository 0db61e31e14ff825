use anyhow::Result;
use xfull_core::diff::diff_disks;
use xfull_core::point_spec::PointSpec;

use crate::cli::{Cli, DiffArgs};
use crate::output::{bytes, print_json};

pub async fn run(cli: &Cli, args: &DiffArgs) -> Result<()> {
    let (sa, sb): (PointSpec, PointSpec) = (args.a.parse()?, args.b.parse()?);
    let repo = crate::open::open(cli.repo()?, &cli.s3).await?;
    let (a, b) = (repo.resolve(&sa).await?, repo.resolve(&sb).await?);
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
    let mut out = Vec::new();
    for name in &names {
        let set = diff_disks(&repo, a.disk(name)?, b.disk(name)?).await?;
        out.push((name.clone(), set));
    }
    // With --disk, a plain extent list (usable as a `--changed` file);
    // otherwise, as JSON, one list per disk.
    if let (Some(_), [(_, set)]) = (&args.disk, &out[..]) {
        return print_json(&set.to_extents());
    }
    if cli.json {
        let map: serde_json::Map<String, serde_json::Value> = out
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    serde_json::to_value(s.to_extents()).unwrap_or_default(),
                )
            })
            .collect();
        return print_json(&map);
    }
    for (name, set) in &out {
        println!(
            "disk {name}: {} in {} extents differ",
            bytes(set.bytes()),
            set.ranges().len()
        );
        for r in set.ranges() {
            println!("  {:>14} {:>12}", r.start, r.end - r.start);
        }
    }
    Ok(())
}
