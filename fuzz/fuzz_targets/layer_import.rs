//! `stratafs import LAYER DIR`: any bytes as the layer tar (plain, or gzip when the input
//! starts with the gzip magic). The importer must not panic, must return 0 or 1, must
//! write nothing outside DIR, and on failure must leave DIR absent (its staging dir
//! removed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("layer.tar");
    std::fs::write(&tar, data).unwrap();
    let dir = tmp.path().join("layer");
    let code = stratafs_fuzz::layertool::main(
        "import",
        vec![OsString::from(&tar), OsString::from(&dir)],
    );
    assert!(code == 0 || code == 1, "exit code {code}");
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let want: Vec<OsString> = if code == 0 {
        vec!["layer".into(), "layer.tar".into()]
    } else {
        vec!["layer.tar".into()]
    };
    assert_eq!(names, want, "exit {code}: what the import left beside the layer");
    // Make everything removable (the layer may hold read-only dirs).
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(tmp.path())
        .status();
});
