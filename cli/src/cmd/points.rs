use anyhow::Result;
use futures::{StreamExt, TryStreamExt};

use crate::cli::{Cli, PointsArgs};
use crate::output::{bytes, print_json};

pub async fn run(cli: &Cli, args: &PointsArgs) -> Result<()> {
    let repo = crate::open::open(cli.repo()?, &cli.s3).await?;
    let vm = args.vm.as_deref().map(str::parse).transpose()?;
    let ids = repo.list_points(vm.as_ref()).await?;
    // A few manifests at a time, keeping the listing's order.
    let mut manifests: Vec<_> = futures::stream::iter(ids)
        .map(|(vm, id)| {
            let repo = &repo;
            async move { repo.load_manifest(&vm, &id).await }
        })
        .buffered(16)
        .try_collect()
        .await?;
    // Ids order points to the second; manifests order them exactly.
    manifests.sort_by(|a, b| (&a.vm, a.time, a.created).cmp(&(&b.vm, b.time, b.created)));
    if cli.json {
        let rows: Vec<_> = manifests
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
                    "size": m.disks.iter().map(|d| d.size).sum::<u64>(),
                })
            })
            .collect();
        return print_json(&rows);
    }
    if manifests.is_empty() {
        println!("no points");
    }
    for m in &manifests {
        let disks: Vec<_> = m.disks.iter().map(|d| d.name.as_str()).collect();
        println!(
            "{:<40} {}  {:>10}  {}",
            m.point_name(),
            m.time.format("%Y-%m-%d %H:%M:%S"),
            bytes(m.disks.iter().map(|d| d.size).sum()),
            disks.join(",")
        );
    }
    Ok(())
}
