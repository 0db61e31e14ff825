//! `init` that fails leaves nothing of its own behind: a key file it made
//! is removed (one it did not make is kept), and of two inits racing for
//! one repository exactly one wins while the other removes its key slot
//! and says the repository exists.

use xfull_integration::env::{Env, fails, stderr, walk};

const KDF: [&str; 4] = ["--kdf-memory-kib", "64", "--kdf-time", "1"];

#[test]
fn a_failed_init_removes_the_key_file_it_made_and_only_that() {
    let e = Env::bare();
    let key = e.path("new.key");
    let k = key.display().to_string();
    // A directory holding someone's files.
    std::fs::create_dir(&e.repo).unwrap();
    std::fs::write(e.repo.join("notes.txt"), "mine").unwrap();
    let (code, err) = fails(e.x(&[&["init", "--key-file", &k][..], &KDF].concat()));
    assert_eq!(code, 2, "{err}");
    assert!(!key.exists(), "init left the key file it made: {err}");

    // A repository already there.
    std::fs::remove_dir_all(&e.repo).unwrap();
    e.x(&[&["init"][..], &KDF].concat()).assert().success();
    let (code, err) = fails(e.x(&[&["init", "--key-file", &k][..], &KDF].concat()));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert!(!key.exists(), "init left the key file it made: {err}");

    // A key file that was there before init is the user's: kept.
    let other = Env::bare();
    let theirs = other.path("theirs.key");
    let t = theirs.display().to_string();
    other
        .x(&[&["init", "--key-file", &t][..], &KDF].concat())
        .assert()
        .success();
    let before = std::fs::read(&theirs).unwrap();
    let (code, err) = fails(e.x(&[&["init", "--key-file", &t][..], &KDF].concat()));
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read(&theirs).unwrap(), before);
}

/// Two inits of one repository at once, many times over: exactly one
/// wins; the loser says the repository exists and leaves no key slot, so
/// the winner's password opens it.
#[test]
fn racing_inits_one_wins_the_loser_leaves_no_slot() {
    for round in 0..12 {
        let e = Env::bare();
        let init = [&["init", "--segment-size", "4M"][..], &KDF].concat();
        let children: Vec<_> = (0..2)
            .map(|_| {
                e.std(&init)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let won: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(won.len(), 1, "round {round}: {outs:?}");
        let lost = outs.iter().find(|o| !o.status.success()).unwrap();
        let err = stderr(lost);
        assert_eq!(lost.status.code(), Some(1), "round {round}: {err}");
        // Or, when it met the winner's slot before its config: that
        // keys/ holds slots but there is no config (yet).
        assert!(
            err.contains("already exists") || err.contains("keys/ holds key slots"),
            "round {round}: {err}"
        );
        let slots = walk(&e.repo.join("keys"));
        assert_eq!(slots.len(), 1, "round {round}: {slots:?} ({err})");
        e.x(&["points"]).assert().success();
    }
}
