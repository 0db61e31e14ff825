//! `xfull key list | add | remove | passwd`: the key slots of an encrypted
//! repository (core/src/crypto/manage.rs does the work).

use anyhow::Result;
use serde_json::json;
use xfull_core::Error;
use xfull_core::crypto::slot::Kdf;
use xfull_core::crypto::{self, Access, MasterKeys};
use xfull_core::repo::Repository;

use crate::cli::{Cli, KeyCommand};
use crate::output::print_json;

pub async fn run(cli: &Cli, cmd: &KeyCommand) -> Result<()> {
    // A bad id is a bad argument: said before the repository is opened
    // (a password asked for), not after as "no such slot", exit 1.
    if let KeyCommand::Remove(a) = cmd
        && crypto::slot::parse_slot_key(&crypto::slot::slot_key(&a.slot)).is_none()
    {
        return Err(Error::InvalidArgument(format!(
            "{:?} is not a key slot id (16 hex digits, lower case, as `xfull key list` shows)",
            a.slot
        ))
        .into());
    }
    let repo = crate::open::open(cli).await?;
    let keys = master(&repo)?;
    let b = repo.backend().as_ref();
    match cmd {
        KeyCommand::List(_) => list(cli, &repo, keys).await,
        KeyCommand::Add(a) => {
            let access = if a.backup_only {
                Access::BackupOnly
            } else {
                Access::Full
            };
            // Refused before a new password is asked for.
            if keys.access() != Access::Full {
                return Err(missing(keys, "key add"));
            }
            let secret = crate::secrets::new_secret(&a.new)?;
            let id = crypto::add_slot(b, keys, &secret, access, a.kdf.params()?).await?;
            done(cli, "added", &id, access)
        }
        KeyCommand::Remove(a) => {
            crypto::remove_slot(b, keys, &a.slot).await?;
            if cli.json {
                print_json(&json!({"removed": a.slot}))?;
            } else if !cli.quiet {
                println!("removed key slot {}", a.slot);
            }
            Ok(())
        }
        KeyCommand::Passwd(a) => {
            if keys.access() != Access::Full {
                return Err(missing(keys, "key passwd"));
            }
            let secret = crate::secrets::new_secret(&a.new)?;
            let id = crypto::change_secret(b, keys, &secret, a.kdf.params()?).await?;
            if cli.json {
                print_json(&json!({"replaced": keys.slot(), "slot": id}))?;
            } else if !cli.quiet {
                println!("key slot {} replaced by {id}", keys.slot());
            }
            Ok(())
        }
    }
}

fn master(repo: &Repository) -> Result<&MasterKeys> {
    repo.codec().master_keys().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the repository at {} is not encrypted: it has no keys",
            repo.location()
        ))
        .into()
    })
}

fn missing(keys: &MasterKeys, operation: &str) -> anyhow::Error {
    Error::MissingCapability {
        operation: operation.into(),
        slot: keys.slot().into(),
    }
    .into()
}

fn done(cli: &Cli, what: &str, id: &str, access: Access) -> Result<()> {
    if cli.json {
        print_json(&json!({"slot": id, "access": access.name()}))?;
    } else if !cli.quiet {
        println!("{what} key slot {id} ({} access)", access.name());
    }
    Ok(())
}

async fn list(cli: &Cli, repo: &Repository, keys: &MasterKeys) -> Result<()> {
    let slots = crypto::list_slots(repo.backend().as_ref(), keys).await?;
    let rows: Vec<_> = slots
        .iter()
        .map(|s| {
            let (access, kind, created, damaged) = match &s.header {
                Ok(h) => (
                    Some(h.access.name()),
                    Some(match h.kdf {
                        Kdf::Argon2id { .. } => "password",
                        Kdf::KeyFile { .. } => "key-file",
                    }),
                    Some(h.created),
                    None,
                ),
                Err(e) => (None, None, None, Some(e.to_string())),
            };
            json!({
                "id": s.id,
                "access": access,
                "kind": kind,
                "created": created.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                "authentic": s.authentic,
                "current": s.current,
                "damaged": damaged,
            })
        })
        .collect();
    if cli.json {
        return print_json(&json!({ "slots": rows }));
    }
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let mut line = format!(
            "{}  {:<11}  {:<8}  {}",
            text("id"),
            text("access"),
            text("kind"),
            text("created")
        );
        if r["current"] == true {
            line.push_str("  (current)");
        }
        if r["authentic"] == false {
            line.push_str("  NOT AUTHENTIC: not written by this repository's keys");
        }
        if let Some(d) = r["damaged"].as_str() {
            line.push_str(&format!("  damaged: {d}"));
        }
        println!("{line}");
    }
    Ok(())
}
