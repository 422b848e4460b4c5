//! Daemons a test starts in the foreground, and waiting for daemons to go.

use super::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts the daemon in the foreground (`-f`) and waits until the mount is live.
pub fn spawn_foreground(opts: &str, mnt: &Path) -> std::process::Child {
    spawn_foreground_logged(opts, mnt, std::process::Stdio::null())
}

/// `spawn_foreground` with the daemon's stderr going to `stderr`. A daemon that does not
/// mount within 20 s is killed and whatever it left at `mnt` detached.
pub fn spawn_foreground_logged(
    opts: &str,
    mnt: &Path,
    stderr: std::process::Stdio,
) -> std::process::Child {
    let mut child = Command::new(bin())
        .arg("-f")
        .arg("-o")
        .arg(opts)
        .arg(mnt)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn stratafs -f");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(mnt) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("stratafs -f exited before mounting: {st}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
            panic!("stratafs -f did not mount within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Pids of live stratafs daemons whose command line ends with the mountpoint `mnt`.
pub fn daemons_for(mnt: &Path) -> Vec<u32> {
    daemons_of(&bin(), mnt)
}

/// Pids of live processes of the program `bin` whose command line ends with `mnt`.
pub fn daemons_of(bin: &Path, mnt: &Path) -> Vec<u32> {
    let (bin, want) = (bin.as_os_str().as_bytes(), mnt.as_os_str().as_bytes());
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.first() == Some(&bin) && args.last() == Some(&want) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until no daemon serves `mnt` any more (after an unmount, the old daemon's exit
/// path still touches the mountpoint; a new mount there must not race with it).
pub fn wait_daemons_gone(mnt: &Path) {
    assert!(
        daemons_gone_within(mnt, Duration::from_secs(10)),
        "stratafs daemons {:?} still running 10s after {} was unmounted",
        daemons_for(mnt),
        mnt.display()
    );
}

/// Whether the daemons serving `mnt` are gone within `limit` (waits for them until then).
pub fn daemons_gone_within(mnt: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !daemons_for(mnt).is_empty() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}
