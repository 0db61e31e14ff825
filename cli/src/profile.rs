//! Named repositories in a config file, so that scheduled jobs say
//! `-r @offsite` instead of repeating the URL and every S3 flag:
//!
//! ```toml
//! [repositories.offsite]
//! url = "s3://backups/xfull"
//! s3_endpoint = "https://s3.example.net"
//! s3_region = "eu-west-1"
//! s3_storage_class_chunks = "STANDARD_IA"
//! s3_sse = "AES256"
//! max_requests_per_second = 200
//! max_upload_bytes_per_second = "20M"
//! password_command = "pass show xfull/offsite"  # or password_file, key_file
//! ```
//!
//! Flags given on the command line win over the profile's values, and
//! the profile's over the environment's (`AWS_ENDPOINT_URL`). A config
//! file that users other than its owner (or root) could write is refused,
//! as ssh refuses such a config: its `password_command` runs with `sh -c`
//! and its `url` says where backups go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use xfull_core::Error;

use crate::cli::{Cli, S3Args};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    repositories: BTreeMap<String, Profile>,
}

/// One named repository. Unknown keys are refused: a misspelt
/// `s3_regoin` would otherwise be ignored silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: String,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_storage_class_chunks: Option<String>,
    s3_sse: Option<String>,
    #[serde(default)]
    s3_no_conditional_put: bool,
    max_requests_per_second: Option<u32>,
    /// A size as on the command line (`"20M"`).
    max_upload_bytes_per_second: Option<String>,
    /// Secret sources of an encrypted repository, used when the command
    /// line gives none (`--key-file`, `--password-command`).
    password_command: Option<String>,
    password_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// The secret sources a profile names (all `None` without a profile).
#[derive(Debug, Default)]
pub struct ProfileSecrets {
    pub password_command: Option<String>,
    pub password_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Where they are written, for messages: `profile @NAME in PATH`.
    pub origin: Option<String>,
}

/// The secret sources of the `@NAME` profile the command line names.
pub fn secrets(cli: &Cli) -> Result<ProfileSecrets> {
    Ok(resolve_location(cli, cli.repo()?)?.2)
}

/// The repository location and S3 options the command line means, with a
/// `@NAME` profile expanded.
pub fn resolve(cli: &Cli) -> Result<(String, S3Args)> {
    let (url, s3, _) = resolve_location(cli, cli.repo()?)?;
    Ok((url, s3))
}

/// A repository named on the command line (`--repo`, or a second one:
/// `copy --to`, `init --like`): its location, its S3 options (the
/// command line's flags, the profile's filling in what they leave
/// unset) and the secret sources its profile names.
pub fn resolve_location(cli: &Cli, repo: &str) -> Result<(String, S3Args, ProfileSecrets)> {
    let mut flags = cli.s3_flags();
    // An empty value says nothing (as `VAR= xfull ...` means in a shell).
    flags.s3_endpoint = flags.s3_endpoint.filter(|e| !e.is_empty());
    let Some(name) = repo.strip_prefix('@') else {
        return Ok((
            repo.to_string(),
            with_env_endpoint(flags),
            ProfileSecrets::default(),
        ));
    };
    let path = config_path(cli)?;
    let profile = load(&path, name)?;
    let bad_url = |why: &str| {
        usage(format!(
            "config file {}, profile @{name}: url {why}",
            path.display()
        ))
    };
    if profile.url.is_empty() {
        // As `-r ""`: it would name the current directory, never meant.
        return Err(bad_url(
            "is empty: give a directory, file:///dir or s3://bucket/prefix",
        ));
    }
    if profile.url.starts_with('@') {
        return Err(bad_url(&format!(
            "= {:?} names a profile; a profile's url is a directory, file:///dir or \
             s3://bucket/prefix",
            profile.url
        )));
    }
    let upload = profile
        .max_upload_bytes_per_second
        .as_deref()
        .map(|v| {
            crate::cli::parse_size(v).map_err(|e| {
                usage(format!(
                    "config file {}, profile @{name}: max_upload_bytes_per_second: {e}",
                    path.display()
                ))
            })
        })
        .transpose()?;
    let from_file = S3Args {
        s3_endpoint: profile.s3_endpoint.filter(|e| !e.is_empty()),
        s3_region: profile.s3_region,
        s3_no_conditional_put: profile.s3_no_conditional_put,
        s3_storage_class_chunks: profile.s3_storage_class_chunks,
        s3_sse: profile.s3_sse,
        max_requests_per_second: profile.max_requests_per_second,
        max_upload_bytes_per_second: upload,
    };
    check_values(&path, name, &from_file)?;
    let secrets = ProfileSecrets {
        password_command: profile.password_command,
        password_file: profile.password_file,
        key_file: profile.key_file,
        origin: Some(format!("profile @{name} in {}", path.display())),
    };
    Ok((
        profile.url,
        with_env_endpoint(flags.or(&from_file)),
        secrets,
    ))
}

/// `s3` with the endpoint of `AWS_ENDPOINT_URL` when neither the command
/// line nor the profile names one: the variable is the weakest setting (a
/// shell or a unit may export it for other tools). Empty means unset.
fn with_env_endpoint(mut s3: S3Args) -> S3Args {
    if s3.s3_endpoint.is_none() {
        s3.s3_endpoint = std::env::var_os("AWS_ENDPOINT_URL")
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned());
    }
    s3
}

fn usage(msg: String) -> anyhow::Error {
    Error::InvalidArgument(msg).into()
}

fn config_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.config {
        return Ok(p.clone());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => {
                return Err(usage(
                    "a @profile needs a config file: neither --config, XDG_CONFIG_HOME nor HOME \
                     is set"
                        .into(),
                ));
            }
        },
    };
    Ok(base.join("xfull").join("config.toml"))
}

fn load(path: &Path, name: &str) -> Result<Profile> {
    let cannot = |e: std::io::Error| {
        usage(format!(
            "repository @{name}: cannot read the config file {}: {e}",
            path.display()
        ))
    };
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    // The file opened, not its name again: what is checked is what is read.
    check_trusted(path, &file.metadata().map_err(cannot)?)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot)?;
    let mut file: ConfigFile = toml::from_str(&text).map_err(|e| {
        // One line: the message and where, not toml's multi-line excerpt.
        let line = e
            .span()
            .map(|s| format!(", line {}", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        usage(format!(
            "config file {}{line}: {}",
            path.display(),
            e.message()
        ))
    })?;
    file.repositories.remove(name).ok_or_else(|| {
        let known: Vec<String> = file.repositories.keys().map(|k| format!("@{k}")).collect();
        usage(format!(
            "no profile @{name} in {} (it has: {})",
            path.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// Refuses a config file that someone other than the caller (or root)
/// could have written, as ssh refuses its config: its `password_command`
/// runs as whoever runs xfull (root, for the units in contrib/), and its
/// `url` and `s3_endpoint` say where backups go. Checked: the file (owner,
/// no group or other write bit) and the directory holding it, as named
/// and as the file really is (owner, no group or other write bit unless
/// sticky: in /tmp, others cannot replace a file they do not own).
fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let refuse = |what: String, why: String, fix: String| {
        usage(format!(
            "config file {}{what} {why}: refused, since whoever can change it chooses the \
             command its password_command runs and where backups go; {fix}",
            path.display()
        ))
    };
    let foreign = |uid: u32| uid != me && uid != 0;
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(
            String::new(),
            format!(
                "is writable by its group or by others (mode {:04o})",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {}", path.display()),
        ));
    }
    if foreign(meta.uid()) {
        return Err(refuse(
            String::new(),
            format!(
                "belongs to uid {}, neither you (uid {me}) nor root",
                meta.uid()
            ),
            "chown it to yourself or root".into(),
        ));
    }
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let real = parent(&real);
        if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&real) {
            dirs.push(real);
        }
    }
    for dir in dirs {
        let Ok(d) = std::fs::metadata(&dir) else {
            continue;
        };
        let what = format!(": the directory {} holding it", dir.display());
        if d.mode() & 0o022 != 0 && d.mode() & 0o1000 == 0 {
            return Err(refuse(
                what,
                format!(
                    "is writable by its group or by others (mode {:04o})",
                    d.mode() & 0o7777
                ),
                format!("chmod go-w {}", dir.display()),
            ));
        }
        if foreign(d.uid()) {
            return Err(refuse(
                what,
                format!(
                    "belongs to uid {}, neither you (uid {me}) nor root",
                    d.uid()
                ),
                "keep the config file in a directory of yours".into(),
            ));
        }
    }
    Ok(())
}

/// The same checks as the flags' (clap refuses bad flag values).
fn check_values(path: &Path, name: &str, s3: &S3Args) -> Result<()> {
    let bad = |key: &str, v: &str, allowed: &[&str]| {
        usage(format!(
            "config file {}, profile @{name}: {key} = {v:?} is not one of {}",
            path.display(),
            allowed.join(", ")
        ))
    };
    if let Some(c) = &s3.s3_storage_class_chunks
        && !xfull_s3::storage_classes().contains(&c.as_str())
    {
        return Err(bad(
            "s3_storage_class_chunks",
            c,
            xfull_s3::storage_classes(),
        ));
    }
    if let Some(v) = &s3.s3_sse
        && !xfull_s3::SSE_VALUES.contains(&v.as_str())
    {
        return Err(bad("s3_sse", v, xfull_s3::SSE_VALUES));
    }
    Ok(())
}
