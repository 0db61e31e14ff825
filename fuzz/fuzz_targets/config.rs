//! The repository config (read by every command first).
#![no_main]
use libfuzzer_sys::fuzz_target;
use xfull_core::config::RepoConfig;

fuzz_target!(|data: &[u8]| {
    let _ = RepoConfig::decode(data);
});
