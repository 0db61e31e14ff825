use super::*;

/// A directory a killed sweep left (its process gone) is removed by the
/// next one and never read; one of a live process, one of another host,
/// a symlink, and anything not named as ours stay.
#[test]
fn directories_of_killed_sweeps_are_removed_not_read() {
    let base = tempfile::tempdir().unwrap();
    // No process has this id (above the kernel's pid_max limit).
    let dead = base.path().join(format!(
        "{DIR_PREFIX}4294967295-0123456789abcdef-{}",
        host_tag()
    ));
    std::fs::create_dir(&dead).unwrap();
    // Files a reader might mistake for marks.
    std::fs::write(dead.join("part-0"), 7u64.to_be_bytes()).unwrap();
    std::fs::write(dead.join("run-0"), 7u64.to_be_bytes()).unwrap();
    let live = base
        .path()
        .join(format!("{DIR_PREFIX}1-0123456789abcdef-{}", host_tag()));
    std::fs::create_dir(&live).unwrap();
    // Another host's (or container's): its process ids are not ours.
    let other_host = base
        .path()
        .join(format!("{DIR_PREFIX}4294967295-0123456789abcdef-elsewhere"));
    std::fs::create_dir(&other_host).unwrap();
    let other = base.path().join("xfull-other");
    std::fs::create_dir(&other).unwrap();
    let target = tempfile::tempdir().unwrap();
    let link = base
        .path()
        .join(format!("{DIR_PREFIX}4294967294-0-{}", host_tag()));
    std::os::unix::fs::symlink(target.path(), &link).unwrap();

    let mut spill = Spill::create(base.path()).unwrap();
    assert!(!dead.exists());
    assert!(live.exists() && other.exists() && other_host.exists());
    assert!(link.exists() && target.path().exists());
    spill.write_run(&[1, 5, 9]).unwrap();
    spill.write_run(&[5, 6]).unwrap();
    spill.seal(2).unwrap();
    assert_eq!((spill.parts(), spill.count()), (2, 4));
    assert_eq!(spill.span(0), (1, Some(6)));
    assert!(!spill.contains(7).unwrap());
    assert!(spill.contains(9).unwrap() && spill.contains(1).unwrap());
    let dir = spill.dir().to_path_buf();
    drop(spill);
    assert!(!dir.exists());
}
