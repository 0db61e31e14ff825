//! `xfull index rebuild`: the chunk index derived again from the packs
//! (core/src/placement/rebuild.rs does the work).

use anyhow::Result;
use serde_json::json;

use crate::cli::{Cli, IndexCommand};
use crate::output::{print_json, printable};

pub async fn run(cli: &Cli, cmd: &IndexCommand) -> Result<()> {
    let IndexCommand::Rebuild(_) = cmd;
    let repo = crate::open::open(cli).await?;
    let progress = crate::progress();
    let r = repo.chunks().rebuild(&progress).await?;
    let new = |s: &xfull_core::repo::Stored| *s == xfull_core::repo::Stored::New;
    if cli.json {
        print_json(&json!({
            "packs": r.packs,
            "chunks": r.chunks,
            "index_objects": r.written.iter().map(|(key, s)| json!({"key": key, "new": new(s)})).collect::<Vec<_>>(),
            "index_objects_removed": r.removed,
            "index_objects_kept": r.kept.iter().map(|(key, pack)| json!({"key": key, "pack": pack})).collect::<Vec<_>>(),
            "packs_gone": r.gone,
            "damaged_packs": r.damaged.iter().map(|(key, why)| json!({"key": key, "reason": why})).collect::<Vec<_>>(),
            "archived_packs": r.archived,
        }))?;
    } else if !cli.quiet {
        println!("indexed {} chunks in {} packs", r.chunks, r.packs);
        for (key, s) in &r.written {
            if new(s) {
                println!("stored index object {key}");
            } else {
                println!("index object {key} was already stored (same packs)");
            }
        }
        if r.written.is_empty() {
            println!("no packs: nothing to index");
        }
        for key in &r.removed {
            println!("removed index object {key} (replaced by the above)");
        }
        for (key, pack) in &r.kept {
            println!(
                "kept index object {key}: it names {pack}, which is there but the listing of \
                 packs left out (run the rebuild again later)"
            );
        }
        if r.gone > 0 {
            println!(
                "{} packs deleted while listed (a gc running) passed over",
                r.gone
            );
        }
        if !r.damaged.is_empty() || !r.archived.is_empty() {
            println!(
                "index objects stored before were kept: they place the chunks of the packs left out"
            );
        }
    }
    for (key, why) in &r.damaged {
        say!(
            "xfull: damaged pack left out of the index: {key}: {}",
            printable(why)
        );
    }
    for key in &r.archived {
        say!(
            "xfull: archived pack left out of the index (its table cannot be read until thawed): {key}"
        );
    }
    match r.damaged.first() {
        None if !r.archived.is_empty() => anyhow::bail!(
            "{} pack(s) are in an archive class (GLACIER, DEEP_ARCHIVE) and were left out of \
             the index; the index objects stored before were kept; thaw those packs with \
             the store's tools (e.g. `aws s3api restore-object`) and run `xfull index \
             rebuild` again",
            r.archived.len()
        ),
        None => Ok(()),
        Some((key, _)) => Err(xfull_core::Error::Corrupt {
            key: key.clone(),
            reason: format!(
                "{} pack(s) have a damaged table and were left out of the index; their \
                 chunks are missing until stored again (`xfull repair` with source images){}",
                r.damaged.len(),
                match r.archived.len() {
                    0 => String::new(),
                    n => format!(
                        "; {n} archived pack(s) were left out too: thaw them and run it again"
                    ),
                }
            ),
        }
        .into()),
    }
}
