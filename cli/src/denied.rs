//! A command the store refused for lack of a permission: says which
//! command needed what, so that an operator running a least-privilege
//! role (docs/least-privilege.md) knows to grant it or to run the command
//! with other credentials. The store's error itself names the key and
//! what the store answered.

use xfull_core::backend::{BackendError, Operation};

use crate::cli::Command;

/// `e` with the command and the permission it needed in front, if the
/// store refused it a permission; else `e` as it is.
pub fn explain(command: &Command, e: anyhow::Error) -> anyhow::Error {
    let Some(operation) = refused(&e) else {
        return e;
    };
    let name = name(command);
    let mut needs = format!(
        "{name} needs permission to {operation} objects ({}{})",
        operation.s3_action(),
        if operation == Operation::Overwrite {
            " without If-None-Match"
        } else {
            ""
        }
    );
    if matches!(command, Command::Backup(_)) && operation == Operation::Overwrite {
        // The one overwrite a backup asks for: a node known damaged.
        needs.push_str(
            " to replace a damaged node; run `xfull repair` with credentials that may delete \
             (it removes the damaged node), then back up again",
        );
    } else if matches!(operation, Operation::Delete | Operation::Overwrite) {
        needs.push_str("; run it with the maintenance role's credentials");
    }
    e.context(needs)
}

/// The refused operation, wherever the refusal is in `e`'s chain.
fn refused(e: &anyhow::Error) -> Option<Operation> {
    e.chain().find_map(|c| {
        let backend = match c.downcast_ref::<xfull_core::Error>() {
            Some(xfull_core::Error::Backend(b)) => Some(b),
            _ => c.downcast_ref::<BackendError>(),
        };
        match backend? {
            BackendError::PermissionDenied { operation, .. } => Some(*operation),
            _ => None,
        }
    })
}

fn name(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Points(_) => "points",
        Command::Show(_) => "show",
        Command::Restore(_) => "restore",
        Command::Thaw(_) => "thaw",
        Command::Undelete(_) => "undelete",
        Command::Diff(_) => "diff",
        Command::SnapshotDiff(_) => "snapshot-diff",
        Command::Copy(_) => "copy",
        Command::Prune(_) => "prune",
        Command::Gc(_) => "gc",
        Command::Stats(_) => "stats",
        Command::Verify(_) => "verify",
        Command::Repair(_) => "repair",
        Command::Forget(_) => "forget",
        Command::Serve(_) => "serve",
        Command::Mount(_) => "mount",
        Command::Key(_) => "key",
        Command::Index(_) => "index",
        Command::Completions(_) => "completions",
        Command::Man(_) => "man",
    }
}
