//! The configuration file (`config.toml`), read and validated as at start: never a panic, only
//! a configuration error naming what is wrong.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("config.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = flagpost::config::Config::from_args([
        std::ffi::OsString::from("flagpost"),
        "--config".into(),
        path.into_os_string(),
        "check-config".into(),
    ]);
});
