//! The repository of a test's scratch directory opened in-process, with
//! the password every command is given, for tests that read stored
//! objects themselves (they are sealed: repositories are encrypted by
//! default).

use std::sync::Arc;

use xfull_core::crypto::Secret;
use xfull_core::repo::Repository;
use xfull_integration::env::Env;
use xfull_local::LocalBackend;

/// Opens the local repository of `e` with its password.
pub fn open(e: &Env) -> Repository {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = std::fs::read_to_string(e.password_file()).unwrap();
    let pw = text.trim_end_matches('\n').as_bytes().to_vec();
    rt.block_on(async {
        let b = Arc::new(LocalBackend::open(&e.repo).unwrap());
        Repository::open_with(b, || Ok(Secret::password(pw, "the test's password")))
            .await
            .unwrap()
    })
}
