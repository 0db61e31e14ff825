use anyhow::Result;

use crate::cli::{Cli, PointsArgs};
use crate::output::{bytes, labels_line, print_json, printable};

/// Lists points from their manifests' summaries (no segment list is
/// loaded). Listing is not an integrity check: a point whose manifest is
/// damaged is skipped with a warning (a row with `damaged` in JSON), and
/// the command succeeds; `verify` is the check.
pub async fn run(cli: &Cli, args: &PointsArgs) -> Result<()> {
    let repo = crate::open::open(cli.repo()?, &cli.s3).await?;
    let vm = args.vm.as_deref().map(str::parse).transpose()?;
    let listed = repo.summaries(vm.as_ref()).await?;
    for d in &listed.damaged {
        eprintln!(
            "xfull: warning: point {} is damaged and not listed: {} (run `xfull verify`)",
            d.point,
            printable(&d.reason)
        );
    }
    if cli.json {
        let mut rows: Vec<_> = listed
            .points
            .iter()
            .map(|m| {
                serde_json::json!({
                    "vm": m.vm.as_str(),
                    "id": m.id.as_str(),
                    "point": m.point_name(),
                    "time": m.time.to_rfc3339(),
                    "host": m.host,
                    "labels": m.labels,
                    "disks": m.disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
                    "size": m.size(),
                })
            })
            .collect();
        // Damaged points keep their place in the one array scripts read,
        // marked with why instead of the manifest's fields.
        rows.extend(listed.damaged.iter().map(|d| {
            let (vm, id) = d.point.split_once('@').unwrap_or((&d.point, ""));
            serde_json::json!({"vm": vm, "id": id, "point": d.point, "damaged": d.reason})
        }));
        return print_json(&rows);
    }
    if listed.points.is_empty() {
        println!("no points");
    }
    for m in &listed.points {
        let disks: Vec<_> = m.disks.iter().map(|d| d.name.as_str()).collect();
        println!(
            "{:<40} {}  {:>10}  {}  host {}{}",
            m.point_name(),
            m.time.format("%Y-%m-%d %H:%M:%S"),
            bytes(m.size()),
            disks.join(","),
            printable(&m.host),
            if m.labels.is_empty() {
                String::new()
            } else {
                format!("  {}", labels_line(&m.labels))
            }
        );
    }
    Ok(())
}
