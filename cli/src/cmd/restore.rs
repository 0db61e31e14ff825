use anyhow::Result;
use xfull_core::point_spec::PointSpec;
use xfull_core::restore::{RestoreOptions, Target, restore};

use crate::cli::{Cli, RestoreArgs};
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &RestoreArgs) -> Result<()> {
    let spec: PointSpec = args.point.parse()?;
    let target = Target::parse(&args.to)?;
    let repo = crate::open::open(cli.repo()?, &cli.s3).await?;
    let m = repo.resolve(&spec).await?;
    // Fail on an unknown disk before creating the target.
    m.disk(&args.disk)?;
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "restore", cli.json);
    let out = restore(
        &repo,
        &m,
        &args.disk,
        &target,
        RestoreOptions {
            sync: args.sync,
            image_hash: !args.no_image_hash,
        },
        progress,
    )
    .await?;
    drop(bar);
    // With the image on stdout, the report goes to stderr.
    let report = if cli.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "point": m.point_name(),
            "disk": args.disk,
            "to": args.to,
            "bytes": out.bytes,
            "blake3": out.blake3,
        }))?
    } else {
        match &out.blake3 {
            Some(h) => format!("{h}  {}", args.to),
            None => format!(
                "restored {} bytes to {} (every chunk verified)",
                out.bytes, args.to
            ),
        }
    };
    if target == Target::Stdout {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    Ok(())
}
