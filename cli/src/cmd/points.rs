use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{DateTime, Local, Utc};
use xfull_core::manifest::ManifestSummary;

use crate::cli::{Cli, PointsArgs, split_pair};
use crate::output::{bytes, json_time, labels_line, print_json, printable};

/// Lists points from their manifests' summaries (no segment list is
/// loaded). Listing is not an integrity check: a point whose manifest is
/// damaged is skipped with a warning (a row with `damaged` in JSON), and
/// the command succeeds; `verify` is the check.
pub async fn run(cli: &Cli, args: &PointsArgs) -> Result<()> {
    let labels = label_filter(args)?;
    let repo = crate::open::open(cli).await?;
    let vm = args.vm.as_deref().map(str::parse).transpose()?;
    let listed = repo.summaries(vm.as_ref()).await?;
    for d in &listed.damaged {
        say!(
            "xfull: warning: point {} is damaged and not listed: {} (run `xfull verify`)",
            d.point,
            printable(&d.reason)
        );
    }
    let points = select(&listed.points, args, &labels);
    if cli.json {
        let mut rows: Vec<_> = points
            .iter()
            .map(|m| {
                serde_json::json!({
                    "vm": m.vm.as_str(),
                    "id": m.id.as_str(),
                    "point": m.point_name(),
                    "time": json_time(&m.time),
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
        return print_json(&serde_json::json!({ "points": rows }));
    }
    print_table(&points, args.utc);
    Ok(())
}

fn label_filter(args: &PointsArgs) -> Result<Vec<(String, String)>> {
    args.labels
        .iter()
        .map(|l| {
            let (k, v) = split_pair("--label", l)?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The points the filters keep, in listing order (by VM, oldest first).
fn select<'a>(
    all: &'a [ManifestSummary],
    args: &PointsArgs,
    labels: &[(String, String)],
) -> Vec<&'a ManifestSummary> {
    let mut kept: Vec<&ManifestSummary> = all
        .iter()
        .filter(|m| args.host.as_ref().is_none_or(|h| &m.host == h))
        .filter(|m| labels.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
        .collect();
    if let Some(n) = args.latest {
        let mut per_vm: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &kept {
            *per_vm.entry(m.vm.as_str()).or_default() += 1;
        }
        // Drop each VM's oldest until N are left (the list is oldest first).
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        kept.retain(|m| {
            let i = seen.entry(m.vm.as_str()).or_default();
            *i += 1;
            *i + n > per_vm[m.vm.as_str()]
        });
    }
    kept
}

/// Local time with its offset (what an operator compares with the
/// clock), or UTC.
fn time_text(t: &DateTime<Utc>, utc: bool) -> String {
    if utc {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    } else {
        t.with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    }
}

fn print_table(points: &[&ManifestSummary], utc: bool) {
    let header = ["POINT", "TIME", "SIZE", "DISKS", "HOST", "LABELS"];
    let rows: Vec<[String; 6]> = points
        .iter()
        .map(|m| {
            let disks: Vec<_> = m.disks.iter().map(|d| d.name.as_str()).collect();
            [
                m.point_name(),
                time_text(&m.time, utc),
                bytes(m.size()),
                disks.join(","),
                printable(&m.host).into_owned(),
                labels_line(&m.labels),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                s += c;
            } else if i == 2 {
                s += &format!("{c:>w$}  ", w = width[i]);
            } else {
                s += &format!("{c:<w$}  ", w = width[i]);
            }
        }
        s.trim_end().to_string()
    };
    if !rows.is_empty() {
        println!("{}", line(header));
    }
    for r in &rows {
        println!("{}", line(r.each_ref().map(String::as_str)));
    }
    match rows.len() {
        0 => println!("no points"),
        1 => println!("1 point"),
        n => println!("{n} points"),
    }
}
