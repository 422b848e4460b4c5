//! Shared test harness: builds layer dirs in a temp dir, mounts stratafs (the real binary,
//! a real FUSE mount) and unmounts it on Drop, even when the test fails.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stratafs"))
}

/// A set of layer directories under one temp dir: lowers l0 (top) .. lN, upper, work, mnt.
pub struct Layers {
    pub tmp: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Layers {
    pub fn new(n_lowers: usize) -> Layers {
        let tmp = tempfile::Builder::new()
            .prefix("stratafs-test.")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        let lowers: Vec<PathBuf> = (0..n_lowers).map(|i| root.join(format!("l{i}"))).collect();
        for l in &lowers {
            fs::create_dir(l).unwrap();
        }
        let upper = root.join("upper");
        let work = root.join("work");
        let mnt = root.join("mnt");
        for d in [&upper, &work, &mnt] {
            fs::create_dir(d).unwrap();
        }
        Layers {
            tmp,
            lowers,
            upper,
            work,
            mnt,
        }
    }

    /// Path inside lower `i`.
    pub fn lower(&self, i: usize, rel: &str) -> PathBuf {
        self.lowers[i].join(rel)
    }

    /// Writes a file into lower `i`, creating parent dirs.
    pub fn put(&self, i: usize, rel: &str, data: &str) {
        let p = self.lower(i, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    pub fn mkdir(&self, i: usize, rel: &str) {
        fs::create_dir_all(self.lower(i, rel)).unwrap();
    }

    /// The standard read-write option string for these layers.
    pub fn opts(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mounts with the standard options plus `extra` (comma-separated, may be empty).
    pub fn mount(&self, extra: &str) -> Mount {
        let mut o = self.opts();
        if !extra.is_empty() {
            o.push(',');
            o.push_str(extra);
        }
        Mount::new(&o, &self.mnt)
    }

    /// Path inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

/// Runs the stratafs binary with these arguments.
pub fn run_stratafs(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run stratafs")
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

    /// Unmounts now and waits until the mount is gone.
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
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// errno of an io::Error (0 when it has none).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Sorted names of a directory.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}
