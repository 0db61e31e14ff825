//! The secret that unlocks an encrypted repository, from the command line,
//! the environment, the profile or the terminal (in that order; the first
//! source given wins, and one that fails is an error naming it).

use std::path::{Path, PathBuf};

use anyhow::Result;
use xfull_core::crypto::keyfile;
use xfull_core::crypto::password::Ask;
use xfull_core::crypto::{Secret, SecretSources, SourceNames};

use crate::cli::{Cli, NewSecretArgs, OtherSecret};
use crate::profile::ProfileSecrets;

/// The sources given to this command: flags, then XFULL_PASSWORD_FILE and
/// XFULL_PASSWORD, then the profile's (only when no flag names one: a
/// `--key-file` on the command line must not meet the profile's
/// `password_command` as "both given"). Each is named in messages as
/// where it was given: a profile's are the profile's keys.
pub fn sources(cli: &Cli) -> Result<SecretSources> {
    let s = SecretSources {
        key_file: cli.key_file.clone(),
        password_command: cli.password_command.clone(),
        ..SecretSources::default()
    }
    .with_env(|n| std::env::var_os(n));
    if s.key_file.is_some()
        || s.password_command.is_some()
        || s.password_file.is_some()
        || s.password.is_some()
    {
        return Ok(s);
    }
    Ok(from_profile(crate::profile::secrets(cli)?))
}

/// The sources a profile names, named as its keys.
fn from_profile(p: ProfileSecrets) -> SecretSources {
    SecretSources {
        key_file: p.key_file,
        password_command: p.password_command,
        password_file: p.password_file,
        password: None,
        names: match p.origin {
            Some(origin) => SourceNames::config_keys(origin),
            None => SourceNames::default(),
        },
    }
}

/// The secret of an existing repository (asked once on a terminal).
pub fn current(cli: &Cli) -> xfull_core::Result<Secret> {
    let s = sources(cli).map_err(|e| xfull_core::Error::SecretSource {
        secret: "password".into(),
        reason: e.to_string(),
    })?;
    s.resolve(Ask::Once)
}

/// The first secret of a new repository: a `--key-file` that does not
/// exist yet is made (and returned, for `init` to remove if it fails); a
/// password from a prompt is asked twice.
pub fn for_init(cli: &Cli) -> Result<(Secret, Option<PathBuf>)> {
    let s = sources(cli)?;
    if let Some(path) = &s.key_file
        && !path.exists()
        && s.password_command.is_none()
    {
        return Ok((keyfile::generate(path)?, Some(path.clone())));
    }
    Ok((s.resolve(Ask::Confirm)?, None))
}

/// What is left of an `init` that failed with `e`: a key file it made
/// (`made`, holding `secret`) opens nothing when the repository was not
/// made, and is removed; but when init cannot tell whether it made it,
/// the file may be the one secret of the repository's only slot, and is
/// kept, as the error then says (it was deleted; review, 2026-12-07).
pub fn after_failed_init(
    e: anyhow::Error,
    made: Option<PathBuf>,
    secret: &Secret,
) -> anyhow::Error {
    let Some(path) = made else { return e };
    if let Some(xfull_core::Error::InitOutcomeUnknown { .. }) = e.downcast_ref() {
        return e.context(format!(
            "the repository may have been created; key file {} kept",
            path.display()
        ));
    }
    remove_made_key_file(&path, secret);
    e
}

/// Removes the key file `init` made at `path` once init failed: only if
/// it still holds the key made (a file put there since is someone
/// else's).
fn remove_made_key_file(path: &Path, made: &Secret) {
    if keyfile::read(path).is_ok_and(|k| k.bytes() == made.bytes()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The new secret of `key add` / `key passwd`.
pub fn new_secret(args: &NewSecretArgs) -> Result<Secret> {
    if let Some(path) = &args.new_key_file {
        return Ok(keyfile::generate(path)?);
    }
    let s = SecretSources {
        password_file: args.new_password_file.clone(),
        names: SourceNames {
            password_file: "--new-password-file".into(),
            ..SourceNames::default()
        },
        ..SecretSources::default()
    };
    Ok(s.resolve(Ask::New)?)
}

/// The secret of a second repository (`copy --to`, `init --like`): its
/// own flags, else its profile's sources. Never a prompt (two prompts
/// in one command could not say which repository they are for) and
/// never `XFULL_PASSWORD*` (those are `--repo`'s).
pub fn other(
    flags: &OtherSecret,
    profile: ProfileSecrets,
    location: &str,
) -> xfull_core::Result<Secret> {
    let p = flags.flag;
    let given = [
        flags.key_file.is_some(),
        flags.password_command.is_some(),
        flags.password_file.is_some(),
    ];
    let s = match given.iter().filter(|g| **g).count() {
        0 => from_profile(profile),
        1 => SecretSources {
            key_file: flags.key_file.clone(),
            password_command: flags.password_command.clone(),
            password_file: flags.password_file.clone(),
            password: None,
            names: SourceNames::flags(p),
        },
        _ => {
            return Err(xfull_core::Error::InvalidArgument(format!(
                "--{p}-key-file, --{p}-password-command and --{p}-password-file: give one"
            )));
        }
    };
    s.resolve(Ask::Never).map_err(|e| match e {
        xfull_core::Error::SecretSource { secret, .. } if secret == "password" => {
            xfull_core::Error::SecretSource {
                secret: format!("password of {location}"),
                reason: format!(
                    "it is encrypted and none was given: use --{p}-key-file, \
                     --{p}-password-command or --{p}-password-file (or a profile naming one)"
                ),
            }
        }
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed init removes the key file it made, unless it cannot tell
    /// whether it made the repository: then the file may be the only
    /// secret of its slot.
    #[test]
    fn a_made_key_file_is_kept_when_init_may_have_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let secret = keyfile::generate(&path).unwrap();
        let unknown = xfull_core::Error::InitOutcomeUnknown {
            location: "memory://".into(),
            reason: "reply lost".into(),
        };
        let e = after_failed_init(unknown.into(), Some(path.clone()), &secret);
        assert!(path.exists());
        let said = format!("{e:#}");
        assert!(
            said.contains("may have been created") && said.contains("kept"),
            "{said}"
        );
        assert!(matches!(
            e.downcast_ref(),
            Some(xfull_core::Error::InitOutcomeUnknown { .. })
        ));
        let exists = xfull_core::Error::RepositoryExists {
            location: "memory://".into(),
        };
        after_failed_init(exists.into(), Some(path.clone()), &secret);
        assert!(!path.exists());
    }
}
