//! The `-o` parser (`MountOptions::apply`): never panics; an error is one line unless the
//! input itself carried a line break (a known finding: the message quotes the input
//! verbatim); a success is deterministic and yields only non-empty lower paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratafs_fuzz::options::MountOptions;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Several -o strings, as the command line allows: split on NUL.
    let mut m = MountOptions::default();
    let mut again = MountOptions::default();
    for part in s.split('\0') {
        let r = m.apply(part);
        let r2 = again.apply(part);
        assert_eq!(r, r2, "apply is not deterministic for {part:?}");
        match r {
            Ok(()) => {
                assert!(m.lowerdirs.iter().all(|p| !p.as_os_str().is_empty()));
                if let Some(t) = m.threads {
                    assert!((1..=64).contains(&t));
                }
            }
            Err(e) => {
                assert!(!e.is_empty());
                if !part.contains(['\n', '\r']) {
                    assert!(stratafs_fuzz::one_line(&e), "multi-line error {e:?}");
                }
                return;
            }
        }
    }
});
