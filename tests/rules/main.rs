//! One or more integration tests per rule of docs/semantics.md: S1..S17 and S19 (S18, the
//! init layer, is tested in tests/initlayer.rs; S20, bad input, in tests/bad_input.rs;
//! S21..S27 in the files each rule names). Each test mounts the real binary over real
//! layer dirs, drives the merged view with ordinary syscalls and then checks three things:
//! what the merged view shows, what landed in the upper (exact names and forms), and that
//! every lower is byte-for-byte as it was before the mount (S2).
//!
//! One module per group of rules; the helpers below serve them all.
#[path = "../common/mod.rs"]
mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

mod copy_up;
mod layers;
mod merge;
mod names;
mod namespace;
mod safety;

// ------------------------------------------------------------------------------ helpers

#[track_caller]
fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[track_caller]
fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// The errno of an operation that must fail.
#[track_caller]
fn fails<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => errno(&e),
    }
}

#[track_caller]
fn assert_gone(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(md) => panic!("{} should not exist, but is {:?}", p.display(), md),
        Err(e) => assert_eq!(errno(&e), libc::ENOENT, "lstat {}: {e}", p.display()),
    }
}

fn perm(md: &fs::Metadata) -> u32 {
    md.mode() & 0o7777
}

/// Every entry of a tree below `root`, as relative paths, sorted (walks without following).
fn all_paths(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_keys()
        .filter(|k| !k.is_empty())
        .collect()
}

/// Asserts that a file in the upper is an aufs whiteout: a regular file.
#[track_caller]
fn assert_aufs_whiteout(p: &Path) {
    let md = lstat(p);
    assert!(
        md.file_type().is_file(),
        "{} should be an aufs whiteout file, is type {}",
        p.display(),
        type_char(&md)
    );
}

/// Asserts that `p` is a character device 0/0 (an overlayfs whiteout or a user's node).
#[track_caller]
fn assert_char00(p: &Path) {
    let md = lstat(p);
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "{} should be a char device 0/0, is type {} rdev {}",
        p.display(),
        type_char(&md),
        md.rdev()
    );
}

/// Unmounts and waits for the daemon to exit, so that the next mount at the same place
/// does not race with the old daemon's exit path: after an external unmount the exiting
/// daemon still calls umount2() on the mountpoint path, which unmounts whatever is mounted
/// there by then (a stratafs bug, not one of the rules tested here).
fn unmount(mut m: Mount) {
    m.unmount();
    wait_daemons_gone(&m.mnt);
}
