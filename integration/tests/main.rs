//! All end-to-end tests in one test binary.
//!
//! One binary instead of one per file: each of these links the whole
//! engine and the S3 SDK, and linking a dozen such binaries was a large
//! part of a clean CI run. Cargo's automatic test discovery is off
//! (`autotests = false` in Cargo.toml), so a new file in this directory
//! must be declared below; `every_test_file_is_declared` fails otherwise.

mod audit;
mod audit_edges;
mod base_self;
mod cli;
mod clones;
mod copy;
mod dead_stderr;
mod diff;
mod downgrade;
mod encryption;
mod engine;
mod gc_liveness;
mod gc_passes;
mod gc_stop;
mod hostile_dir;
mod hostile_repo;
mod incremental;
mod init_failures;
mod integrity;
mod json_schema;
mod lease_landing;
mod least_privilege;
mod mount;
mod mount_edges;
mod nbd_source;
mod node_lengths;
mod object_lock;
mod object_lock_hidden;
mod operations;
mod pack_files;
mod placement;
mod prune_damage;
mod prune_parent;
mod repair;
mod repair_packs;
mod restore_leftovers;
mod restore_race;
mod restore_safety;
mod retention;
mod s3;
mod s3_budget;
mod s3_errors;
mod s3_least_privilege;
mod s3_object_lock;
mod serve;
mod serve_clients;
mod serve_damage;
mod serve_gc;
mod serve_overlay;
mod serve_read;
mod signals;
mod store_settings;
mod sweep_check;
mod thaw;
mod thaw_edges;
mod unlocked;
mod verify_index;
mod verify_race;
mod windows;

/// A file in `tests/` that is not declared above would silently never run.
#[test]
fn every_test_file_is_declared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_module =
            path.extension().is_some_and(|e| e == "rs") || path.join("mod.rs").is_file();
        if stem != "main" && is_module && !main.contains(&format!("\nmod {stem};")) {
            missing.push(stem.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "declare these in tests/main.rs: {missing:?}"
    );
}
