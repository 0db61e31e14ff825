use anyhow::Result;

use crate::cli::{Cli, ShowArgs};
use crate::output::{PointView, bytes, print_json, printable, stats_line};

pub async fn run(cli: &Cli, args: &ShowArgs) -> Result<()> {
    let repo = crate::open::open(cli).await?;
    let m = crate::point_name::load(&repo, &args.point).await?;
    if cli.json {
        return print_json(&PointView::from(&m));
    }
    println!("point   {}", m.point_name());
    println!("time    {}", m.time.to_rfc3339());
    println!(
        "parent  {}",
        m.parent.as_ref().map_or("-".to_string(), |p| p.to_string())
    );
    // Free text from the repository is escaped: it may be hostile.
    println!("host    {}", printable(&m.host));
    for (k, v) in &m.labels {
        println!("label   {}={}", printable(k), printable(v));
    }
    println!("writer  {}", printable(&m.writer));
    for d in &m.disks {
        let zero = d.segments.iter().filter(|s| s.is_none()).count();
        println!(
            "disk    {}: {} in {} segments of {} ({} all-zero), source {}",
            d.name,
            bytes(d.size),
            d.segments.len(),
            bytes(d.segment_size),
            zero,
            printable(&d.source)
        );
        if let Some(p) = &d.parent {
            println!("        based on {}@{p}", m.vm);
        }
        if let Some(a) = &d.audit {
            match a.mismatch_at {
                None => println!(
                    "        audit: {} unchanged segments re-read, all matched",
                    a.segments
                ),
                Some(at) => println!(
                    "        audit: MISMATCH at offset {at}: the change source missed changes; scanned in full"
                ),
            }
        }
        println!("        {}", stats_line(&d.stats));
    }
    println!("total   {}", stats_line(&m.stats));
    Ok(())
}
