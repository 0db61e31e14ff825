//! A config rewritten to say "unencrypted": refused while key slots are
//! there, refused by a client that has seen the repository encrypted, and
//! the sealed objects a first-contact client meets are damage that says
//! so (docs/design.md, "Encryption": what is and is not covered).

use xfull_core::config::RepoConfig;
use xfull_integration::env::{Env, contents, fails, walk};

/// Rewrites the config to say "unencrypted", keeping everything else.
fn downgrade(e: &Env) {
    let path = e.repo.join("config");
    let mut cfg = RepoConfig::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert!(cfg.encryption.is_some());
    cfg.encryption = None;
    std::fs::write(&path, cfg.encode().unwrap()).unwrap();
}

#[test]
fn a_downgraded_config_is_refused_and_nothing_is_written_in_the_clear() {
    let e = Env::init();
    // init recorded the repository in the test's own state directory.
    assert_eq!(walk(&e.state_dir()).len(), 2, "{:?}", walk(&e.state_dir()));
    let img = e.path("d.img");
    std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
    e.backup("vm", &[("d", &img)]);
    downgrade(&e);
    let before = contents(&e.repo);
    let disk = format!("d={}", img.display());
    let backup = ["backup", "--vm", "new-vm", "--disk", &disk];

    // Key slots beside an unencrypted config: refused whatever the client
    // knows (a fresh state directory too).
    let fresh = e.path("fresh-state");
    for state in [e.state_dir(), fresh.clone()] {
        let mut c = e.x(&backup);
        c.env("XDG_STATE_HOME", &state);
        let (code, err) = fails(c);
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains("config") && err.contains("key slots exist"),
            "{err}"
        );
    }

    // The slots removed as well: this client's record refuses it.
    std::fs::rename(e.repo.join("keys"), e.path("keys-away")).unwrap();
    let (code, err) = fails(e.x(&backup));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("config") && err.contains("seen it encrypted"),
        "{err}"
    );
    let (code, _) = fails(e.x(&["points"]));
    assert_eq!(code, 3);

    // A client meeting the repository for the first time is not covered
    // by the record, but the sealed objects it reads are damage that says
    // so.
    let mut c = e.x(&["show", "vm@latest"]);
    c.env("XDG_STATE_HOME", &fresh);
    let (code, err) = fails(c);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("sealed") && err.contains("config"), "{err}");

    let mut after = contents(&e.repo);
    after.retain(|p, _| !p.starts_with(e.repo.join("keys")));
    let mut expected = before;
    expected.retain(|p, _| !p.starts_with(e.repo.join("keys")));
    assert!(after == expected, "the repository changed");
}

#[test]
fn a_record_that_cannot_be_read_is_an_error_naming_it() {
    let e = Env::init();
    let records = walk(&e.state_dir());
    assert!(!records.is_empty());
    for r in &records {
        std::fs::write(r, b"not a record").unwrap();
    }
    let (code, err) = fails(e.x(&["points"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&e.state_dir().display().to_string()) && err.contains("record"),
        "{err}"
    );
}

#[test]
fn init_without_encryption_on_purpose_frees_the_place() {
    let e = Env::init();
    std::fs::remove_dir_all(&e.repo).unwrap();
    e.x(&["init", "--encryption", "none"]).assert().success();
    e.x(&["points"]).assert().success();
}
