//! Mounts for users who may not call mount(2): through fusermount3, the setuid helper of
//! fuse3, as libfuse filesystems do. The helper checks what a plain user may mount
//! (mount point owned and writable, `allow_other` only with `user_allow_other` in
//! /etc/fuse.conf, always nosuid and nodev), mounts, and hands the /dev/fuse descriptor
//! back over a socket; `fusermount3 -u` unmounts for the same user.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys;

const HELPER: &str = "fusermount3";
const FUSE_CONF: &str = "/etc/fuse.conf";

/// The helper on PATH, else in the places fuse3 installs it (mount.fuse3 runs us with
/// no PATH of the user's).
fn helper() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(HELPER))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{HELPER} not found: a non-root mount needs it (package fuse3)"))
}

/// The option names fusermount3 knows for the mount flags in `flags`.
fn flag_options(flags: u64) -> impl Iterator<Item = &'static str> {
    [
        (libc::MS_RDONLY, "ro"),
        (libc::MS_NOSUID, "nosuid"),
        (libc::MS_NODEV, "nodev"),
        (libc::MS_NOEXEC, "noexec"),
        (libc::MS_NOATIME, "noatime"),
        (libc::MS_NODIRATIME, "nodiratime"),
        (libc::MS_RELATIME, "relatime"),
        (libc::MS_STRICTATIME, "strictatime"),
        (libc::MS_SYNCHRONOUS, "sync"),
        (libc::MS_DIRSYNC, "dirsync"),
        (libc::MS_LAZYTIME, "lazytime"),
    ]
    .into_iter()
    .filter(move |(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
}

/// Escapes a value for fusermount3's option string, where `,` separates options.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace(',', "\\,")
}

/// The `-o` string for fusermount3: source name, type `fuse.stratafs`, the mount flags,
/// and the FUSE options (the helper adds fd, rootmode, user_id and group_id itself).
pub fn option_string(source: &str, flags: u64, fuse_options: &[&str]) -> String {
    let mut opts = vec![
        format!("fsname={}", escape(source)),
        "subtype=stratafs".into(),
    ];
    opts.extend(flag_options(flags).map(String::from));
    opts.extend(fuse_options.iter().map(|s| s.to_string()));
    opts.join(",")
}

/// The helper's complaint, one line, or what its exit status says.
fn helper_error(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(l) => l.to_string(),
        None => format!("{HELPER} failed ({})", out.status),
    }
}

/// What fusermount3 would refuse, checked before anything is written to the layers (a
/// refused mount changes nothing, S20): a mount point the user may not write, and
/// `allow_other` without `user_allow_other` in /etc/fuse.conf.
pub fn precheck(mountpoint: &Path, allow_other: bool) -> Result<(), String> {
    sys::check_writable(mountpoint)
        .map_err(|e| format!("the user has no write access ({e}), which fusermount3 needs"))?;
    if allow_other {
        let conf = std::fs::read_to_string(FUSE_CONF).unwrap_or_default();
        if !conf.lines().any(|l| l.trim() == "user_allow_other") {
            return Err(format!(
                "option allow_other is allowed to a user only with 'user_allow_other' in {FUSE_CONF}"
            ));
        }
    }
    Ok(())
}

/// Mounts `mountpoint` through fusermount3; returns the /dev/fuse descriptor to serve.
pub fn mount(mountpoint: &Path, options: &str) -> Result<OwnedFd, String> {
    let bin = helper()?;
    let (ours, theirs) = sys::socketpair_for_child().map_err(|e| format!("socketpair: {e}"))?;
    let child = Command::new(&bin)
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {}", bin.display(), sys::Errno::from(e)))?;
    drop(theirs);
    let received = sys::recv_fd(ours.as_fd());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{HELPER}: {}", sys::Errno::from(e)))?;
    match received {
        Ok(Some(fd)) if out.status.success() => Ok(fd),
        Ok(Some(_)) => {
            // The helper mounted and then failed: no mount is left behind without its
            // daemon.
            let _ = unmount(mountpoint);
            Err(helper_error(&out))
        }
        Ok(None) => Err(helper_error(&out)),
        Err(e) => Err(format!("{HELPER}: receiving /dev/fuse: {e}")),
    }
}

/// Unmounts through fusermount3 (lazily, as a busy mount is detached by root too).
pub fn unmount(mountpoint: &Path) -> Result<(), String> {
    let out = Command::new(helper()?)
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{HELPER}: {}", sys::Errno::from(e)))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(helper_error(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_source_type_flags_and_fuse_options() {
        let s = option_string(
            "a,b\\c",
            libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOATIME,
            &["default_permissions"],
        );
        assert_eq!(
            s,
            "fsname=a\\,b\\\\c,subtype=stratafs,ro,nodev,noatime,default_permissions"
        );
    }
}
