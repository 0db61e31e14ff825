//! Where the secret comes from, in this order: `--key-file`,
//! `--password-command`, `XFULL_PASSWORD_FILE`, `XFULL_PASSWORD` (the
//! weakest: other processes of the same user may read the environment),
//! else a prompt on the terminal. A source that fails is an error naming
//! it; a later source is never tried instead (a typo in a file name must
//! not fall through to another password).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::crypto::keyfile;
use crate::crypto::password_command;
use crate::crypto::prompt;
use crate::crypto::secret::Secret;
use crate::error::{Error, Result};

/// Longest password read from a file or a command.
const MAX_PASSWORD: u64 = 4096;

/// The secret sources given to one command.
#[derive(Default)]
pub struct SecretSources {
    /// `--key-file PATH`
    pub key_file: Option<PathBuf>,
    /// `--password-command CMD`, run with `sh -c`
    pub password_command: Option<String>,
    /// `XFULL_PASSWORD_FILE`
    pub password_file: Option<PathBuf>,
    /// `XFULL_PASSWORD`
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// What messages call the first three: where they were given.
    pub names: SourceNames,
}

/// Where the sources of [`SecretSources`] were given, for messages: a
/// failing source is named as the user wrote it (`--to-key-file`, a
/// profile's `password_file`), not as another one they never set.
#[derive(Clone, Debug)]
pub struct SourceNames {
    pub key_file: String,
    pub password_command: String,
    pub password_file: String,
    /// Where all three are written when not on the command line or in
    /// the environment, e.g. `profile @offsite in /etc/xfull/config.toml`.
    pub given_in: Option<String>,
}

impl Default for SourceNames {
    /// `--key-file`, `--password-command`, `XFULL_PASSWORD_FILE`.
    fn default() -> Self {
        SourceNames {
            key_file: "--key-file".into(),
            password_command: "--password-command".into(),
            password_file: "XFULL_PASSWORD_FILE".into(),
            given_in: None,
        }
    }
}

impl SourceNames {
    /// The flags `--{prefix}-key-file`, `--{prefix}-password-command`,
    /// `--{prefix}-password-file`.
    pub fn flags(prefix: &str) -> Self {
        SourceNames {
            key_file: format!("--{prefix}-key-file"),
            password_command: format!("--{prefix}-password-command"),
            password_file: format!("--{prefix}-password-file"),
            given_in: None,
        }
    }

    /// The keys `key_file`, `password_command`, `password_file` of a
    /// config file, `given_in` it (`profile @NAME in PATH`).
    pub fn config_keys(given_in: String) -> Self {
        SourceNames {
            key_file: "key_file".into(),
            password_command: "password_command".into(),
            password_file: "password_file".into(),
            given_in: Some(given_in),
        }
    }

    /// ` of profile @NAME in PATH` (with `word` "of"), or nothing.
    fn given(&self, word: &str) -> String {
        self.given_in
            .as_ref()
            .map(|w| format!(" {word} {w}"))
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for SecretSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSources")
            .field("key_file", &self.key_file)
            .field("password_command", &self.password_command)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("names", &self.names)
            .finish()
    }
}

/// Whether to ask on the terminal when no other source is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Ask once (opening a repository).
    Once,
    /// Ask twice and compare (the first password of a new repository).
    Confirm,
    /// Ask twice and compare, as a new password (`key add`, `key
    /// passwd`): the prompt must not read as the one for the password
    /// the repository was just opened with.
    New,
    /// Never (scripts, tests): no source is an error.
    Never,
}

impl SecretSources {
    /// Adds `XFULL_PASSWORD_FILE` and `XFULL_PASSWORD` from `var` (the
    /// process environment: `|n| std::env::var_os(n)`); empty values count
    /// as unset, as `VAR= xfull ...` means in a shell.
    pub fn with_env(mut self, var: impl Fn(&str) -> Option<OsString>) -> Self {
        let set = |n: &str| var(n).filter(|v| !v.is_empty());
        self.password_file = set("XFULL_PASSWORD_FILE").map(PathBuf::from);
        self.password = set("XFULL_PASSWORD").map(|v| Zeroizing::new(v.into_vec()));
        self
    }

    /// The secret, from the first source given.
    pub fn resolve(&self, ask: Ask) -> Result<Secret> {
        let n = &self.names;
        if self.key_file.is_some() && self.password_command.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} and {} both given{}: use one",
                n.key_file,
                n.password_command,
                n.given("in")
            )));
        }
        if let Some(path) = &self.key_file {
            if n.key_file == SourceNames::default().key_file && n.given_in.is_none() {
                return keyfile::read(path);
            }
            // Named as given: `key file PATH (key_file of profile @x in F)`.
            return keyfile::read(path).map_err(|e| match e {
                Error::SecretSource { secret, reason } => Error::SecretSource {
                    secret: format!("{secret} ({}{})", n.key_file, n.given("of")),
                    reason,
                },
                e => e,
            });
        }
        if let Some(cmd) = &self.password_command {
            return from_command(
                cmd,
                &format!("{} {cmd:?}{}", n.password_command, n.given("of")),
            );
        }
        if let Some(path) = &self.password_file {
            let source = format!(
                "password file {} ({}{})",
                path.display(),
                n.password_file,
                n.given("of")
            );
            let f = std::fs::File::open(path).map_err(|e| failed(&source, e.to_string()))?;
            return from_reader(f, source);
        }
        if let Some(pw) = &self.password {
            return checked(pw.to_vec(), "password from XFULL_PASSWORD".into());
        }
        let none = || {
            failed(
                "password",
                "none given: use --key-file, --password-command, XFULL_PASSWORD_FILE or \
                 XFULL_PASSWORD, or run on a terminal",
            )
        };
        match ask {
            Ask::Never => Err(none()),
            Ask::Once | Ask::Confirm | Ask::New => {
                let tty = prompt::Terminal::open().map_err(|_| none())?;
                let pw = prompt::ask_password(&tty, ask)?;
                checked(pw.to_vec(), "password from the terminal".into())
            }
        }
    }
}

pub(super) fn failed(source: &str, reason: impl Into<String>) -> Error {
    Error::SecretSource {
        secret: source.to_string(),
        reason: reason.into(),
    }
}

/// A password read from a file or a command's output: one trailing line
/// end is not part of it.
fn from_reader(r: impl Read, source: String) -> Result<Secret> {
    let buf = read_bounded(r, &source)?;
    let mut end = buf.len();
    if buf[..end].ends_with(b"\n") {
        end -= 1;
        if buf[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    checked(buf[..end].to_vec(), source)
}

pub(super) fn read_bounded(r: impl Read, source: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    r.take(MAX_PASSWORD + 1)
        .read_to_end(&mut buf)
        .map_err(|e| failed(source, e.to_string()))?;
    if buf.len() as u64 > MAX_PASSWORD {
        return Err(failed(source, format!("longer than {MAX_PASSWORD} bytes")));
    }
    Ok(buf)
}

fn checked(pw: Vec<u8>, source: String) -> Result<Secret> {
    if pw.is_empty() {
        // Zeroizing drops below wipe what was read.
        return Err(failed(&source, "it is empty"));
    }
    Ok(Secret::password(pw, source))
}

/// The password `cmd` prints; `named` says where it was given
/// (`--password-command "CMD"`).
fn from_command(cmd: &str, named: &str) -> Result<Secret> {
    let source = format!("password from {named}");
    let out = password_command::output(cmd, &source)?;
    from_reader(&out[..], source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn source_of(e: &Error) -> String {
        match e {
            Error::SecretSource { secret: source, .. } => source.clone(),
            other => panic!("not a secret source error: {other}"),
        }
    }

    #[test]
    fn sources_in_order_each_named() {
        let dir = tempfile::tempdir().unwrap();
        let pw_file = dir.path().join("pw");
        std::fs::write(&pw_file, "from-file\r\n").unwrap();
        let pw_path = pw_file.to_str().unwrap();
        let both = env(&[
            ("XFULL_PASSWORD_FILE", pw_path),
            ("XFULL_PASSWORD", "from-env"),
        ]);

        let s = SecretSources::default()
            .with_env(&both)
            .resolve(Ask::Never)
            .unwrap();
        assert_eq!(s.bytes(), b"from-file");
        assert!(s.source().contains("XFULL_PASSWORD_FILE"), "{}", s.source());

        let s = SecretSources::default()
            .with_env(env(&[
                ("XFULL_PASSWORD", "from-env"),
                ("XFULL_PASSWORD_FILE", ""),
            ]))
            .resolve(Ask::Never)
            .unwrap();
        assert_eq!(s.bytes(), b"from-env");

        let cmd = SecretSources {
            password_command: Some("printf 'from-cmd\\n'".into()),
            ..SecretSources::default()
        }
        .with_env(&both);
        assert_eq!(cmd.resolve(Ask::Never).unwrap().bytes(), b"from-cmd");

        // Only the last line end goes: a password may end in spaces or a
        // second newline.
        std::fs::write(&pw_file, "a b \n\n").unwrap();
        let s = SecretSources::default()
            .with_env(&both)
            .resolve(Ask::Never)
            .unwrap();
        assert_eq!(s.bytes(), b"a b \n");
    }

    #[test]
    fn a_failing_source_is_named_and_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = SecretSources::default()
            .with_env(env(&[
                ("XFULL_PASSWORD_FILE", missing.to_str().unwrap()),
                ("XFULL_PASSWORD", "would-work"),
            ]))
            .resolve(Ask::Never)
            .unwrap_err();
        assert!(source_of(&e).contains("missing"), "{e}");

        let e = SecretSources {
            password_command: Some("echo hi; exit 3".into()),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        assert!(source_of(&e).contains("--password-command"), "{e}");
        assert!(e.to_string().contains("exit status: 3"), "{e}");

        let empty = SecretSources {
            password_command: Some("true".into()),
            ..SecretSources::default()
        };
        assert!(
            empty
                .resolve(Ask::Never)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );

        let e = SecretSources::default().resolve(Ask::Never).unwrap_err();
        assert!(e.to_string().contains("none given"), "{e}");

        let both = SecretSources {
            key_file: Some(missing.clone()),
            password_command: Some("true".into()),
            ..SecretSources::default()
        };
        assert!(both.resolve(Ask::Never).unwrap_err().is_usage());
    }

    /// A source is named where it was given: a profile's keys with the
    /// profile, another repository's flags as those flags; never
    /// `XFULL_PASSWORD_FILE` or `--password-command` when they were not.
    #[test]
    fn sources_are_named_where_they_were_given() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let profile = || SourceNames::config_keys("profile @p in /etc/x.toml".into());
        let e = SecretSources {
            password_file: Some(missing.clone()),
            names: profile(),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        let named = source_of(&e);
        assert!(
            named.contains("password_file of profile @p in /etc/x.toml")
                && !named.contains("XFULL_PASSWORD_FILE"),
            "{e}"
        );
        let e = SecretSources {
            password_command: Some("exit 3".into()),
            names: profile(),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        let named = source_of(&e);
        assert!(
            named.contains("password_command") && named.contains("@p") && !named.contains("--"),
            "{e}"
        );
        let e = SecretSources {
            key_file: Some(missing.clone()),
            names: profile(),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        assert!(source_of(&e).contains("key_file of profile @p"), "{e}");
        let e = SecretSources {
            key_file: Some(missing.clone()),
            password_command: Some("true".into()),
            names: profile(),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        assert!(e.is_usage(), "{e}");
        assert!(
            e.to_string()
                .contains("key_file and password_command both given in profile @p")
                && !e.to_string().contains("--"),
            "{e}"
        );
        let e = SecretSources {
            password_file: Some(missing),
            names: SourceNames::flags("to"),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        assert!(source_of(&e).contains("(--to-password-file)"), "{e}");
    }

    #[test]
    fn an_endless_command_output_is_bounded() {
        let e = SecretSources {
            password_command: Some("head -c 100000 /dev/zero".into()),
            ..SecretSources::default()
        }
        .resolve(Ask::Never)
        .unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn the_key_file_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let made = keyfile::generate(&path).unwrap();
        let s = SecretSources {
            key_file: Some(path),
            ..SecretSources::default()
        }
        .with_env(env(&[("XFULL_PASSWORD", "x")]))
        .resolve(Ask::Never)
        .unwrap();
        assert_eq!(s.bytes(), made.bytes());
        assert_eq!(s.kind(), &crate::crypto::SecretKind::KeyFile);
    }
}
