//! Side by side with kernel overlayfs: the same lower layer laid out twice, kernel
//! overlayfs mounted on one and stratafs on the other, the same shell steps run in both
//! (as root, or as a plain uid), and every step must give the same exit status and stdout.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::{chmod, Layers, Mount, OverlayMount};

/// The uid of `nobody`.
pub const NOBODY: u32 = 65534;
/// A plain user that owns some files (no user-db entry needed).
pub const OWNER: u32 = 54321;

/// Who runs a step.
#[derive(Clone, Copy)]
pub enum As {
    Root,
    User(u32),
}

/// One step: a shell command run in the mount's root, or a remount of the same layers.
pub struct Step {
    pub who: As,
    pub cmd: &'static str,
}

pub fn root(cmd: &'static str) -> Step {
    Step { who: As::Root, cmd }
}

pub fn user(uid: u32, cmd: &'static str) -> Step {
    Step {
        who: As::User(uid),
        cmd,
    }
}

const REMOUNT: &str = "@remount";

/// Unmounts and mounts the same layers again (same options).
pub const REMOUNT_STEP: Step = Step {
    who: As::Root,
    cmd: REMOUNT,
};

/// Runs `cmd` with `sh -c` in `dir`; the outcome is its exit status and stdout.
pub fn run(dir: &Path, who: As, cmd: &str) -> String {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).current_dir(dir).env("LC_ALL", "C");
    if let As::User(uid) = who {
        // std drops the supplementary groups when a root parent sets the uid.
        c.uid(uid).gid(uid);
    }
    let out = c.output().expect("run sh");
    format!(
        "status {} stdout {:?}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Runs a setup command as root; it must succeed.
pub fn sh(dir: &Path, cmd: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .expect("sh");
    assert!(st.success(), "setup `{cmd}` failed");
}

/// Clears immutable/append-only flags under a test root when dropped, so that the temp
/// dir can be removed even when a step failed halfway.
pub struct Unprotect<'a>(pub &'a Path);

impl Drop for Unprotect<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-f", "-i", "-a"])
            .arg(self.0)
            .status();
    }
}

/// Which filesystem a run is on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fs {
    Overlay,
    /// fuse-overlayfs 1.x (Debian's package), the peer whose options stratafs takes.
    FuseOverlayfs,
    Strata,
}

enum Live {
    Overlay(OverlayMount),
    Strata(Mount),
}

impl Live {
    fn new(fs_kind: Fs, l: &Layers, extra: &str) -> Live {
        let opts = format!("{},{extra}", l.opts());
        let opts = opts.trim_end_matches(',');
        let run = |cmd: &mut Command, what: &str| {
            let st = cmd.arg(&l.mnt).status().expect(what);
            assert!(st.success(), "{what} mount failed");
            // Unmounted with umount2 like any mount (which ends a FUSE daemon too).
            Live::Overlay(OverlayMount { mnt: l.mnt.clone() })
        };
        match fs_kind {
            // mount(8) turns generic flags such as nosuid into mount(2) flags.
            Fs::Overlay => run(
                Command::new("mount").args(["-t", "overlay", "overlay", "-o", opts]),
                "overlay",
            ),
            Fs::FuseOverlayfs => run(
                Command::new("fuse-overlayfs").args(["-o", opts]),
                "fuse-overlayfs",
            ),
            // Mounted by root: shared with every user by default.
            Fs::Strata => Live::Strata(l.mount(extra)),
        }
    }

    fn unmount(self) {
        match self {
            Live::Overlay(mut o) => o.unmount(),
            Live::Strata(mut s) => s.unmount(),
        }
    }
}

/// Lays out the lower with `setup`, mounts with `extra` options, runs the steps, and
/// returns their outcomes.
pub fn outcomes(fs_kind: Fs, setup: fn(&Path), extra: &str, steps: &[Step]) -> Vec<String> {
    let l = Layers::new(1);
    let _unprotect = Unprotect(l.root());
    // Other users must reach the mount point through the temp dir.
    for d in [l.root(), &l.lowers[0], &l.mnt] {
        chmod(d, 0o755);
    }
    setup(&l.lowers[0]);
    let mut live = Some(Live::new(fs_kind, &l, extra));
    let mut out = Vec::new();
    for s in steps {
        if s.cmd == REMOUNT {
            if let Some(m) = live.take() {
                m.unmount();
            }
            live = Some(Live::new(fs_kind, &l, extra));
            out.push(String::new());
            continue;
        }
        out.push(run(&l.mnt, s.who, s.cmd));
    }
    if let Some(m) = live {
        m.unmount();
    }
    out
}

/// The outcome of one root step on `fs_kind`, laid out with `setup` and mounted with `extra`
/// options (for scenarios that check one filesystem's answer rather than compare two).
pub fn outcome(fs_kind: Fs, setup: fn(&Path), extra: &str, cmd: &'static str) -> String {
    outcomes(fs_kind, setup, extra, &[root(cmd)]).remove(0)
}

/// Runs the scenario on kernel overlayfs and on stratafs (both with `extra` options) and
/// asserts equal outcomes, listing every step that differs.
pub fn same_as_overlayfs_with(setup: fn(&Path), extra: &str, steps: &[Step]) {
    same_as(Fs::Overlay, setup, extra, steps)
}

/// Runs the scenario on `reference` and on stratafs (both with `extra` options) and
/// asserts equal outcomes, listing every step that differs.
pub fn same_as(reference: Fs, setup: fn(&Path), extra: &str, steps: &[Step]) {
    let want = outcomes(reference, setup, extra, steps);
    let got = outcomes(Fs::Strata, setup, extra, steps);
    let diffs: Vec<String> = steps
        .iter()
        .enumerate()
        .filter(|(i, _)| want[*i] != got[*i])
        .map(|(i, s)| {
            format!(
                "step {i} `{}`:\n  {reference:?}: {}\n  stratafs:  {}",
                s.cmd, want[i], got[i]
            )
        })
        .collect();
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
}

pub fn same_as_overlayfs(setup: fn(&Path), steps: &[Step]) {
    same_as_overlayfs_with(setup, "", steps)
}
