//! Layer directories of one test under a temp dir, and the paths and options of a
//! mount of them.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};

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

impl Layers {
    /// Mounts kernel overlayfs on these layers with the standard options plus `extra`.
    pub fn mount_overlay(&self, extra: &str) -> OverlayMount {
        let mut o = self.opts();
        if !extra.is_empty() {
            o.push(',');
            o.push_str(extra);
        }
        OverlayMount::new(&o, &self.mnt)
    }
}

impl Layers {
    /// The temp dir holding all layers (for extra dirs a test needs).
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Path inside the upper.
    pub fn up(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    /// Writes a file into the upper, creating parent dirs (before mounting).
    pub fn put_upper(&self, rel: &str, data: &str) {
        let p = self.up(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// Creates a symlink `rel` -> `target` in lower `i`, creating parent dirs.
    pub fn symlink(&self, i: usize, rel: &str, target: impl AsRef<Path>) {
        let p = self.lower(i, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// The daemon's copy-up scratch dir inside the workdir.
    pub fn scratch(&self) -> PathBuf {
        self.work.join("stratafs.work")
    }

    /// `lowerdir=...` alone: a mount without an upper.
    pub fn lowers_only_opts(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("lowerdir={}", lowers.join(":"))
    }

    /// Snapshots of every lower, to compare after the test.
    pub fn snap_lowers(&self) -> Vec<Tree> {
        self.lowers.iter().map(|p| snapshot(p)).collect()
    }

    /// Every lower is exactly as `before` recorded it (S2: the daemon never writes there).
    #[track_caller]
    pub fn assert_lowers_unchanged(&self, before: &[Tree]) {
        for (i, (p, b)) in self.lowers.iter().zip(before).enumerate() {
            assert_same_tree(&format!("lower {i} ({})", p.display()), b, &snapshot(p));
        }
    }
}
