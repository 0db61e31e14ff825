//! What `serve` and `mount` share: naming the points, printing the
//! warnings the served disks give while they run.

use std::sync::Arc;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::progress::{Notice, Progress};
use xfull_core::repo::Repository;
use xfull_core::serve::ServeSpec;

/// The point `name` names, with its id resolved now (`VM@latest` is the
/// latest when the command starts; the lease pins that id).
pub async fn spec(repo: &Repository, name: &str, disks: &[String]) -> Result<ServeSpec> {
    let (vm, id) = crate::point_name::resolve(repo, name).await?;
    let id = match id {
        Some(id) => id,
        None => repo
            .latest(&vm)
            .await?
            .ok_or_else(|| Error::PointNotFound {
                point: format!("{vm}@latest"),
            })?,
    };
    Ok(ServeSpec {
        vm,
        id,
        disks: disks.to_vec(),
    })
}

/// Prints the warnings served disks give (damage met), as they come,
/// until dropped.
pub struct Notices(tokio::task::JoinHandle<()>, Arc<Progress>);

impl Notices {
    pub fn start(progress: Arc<Progress>) -> Notices {
        let p = progress.clone();
        Notices(
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    print(&p);
                }
            }),
            progress,
        )
    }
}

fn print(p: &Progress) {
    for n in p.take_notices() {
        if let Notice::Warning(w) = n {
            let line = format!("xfull: warning: {w}");
            say!("{}", crate::output::printable(&line));
        }
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        self.0.abort();
        print(&self.1);
    }
}
