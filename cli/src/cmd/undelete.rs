//! `xfull undelete`: takes away what hides locked versions on a versioned
//! bucket (delete markers, versions without retention).

use anyhow::Result;
use serde_json::json;
use xfull_core::lock::undelete::{UndeleteOptions, UndeleteReport, undelete};

use crate::cli::{Cli, UndeleteArgs};
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &UndeleteArgs) -> Result<()> {
    let mut slots = Vec::new();
    for slot in &args.key_slots {
        if slot.len() != 16 || !slot.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(xfull_core::Error::InvalidArgument(format!(
                "--key-slot {:?}: a key slot id is 16 hex digits, as the report lists it",
                crate::output::printable(slot)
            ))
            .into());
        }
        slots.push(slot.to_ascii_lowercase());
    }
    let backend = crate::open::store_only(cli).await?;
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "undelete", cli, false);
    let opts = UndeleteOptions {
        dry_run: args.dry_run,
        key_slots: slots.clone(),
        config_version: args.config_version.clone(),
    };
    let r = undelete(backend.as_ref(), &opts, &progress).await?;
    drop(bar);
    for slot in slots.iter().filter(|s| !r.restored_key_slots.contains(s)) {
        say!(
            "xfull: warning: key slot {slot} was not found hidden over a locked version; \
             nothing was done for it"
        );
    }
    if cli.json {
        let mut doc = serde_json::to_value(&r)?;
        doc["location"] = json!(backend.location());
        doc["requests"] = json!(backend.request_counts());
        crate::output::print_json(&doc)?;
    } else {
        println!("{}", text(&backend.location(), &r));
    }
    left_hidden(&r)
}

/// Exit 1 when something the run should have brought back may still be
/// hidden, so a script does not read a partial recovery as done (review).
fn left_hidden(r: &UndeleteReport) -> Result<()> {
    if r.skipped_total > 0 {
        anyhow::bail!(
            "{} objects with more than {} versions each were left alone and may still be \
             hidden: remove the delete markers on them by version id, then run undelete again",
            r.skipped_total,
            xfull_core::lock::undelete::MAX_VERSIONS
        );
    }
    if r.config_locked_above > 0 {
        anyhow::bail!(
            "the repository's own config is not current: {} locked config versions are above \
             it and cannot be removed until their retention ends",
            r.config_locked_above
        );
    }
    Ok(())
}

fn text(location: &str, r: &UndeleteReport) -> String {
    let (did, brought) = if r.dry_run {
        ("would remove", "would bring back")
    } else {
        ("removed", "brought back")
    };
    let mut out = format!(
        "{location}: {} objects of the locked kinds, {} with a delete marker on top or more \
         than one version",
        r.keys, r.examined
    );
    if r.restored == 0 {
        out.push_str("; nothing hides a locked version");
    } else {
        out.push_str(&format!(
            "\n{brought} {} objects to their newest locked version ({did} {} delete markers \
             and {} versions without retention above them)",
            r.restored, r.markers_removed, r.versions_removed
        ));
        for k in &r.restored_keys {
            out.push_str(&format!("\n  {}", crate::output::printable(k)));
        }
        if r.restored > r.restored_keys.len() as u64 {
            out.push_str(&format!(
                "\n  and {} more",
                r.restored - r.restored_keys.len() as u64
            ));
        }
    }
    if !r.hidden_key_slots.is_empty() {
        out.push_str(&format!(
            "\nkey slots hidden over a locked version, left hidden (`key remove` and `key \
             passwd` hide slots on purpose): {}{}; bring one back with --key-slot ID if it is \
             yours",
            r.hidden_key_slots.join(", "),
            and_more(r.hidden_key_slots_total, r.hidden_key_slots.len())
        ));
    }
    if r.config_locked_above > 0 {
        out.push_str(&format!(
            "\n{} config versions above the repository's own are still locked and stay \
             current (xfull writes one config): check the repository's config",
            r.config_locked_above
        ));
    }
    if r.older_than_config > 0 {
        out.push_str(&format!(
            "\n{} hidden objects are older than the current config (an earlier repository at \
             this place) and stay hidden",
            r.older_than_config
        ));
    }
    if !r.skipped.is_empty() {
        out.push_str(&format!(
            "\nleft alone, with more than {} versions each: {}{}",
            xfull_core::lock::undelete::MAX_VERSIONS,
            r.skipped
                .iter()
                .map(|k| crate::output::printable(k).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
            and_more(r.skipped_total, r.skipped.len())
        ));
    }
    if r.hidden_unlocked > 0 {
        out.push_str(&format!(
            "\n{} deleted objects stay deleted: the newest of their versions with a retention \
             has ended, or ends within the hour (gc may have deleted them on purpose)",
            r.hidden_unlocked
        ));
    }
    if r.restored > 0 && !r.dry_run {
        out.push_str(
            "\nnext: `xfull index rebuild` (index objects are not locked), then `xfull verify`",
        );
    }
    out
}

/// ", and N more" when a list names `named` of `total`.
fn and_more(total: u64, named: usize) -> String {
    match total.saturating_sub(named as u64) {
        0 => String::new(),
        n => format!(" and {n} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_left_something_hidden_fails_after_its_report() {
        let mut r = UndeleteReport::default();
        assert!(left_hidden(&r).is_ok());
        r.skipped = vec!["packs/aa/aa01".into()];
        r.skipped_total = 21;
        let e = left_hidden(&r).unwrap_err().to_string();
        assert!(e.contains("21 objects"), "{e}");
        assert!(text("s3://b/r", &r).contains("packs/aa/aa01 and 20 more"));
        r.skipped_total = 0;
        r.config_locked_above = 1;
        let e = left_hidden(&r).unwrap_err().to_string();
        assert!(e.contains("not current"), "{e}");
        r.hidden_key_slots = vec!["0123456789abcdef".into()];
        r.hidden_key_slots_total = 1;
        let t = text("s3://b/r", &r);
        assert!(t.contains("0123456789abcdef; bring one back"), "{t}");
        r.hidden_key_slots_total = 3;
        let t = text("s3://b/r", &r);
        assert!(t.contains("0123456789abcdef and 2 more;"), "{t}");
    }
}
