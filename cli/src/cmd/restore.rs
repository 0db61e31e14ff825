use anyhow::Result;
use xfull_core::restore::{Allow, RestoreOptions, RestoreOutcome, Target, restore};

use crate::cli::{Cli, RestoreArgs};
use crate::output::bytes;
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &RestoreArgs) -> Result<()> {
    if args.plan {
        return crate::cmd::thaw::plan(cli, &args.point, std::slice::from_ref(&args.disk)).await;
    }
    // clap requires --to without --plan.
    let to = args.to.as_deref().unwrap_or_default();
    // The target first: a closed stdout or a refused path fails before
    // anything else is done.
    let allow = Allow {
        overwrite: args.overwrite,
        force: args.force,
    };
    let target = Target::parse_allowing(to, allow)?;
    let repo = crate::open::open(cli).await?;
    let m = crate::point_name::load(&repo, &args.point).await?;
    // Fail on an unknown disk before creating the target.
    m.disk(&args.disk)?;
    let progress = crate::progress();
    if let Some(max) = args.wait {
        let bar = Bar::start(progress.clone(), "waiting for the thaw", cli, true);
        let disks = [args.disk.clone()];
        let secs = std::time::Duration::from_secs;
        xfull_core::thaw::wait_ready(
            &repo,
            &m,
            &disks,
            secs(args.wait_poll.max(1)),
            secs(max),
            &progress,
        )
        .await?;
        drop(bar);
    }
    let bar = Bar::start(progress.clone(), "restore", cli, true);
    let out = restore(
        &repo,
        &m,
        &args.disk,
        &target,
        RestoreOptions {
            sync: args.sync,
            image_hash: !args.no_image_hash,
            ignore_damage: args.ignore_damage,
        },
        progress,
    )
    .await?;
    drop(bar);
    // With the image on stdout, the report goes to stderr.
    let report = if cli.json {
        crate::output::json_text(&serde_json::json!({
            "point": m.point_name(),
            "disk": args.disk,
            "to": to,
            "bytes": out.bytes,
            "blake3": out.blake3,
            "damaged": out.damaged,
            "abandoned_removed": out.abandoned_removed.iter().map(|l| serde_json::json!({
                "path": l.path.display().to_string(),
                "bytes": l.bytes,
            })).collect::<Vec<_>>(),
        }))?
    } else {
        text_report(to, &out)
    };
    if target == Target::Stdout {
        say!("{report}");
    } else {
        println!("{report}");
    }
    if out.damaged.is_empty() {
        return Ok(());
    }
    Err(xfull_core::Error::DamageIgnored {
        point: m.point_name(),
        disk: args.disk.clone(),
        ranges: out.damaged.len(),
        bytes: out.damaged.iter().map(|r| r.length).sum(),
    }
    .into())
}

fn text_report(to: &str, out: &RestoreOutcome) -> String {
    let mut s = match &out.blake3 {
        Some(h) => format!("{h}  {to}"),
        None => format!(
            "restored {} bytes to {} (every chunk verified)",
            out.bytes, to
        ),
    };
    if !out.damaged.is_empty() {
        let total: u64 = out.damaged.iter().map(|r| r.length).sum();
        s += &format!(
            "\nDAMAGED: {} range(s), {}, written as zeros:",
            out.damaged.len(),
            bytes(total)
        );
        for r in &out.damaged {
            s += &format!(
                "\n  offset {} length {} ({}): {}",
                r.offset, r.length, r.object, r.reason
            );
        }
    }
    s
}
