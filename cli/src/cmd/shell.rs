//! Shell completions and the man page, generated from the same clap
//! definitions as `--help`, so they cannot drift from the real flags.
//! The man page is generated at run time (`xfull man`) rather than by a
//! build script: a build step would need the definitions in a crate of
//! their own, and packagers can run `xfull man --dir` after the build.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{CompletionsArgs, ManArgs};

/// Generators write into a buffer: clap_complete panics on a failed
/// write, and `xfull completions bash | head` must end quietly (141).
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = crate::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "xfull", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(())
}

pub fn man(args: &ManArgs) -> Result<()> {
    let cmd = crate::command();
    match &args.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
            Ok(())
        }
        Some(dir) => write_pages(cmd, dir),
    }
}

/// xfull.1 and one page per command (xfull-backup.1, ...).
fn write_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    Ok(())
}
