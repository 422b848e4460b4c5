//! Mounts a test makes (stratafs, kernel overlayfs, tmpfs), each unmounted on Drop even
//! when the test fails.

use super::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs the stratafs binary with these arguments.
pub fn run_stratafs<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run stratafs")
}

/// Runs stratafs, which must succeed; its stdout.
pub fn stratafs_ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = run_stratafs(args);
    assert!(
        out.status.success(),
        "stratafs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs stratafs, which must refuse: exit status 1 and one line on stderr, returned.
pub fn stratafs_refuses<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = run_stratafs(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stratafs {args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    err
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let mut f = l.split(' ');
        let _src = f.next();
        f.next().map(|m| Path::new(m) == want).unwrap_or(false)
    })
}

/// The count of requests of opcode `op` (e.g. "READ") in a `stratafs stats` report.
pub fn report_count(report: &str, op: &str) -> u64 {
    report
        .lines()
        .find(|line| line.split_whitespace().next() == Some(op))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A live stratafs mount; unmounted (and its daemon gone) when dropped.
pub struct Mount {
    pub mnt: PathBuf,
}

impl Mount {
    pub fn new(opts: &str, mnt: &Path) -> Mount {
        let out = Command::new(bin())
            .arg("-o")
            .arg(opts)
            .arg(mnt)
            .output()
            .expect("run stratafs");
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(mnt),
            "stratafs returned 0 but nothing is mounted"
        );
        Mount {
            mnt: mnt.to_path_buf(),
        }
    }

    /// Unmounts now and waits until the mount and its daemon are gone.
    pub fn unmount(&mut self) {
        if !is_mounted(&self.mnt) {
            return;
        }
        let _ = Command::new("umount").arg(&self.mnt).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.mnt) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // The daemon still holds the upper and work dirs until it has exited: a mount of
        // the same layers right after must not find them in use. (Not forever: a lazily
        // detached mount's daemon lives on while a test still holds files of it open.)
        daemons_gone_within(&self.mnt, Duration::from_secs(5));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A live kernel overlayfs mount (the oracle of the model test); unmounted when dropped.
pub struct OverlayMount {
    pub mnt: PathBuf,
}

impl OverlayMount {
    /// `mount -t overlay overlay -o OPTS MNT`, done with mount(2).
    pub fn new(opts: &str, mnt: &Path) -> OverlayMount {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let src = CString::new("overlay").unwrap();
        let target = CString::new(mnt.as_os_str().as_bytes()).unwrap();
        let data = CString::new(opts).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                data.as_ptr() as *const libc::c_void,
            )
        };
        assert!(
            r == 0,
            "overlay mount ({opts}) failed: {}",
            std::io::Error::last_os_error()
        );
        OverlayMount {
            mnt: mnt.to_path_buf(),
        }
    }

    /// Unmounts now (lazily if still busy after a few tries).
    pub fn unmount(&mut self) {
        umount_retry(&self.mnt);
    }
}

/// umount(2) of whatever is mounted at `mnt`, retried while it is busy (a process another
/// test thread is forking may hold a reference for a moment), lazily after 5 s.
pub fn umount_retry(mnt: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let target = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    for _ in 0..250 {
        if !is_mounted(mnt) {
            return;
        }
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Mounts a tmpfs of `size` (e.g. "37m") at `dir` (created); unmounted when the guard drops.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Mount {
    fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(st.success(), "mount tmpfs at {}", dir.display());
    assert!(is_mounted(dir));
    Mount {
        mnt: dir.to_path_buf(),
    }
}
