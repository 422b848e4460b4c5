//! One or more integration tests per rule of docs/semantics.md: S1..S17, S19 and S20
//! (S18, the init layer, is tested in tests/initlayer.rs; S21..S27 in the files each rule
//! names). Each test mounts the real binary over real layer dirs, drives the merged view
//! with ordinary syscalls and then checks three things: what the merged view shows, what
//! landed in the upper (exact names and forms), and that every lower is byte-for-byte as
//! it was before the mount (S2).
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

// ------------------------------------------------------------------------------ S1

#[test]
fn s1_lowers_top_first() {
    let l = Layers::new(3);
    l.put(0, "f", "top\n");
    l.put(1, "f", "middle\n");
    l.put(2, "f", "bottom\n");
    l.put(1, "g", "middle\n");
    l.put(2, "g", "bottom\n");
    l.put(2, "h", "bottom\n");
    l.put(0, "d/x", "top\n");
    l.put(2, "d/x", "bottom\n");
    l.put(2, "d/y", "bottom\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(read(&l.m("f")), "top\n");
    assert_eq!(read(&l.m("g")), "middle\n");
    assert_eq!(read(&l.m("h")), "bottom\n");
    assert_eq!(read(&l.m("d/x")), "top\n");
    assert_eq!(read(&l.m("d/y")), "bottom\n");
    assert_eq!(names(&l.mnt), ["d", "f", "g", "h"]);
    assert_eq!(names(&l.m("d")), ["x", "y"]);
    unmount(m);

    // The same dirs listed the other way round: the order of lowerdir= decides.
    let rev: Vec<String> = l
        .lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let m = Mount::new(&format!("lowerdir={}", rev.join(":")), &l.mnt);
    assert_eq!(read(&l.m("f")), "bottom\n");
    assert_eq!(read(&l.m("g")), "bottom\n");
    assert_eq!(read(&l.m("d/x")), "bottom\n");
    unmount(m);
    assert!(names(&l.upper).is_empty());
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s1_upper_above_every_lower() {
    let l = Layers::new(2);
    l.put(0, "f", "lower 0\n");
    l.put(1, "f", "lower 1\n");
    l.put(1, "d/a", "lower 1\n");
    l.put_upper("f", "upper\n");
    l.put_upper("d/a", "upper\n");
    l.put_upper("d/u", "upper only\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(read(&l.m("f")), "upper\n");
    assert_eq!(read(&l.m("d/a")), "upper\n");
    assert_eq!(names(&l.m("d")), ["a", "u"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s1_no_upper_is_read_only_erofs() {
    let l = Layers::new(2);
    l.put(0, "f", "data\n");
    l.put(1, "d/x", "x\n");
    l.put(1, "g", "g\n");
    set_xattr(&l.lower(0, "f"), "user.k", b"v").unwrap();
    let lo = l.snap_lowers();
    let m = Mount::new(&l.lowers_only_opts(), &l.mnt);
    let f = l.m("f");
    assert_eq!(read(&f), "data\n");
    assert_eq!(read(&l.m("d/x")), "x\n");
    let rofs = libc::EROFS;
    assert_eq!(fails(OpenOptions::new().write(true).open(&f)), rofs);
    assert_eq!(
        fails(OpenOptions::new().read(true).write(true).open(&f)),
        rofs
    );
    assert_eq!(fails(OpenOptions::new().append(true).open(&f)), rofs);
    assert_eq!(
        fails(OpenOptions::new().write(true).truncate(true).open(&f)),
        rofs
    );
    assert_eq!(fails(fs::write(l.m("new"), "x")), rofs);
    assert_eq!(fails(fs::write(l.m("d/new"), "x")), rofs);
    assert_eq!(fails(fs::create_dir(l.m("nd"))), rofs);
    assert_eq!(fails(fs::remove_file(&f)), rofs);
    assert_eq!(fails(fs::remove_file(l.m("d/x"))), rofs);
    assert_eq!(fails(fs::remove_dir(l.m("d"))), rofs);
    assert_eq!(fails(fs::rename(&f, l.m("f2"))), rofs);
    assert_eq!(fails(fs::rename(l.m("d"), l.m("d2"))), rofs);
    assert_eq!(fails(symlink("f", l.m("ln"))), rofs);
    assert_eq!(fails(fs::hard_link(&f, l.m("hl"))), rofs);
    assert_eq!(
        fails(fs::set_permissions(&f, fs::Permissions::from_mode(0o600))),
        rofs
    );
    assert_eq!(fails(std::os::unix::fs::lchown(&f, Some(1), Some(1))), rofs);
    assert_eq!(fails(set_times(&f, (1, 0), (1, 0))), rofs);
    assert_eq!(fails(truncate(&f, 0)), rofs);
    assert_eq!(fails(set_xattr(&f, "user.k2", b"v")), rofs);
    assert_eq!(fails(remove_xattr(&f, "user.k")), rofs);
    assert_eq!(
        fails(mknod(&l.m("fifo"), libc::S_IFIFO | 0o644, 0, 0)),
        rofs
    );
    assert_eq!(read(&f), "data\n");
    assert_eq!(names(&l.mnt), ["d", "f", "g"]);
    unmount(m);
    assert!(names(&l.upper).is_empty());
    assert!(names(&l.work).is_empty());
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s1_ro_option_is_read_only_erofs() {
    let l = Layers::new(1);
    l.put(0, "f", "data\n");
    let lo = l.snap_lowers();
    let m = l.mount("ro");
    assert_eq!(read(&l.m("f")), "data\n");
    assert_eq!(
        fails(OpenOptions::new().write(true).open(l.m("f"))),
        libc::EROFS
    );
    assert_eq!(fails(fs::write(l.m("new"), "x")), libc::EROFS);
    assert_eq!(fails(fs::remove_file(l.m("f"))), libc::EROFS);
    unmount(m);
    assert!(names(&l.upper).is_empty());
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S2

#[test]
fn s2_write_reaches_upper_lower_untouched() {
    let l = Layers::new(2);
    l.put(0, "dir/f", "original\n");
    l.put(1, "g", "lower g\n");
    l.put(1, "dir/h", "lower h\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("dir/f"), "changed\n").unwrap();
    OpenOptions::new()
        .append(true)
        .open(l.m("g"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    let h = OpenOptions::new().write(true).open(l.m("dir/h")).unwrap();
    h.write_all_at(b"LOWER", 0).unwrap();
    drop(h);
    assert_eq!(read(&l.m("dir/f")), "changed\n");
    assert_eq!(read(&l.m("g")), "lower g\nmore\n");
    assert_eq!(read(&l.m("dir/h")), "LOWER h\n");
    unmount(m);
    assert_eq!(read(&l.up("dir/f")), "changed\n");
    assert_eq!(read(&l.up("g")), "lower g\nmore\n");
    assert_eq!(read(&l.up("dir/h")), "LOWER h\n");
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s2_write_while_held_open_read_only() {
    let l = Layers::new(1);
    l.put(0, "f", "0123456789\n");
    l.put(0, "g", "abcdefghij\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    // A read-only open of the lower copy stays open across the copy-up.
    let mut ro = File::open(l.m("f")).unwrap();
    let mut s = String::new();
    ro.read_to_string(&mut s).unwrap();
    assert_eq!(s, "0123456789\n");
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.m("f"))
        .unwrap();
    rw.write_all_at(b"AB", 0).unwrap();
    rw.sync_all().unwrap();
    assert_eq!(read(&l.m("f")), "AB23456789\n");
    // Metadata writes through the fd opened read-only before the copy-up.
    ro.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap();
    ro.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_234_567_890))
        .unwrap();
    let name = std::ffi::CString::new("user.w").unwrap();
    // SAFETY: a valid fd, C string and buffer.
    let r = unsafe { libc::fsetxattr(ro.as_raw_fd(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0, "fsetxattr: {}", io::Error::last_os_error());
    // A lower file held open read-only, then written through a second fd before any
    // copy-up: both opens are of the same file, the write must still go to the upper.
    let ro_g = File::open(l.m("g")).unwrap();
    let rw_g = OpenOptions::new().write(true).open(l.m("g")).unwrap();
    rw_g.write_all_at(b"XY", 2).unwrap();
    drop(rw_g);
    assert_eq!(read(&l.m("g")), "abXYefghij\n");
    drop((ro, rw, ro_g));
    let md = lstat(&l.m("f"));
    assert_eq!(perm(&md), 0o600);
    assert_eq!(md.mtime(), 1_234_567_890);
    unmount(m);
    assert_eq!(read(&l.up("f")), "AB23456789\n");
    assert_eq!(perm(&lstat(&l.up("f"))), 0o600);
    assert_eq!(lstat(&l.up("f")).mtime(), 1_234_567_890);
    assert_eq!(get_xattr(&l.up("f"), "user.w").unwrap(), b"1");
    assert_eq!(read(&l.up("g")), "abXYefghij\n");
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s2_mmap_write_reaches_upper() {
    let l = Layers::new(1);
    let data = "m".repeat(8192);
    l.put(0, "f", &data);
    let lo = l.snap_lowers();
    let m = l.mount("");
    let ro = File::open(l.m("f")).unwrap();
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.m("f"))
        .unwrap();
    // SAFETY: a shared mapping of an open file of 8192 bytes; unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            rw.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
        let b = p as *mut u8;
        *b = b'X';
        *b.add(5000) = b'Y';
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
        libc::munmap(p, 8192);
    }
    drop((ro, rw));
    let mut want = data.clone().into_bytes();
    want[0] = b'X';
    want[5000] = b'Y';
    assert_eq!(fs::read(l.m("f")).unwrap(), want);
    unmount(m);
    assert_eq!(fs::read(l.up("f")).unwrap(), want);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s2_lowers_shared_by_several_mounts() {
    let l = Layers::new(2);
    l.put(0, "f", "lower f\n");
    l.put(1, "g", "lower g\n");
    l.put(1, "d/x", "lower x\n");
    let lo = l.snap_lowers();
    let root = l.root().to_path_buf();
    let (u2, w2, m2, m3) = (
        root.join("upper2"),
        root.join("work2"),
        root.join("mnt2"),
        root.join("mnt3"),
    );
    for d in [&u2, &w2, &m2, &m3] {
        fs::create_dir(d).unwrap();
    }
    let lowers = format!("{}:{}", l.lowers[0].display(), l.lowers[1].display());
    let a = l.mount("");
    let b = Mount::new(
        &format!(
            "lowerdir={lowers},upperdir={},workdir={}",
            u2.display(),
            w2.display()
        ),
        &m2,
    );
    let c = Mount::new(&format!("lowerdir={lowers}"), &m3);
    fs::write(l.m("f"), "from a\n").unwrap();
    fs::write(m2.join("f"), "from b\n").unwrap();
    fs::remove_file(l.m("g")).unwrap();
    fs::write(m2.join("new"), "new in b\n").unwrap();
    fs::write(l.m("d/x"), "x from a\n").unwrap();
    assert_eq!(read(&l.m("f")), "from a\n");
    assert_eq!(read(&m2.join("f")), "from b\n");
    assert_eq!(read(&m3.join("f")), "lower f\n");
    assert_gone(&l.m("g"));
    assert_eq!(read(&m2.join("g")), "lower g\n");
    assert_eq!(read(&m3.join("g")), "lower g\n");
    assert_gone(&l.m("new"));
    assert_eq!(read(&m2.join("new")), "new in b\n");
    assert_eq!(read(&l.m("d/x")), "x from a\n");
    assert_eq!(read(&m2.join("d/x")), "lower x\n");
    assert_eq!(read(&m3.join("d/x")), "lower x\n");
    drop((a, b, c));
    assert_eq!(all_paths(&l.upper), [".wh.g", "d", "d/x", "f"]);
    assert_eq!(all_paths(&u2), ["f", "new"]);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S3

#[test]
fn s3_workdir_leftovers_removed_at_mount() {
    let l = Layers::new(1);
    l.put(0, "f", "lower\n");
    let victim = l.root().join("victim");
    fs::write(&victim, "must survive\n").unwrap();
    let s = l.scratch();
    fs::create_dir_all(s.join("cu.1.2.dir/sub")).unwrap();
    fs::write(s.join("cu.99999.7"), "partial cop").unwrap();
    fs::write(s.join("cu.1.2.dir/sub/x"), "x").unwrap();
    fs::write(s.join(".wh..wh..opq"), "").unwrap();
    symlink(&victim, s.join("lnk")).unwrap();
    mknod(&s.join("cu.char"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert!(lstat(&s).is_dir());
    assert_eq!(names(&s), Vec::<String>::new());
    assert_eq!(names(&l.mnt), ["f"]);
    assert_eq!(read(&l.m("f")), "lower\n");
    unmount(m);
    assert_eq!(read(&victim), "must survive\n");
    assert!(names(&l.upper).is_empty());
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s3_no_temporaries_left_after_changes() {
    let l = Layers::new(2);
    for i in 0..20 {
        l.put(0, &format!("f{i}"), &format!("file {i}\n"));
    }
    l.put(0, "d/a", "a\n");
    l.put(1, "d/b", "b\n");
    l.put(1, "e/sub/x", "x\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    for i in 0..20 {
        let p = l.m(&format!("f{i}"));
        match i % 4 {
            0 => fs::write(&p, "rewritten\n").unwrap(),
            1 => fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap(),
            2 => set_xattr(&p, "user.t", b"1").unwrap(),
            _ => fs::rename(&p, l.m(&format!("g{i}"))).unwrap(),
        }
    }
    fs::rename(l.m("d"), l.m("d2")).unwrap();
    fs::remove_dir_all(l.m("e")).unwrap();
    fs::create_dir(l.m("e")).unwrap();
    assert_eq!(names(&l.scratch()), Vec::<String>::new());
    unmount(m);
    assert_eq!(names(&l.scratch()), Vec::<String>::new());
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S4

#[test]
fn s4_nondir_hides_everything_below() {
    let l = Layers::new(3);
    l.put(0, "x", "file on top\n");
    l.put(1, "x/a", "a\n");
    l.put(2, "x/b", "b\n");
    l.symlink(0, "s", "target");
    l.put(1, "s/a", "a\n");
    l.put(1, "f", "middle\n");
    l.put(2, "f/under", "dir below a file\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert!(lstat(&l.m("x")).is_file());
    assert_eq!(read(&l.m("x")), "file on top\n");
    assert_eq!(fails(fs::symlink_metadata(l.m("x/a"))), libc::ENOTDIR);
    assert!(lstat(&l.m("s")).file_type().is_symlink());
    assert_eq!(fs::read_link(l.m("s")).unwrap(), PathBuf::from("target"));
    assert_eq!(read(&l.m("f")), "middle\n");
    assert_eq!(names(&l.mnt), ["f", "s", "x"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s4_dirs_merge_until_a_nondir() {
    let l = Layers::new(4);
    l.put(0, "d/a", "a0\n");
    l.put(1, "d/a", "a1\n");
    l.put(1, "d/b", "b1\n");
    l.put(2, "d", "a file in layer 2\n");
    l.put(3, "d/c", "c3\n");
    l.put(0, "n/sub/x", "x0\n");
    l.put(1, "n/sub/y", "y1\n");
    l.put(3, "n/sub/z", "z3\n");
    l.put(3, "n/w", "w3\n");
    l.put(0, "top/a", "a\n");
    l.put(1, "top", "file under a dir\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(names(&l.m("d")), ["a", "b"]);
    assert_eq!(read(&l.m("d/a")), "a0\n");
    assert_eq!(read(&l.m("d/b")), "b1\n");
    assert_gone(&l.m("d/c"));
    assert_eq!(names(&l.m("n")), ["sub", "w"]);
    assert_eq!(names(&l.m("n/sub")), ["x", "y", "z"]);
    assert_eq!(read(&l.m("n/sub/z")), "z3\n");
    assert!(lstat(&l.m("top")).is_dir());
    assert_eq!(names(&l.m("top")), ["a"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s4_upper_merges_and_hides() {
    let l = Layers::new(2);
    l.put(0, "d/a", "a\n");
    l.put(1, "d/b", "b\n");
    l.put_upper("d/u", "u\n");
    l.put(0, "x/inside", "lower dir\n");
    l.put_upper("x", "upper file\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(names(&l.m("d")), ["a", "b", "u"]);
    assert!(lstat(&l.m("x")).is_file());
    assert_eq!(read(&l.m("x")), "upper file\n");
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S5

#[test]
fn s5_whiteout_forms_aufs_overlay_char_xattr() {
    let l = Layers::new(2);
    for dir in ["", "dir/"] {
        for n in ["a", "b", "c", "d", "e"] {
            l.put(1, &format!("{dir}{n}"), "lower 1\n");
        }
        // aufs/OCI: a file .wh.<name>
        l.put(0, &format!("{dir}.wh.a"), "");
        // overlayfs: a char device 0/0
        mknod(&l.lower(0, &format!("{dir}b")), libc::S_IFCHR | 0o600, 0, 0).unwrap();
        // overlayfs xattr form: an empty file with trusted.overlay.whiteout, in a dir
        // marked overlay.opaque="x" as overlayfs writes it (the marker is not opacity:
        // d and e below must still show)
        set_xattr(&l.lower(0, dir), "trusted.overlay.opaque", b"x").unwrap();
        l.put(0, &format!("{dir}c"), "");
        set_xattr(
            &l.lower(0, &format!("{dir}c")),
            "trusted.overlay.whiteout",
            b"y",
        )
        .unwrap();
        // not a whiteout: a plain file on top
        l.put(0, &format!("{dir}e"), "lower 0\n");
    }
    let lo = l.snap_lowers();
    for form in ["", "whiteout=overlay"] {
        let m = l.mount(form);
        for dir in ["", "dir/"] {
            for n in ["a", "b", "c"] {
                assert_gone(&l.m(&format!("{dir}{n}")));
            }
            assert_eq!(read(&l.m(&format!("{dir}d"))), "lower 1\n");
            assert_eq!(read(&l.m(&format!("{dir}e"))), "lower 0\n");
        }
        assert_eq!(names(&l.mnt), ["d", "dir", "e"], "mount option '{form}'");
        assert_eq!(names(&l.m("dir")), ["d", "e"], "mount option '{form}'");
        unmount(m);
    }
    assert!(names(&l.upper).is_empty());
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s5_whiteout_hides_below_never_its_own_layer() {
    let l = Layers::new(2);
    l.put(0, ".wh.f", "");
    l.put(0, "f", "same layer as its whiteout\n");
    l.put(1, "f", "below\n");
    l.put(0, ".wh.g", "");
    l.put(0, "g", "only here\n");
    l.put(0, "d/.wh.x", "");
    l.put(0, "d/x", "same layer x\n");
    l.put(1, "d/x", "below x\n");
    l.put(1, "d/y", "below y\n");
    l.put(1, "u", "lower u\n");
    l.put_upper(".wh.u", "");
    l.put_upper("u", "upper u\n");
    l.put(1, "v", "lower v\n");
    l.put_upper(".wh.v", "");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(read(&l.m("f")), "same layer as its whiteout\n");
    assert_eq!(read(&l.m("g")), "only here\n");
    assert_eq!(read(&l.m("d/x")), "same layer x\n");
    assert_eq!(read(&l.m("u")), "upper u\n");
    assert_gone(&l.m("v"));
    assert_eq!(names(&l.mnt), ["d", "f", "g", "u"]);
    assert_eq!(names(&l.m("d")), ["x", "y"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s5_upper_char00_is_device_under_aufs() {
    let l = Layers::new(1);
    l.put(0, "x", "lower x\n");
    l.put(0, "keep", "keep\n");
    mknod(&l.up("x"), libc::S_IFCHR | 0o644, 0, 0).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    // A char 0/0 in the upper is an ordinary node under the default whiteout=aufs.
    assert_char00(&l.m("x"));
    // mknod c 0 0 works as on ext4.
    mknod(&l.m("dev0"), libc::S_IFCHR | 0o640, 0, 0).unwrap();
    assert_char00(&l.m("dev0"));
    assert_eq!(perm(&lstat(&l.m("dev0"))), 0o640);
    assert_eq!(names(&l.mnt), ["dev0", "keep", "x"]);
    assert_eq!(raw_names(&l.mnt).len(), 5);
    unmount(m);
    assert_char00(&l.up("dev0"));
    // Still a device after a remount, and removable like one.
    let m = l.mount("");
    assert_char00(&l.m("dev0"));
    assert_char00(&l.m("x"));
    fs::remove_file(l.m("dev0")).unwrap();
    assert_gone(&l.m("dev0"));
    // Over a deleted lower name, a user's c 0 0 is a device too, not a whiteout.
    fs::remove_file(l.m("keep")).unwrap();
    mknod(&l.m("keep"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    assert_char00(&l.m("keep"));
    assert_eq!(names(&l.mnt), ["keep", "x"]);
    unmount(m);
    assert_eq!(all_paths(&l.upper), ["keep", "x"]);
    assert_char00(&l.up("keep"));
    let m = l.mount("");
    assert_char00(&l.m("keep"));
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

/// The contract is silent on mknod c 0 0 under whiteout=overlay, so overlayfs decides:
/// it refuses with EPERM (such a node would be a whiteout) and creates nothing.
#[test]
fn s5_mknod_char00_under_overlay_form_eperm_like_overlayfs() {
    let l = Layers::new(1);
    l.put(0, "x", "x\n");
    let lo = l.snap_lowers();
    let m = l.mount("whiteout=overlay");
    assert_eq!(
        fails(mknod(&l.m("dev0"), libc::S_IFCHR | 0o644, 0, 0)),
        libc::EPERM
    );
    // Other device numbers are ordinary nodes.
    mknod(&l.m("dev1"), libc::S_IFCHR | 0o644, 1, 3).unwrap();
    assert_eq!(names(&l.mnt), ["dev1", "x"]);
    unmount(m);
    assert_eq!(all_paths(&l.upper), ["dev1"]);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s5_upper_char00_is_whiteout_under_overlay() {
    let l = Layers::new(1);
    l.put(0, "x", "lower x\n");
    l.put(0, "y", "lower y\n");
    mknod(&l.up("x"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("whiteout=overlay");
    assert_gone(&l.m("x"));
    assert_eq!(names(&l.mnt), ["y"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S6

#[test]
fn s6_opaque_forms() {
    let l = Layers::new(2);
    for d in ["o1", "o2", "o3", "n"] {
        l.put(0, &format!("{d}/top"), "top\n");
        l.put(1, &format!("{d}/below"), "below\n");
        l.put(1, &format!("{d}/sub/deep"), "deep\n");
    }
    l.put(0, "o1/.wh..wh..opq", "");
    set_xattr(&l.lower(0, "o2"), "trusted.overlay.opaque", b"y").unwrap();
    set_xattr(&l.lower(0, "o3"), "user.overlay.opaque", b"y").unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    for d in ["o1", "o2", "o3"] {
        assert_eq!(names(&l.m(d)), ["top"], "{d} is opaque");
        assert_gone(&l.m(&format!("{d}/below")));
        assert_gone(&l.m(&format!("{d}/sub")));
    }
    assert_eq!(names(&l.m("n")), ["below", "sub", "top"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s6_opaque_hides_every_layer_below() {
    let l = Layers::new(3);
    l.put(0, "d/a", "a\n");
    l.put(1, "d/b", "b\n");
    l.put(1, "d/.wh..wh..opq", "");
    l.put(2, "d/c", "c\n");
    l.put(2, "d/a", "a2\n");
    l.put_upper("e/u", "u\n");
    l.put_upper("e/.wh..wh..opq", "");
    l.put(0, "e/a", "a\n");
    l.put(2, "e/c", "c\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(names(&l.m("d")), ["a", "b"]);
    assert_eq!(read(&l.m("d/a")), "a\n");
    assert_gone(&l.m("d/c"));
    assert_eq!(names(&l.m("e")), ["u"]);
    assert_gone(&l.m("e/a"));
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s6_opaque_root_of_a_layer() {
    let l = Layers::new(3);
    l.put(0, "a", "a\n");
    l.put(0, "d/x", "x\n");
    l.put(1, "b", "b\n");
    l.put(1, ".wh..wh..opq", "");
    l.put(2, "c", "c\n");
    l.put(2, "d/y", "y\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(names(&l.mnt), ["a", "b", "d"]);
    assert_eq!(names(&l.m("d")), ["x"]);
    assert_gone(&l.m("c"));
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S7

/// Deletes a lower file `f`, removes the lower dir `d` with its contents and makes `d` anew.
fn whiteout_and_opaque_ops(l: &Layers) {
    fs::remove_file(l.m("f")).unwrap();
    fs::remove_file(l.m("d/a")).unwrap();
    fs::remove_file(l.m("d/b")).unwrap();
    fs::remove_dir(l.m("d")).unwrap();
    fs::create_dir(l.m("d")).unwrap();
    assert_gone(&l.m("f"));
    assert_eq!(names(&l.m("d")), Vec::<String>::new());
}

fn s7_layers() -> Layers {
    let l = Layers::new(2);
    l.put(0, "f", "f\n");
    l.put(0, "d/a", "a\n");
    l.put(1, "d/b", "b\n");
    l.put(1, "keep", "keep\n");
    l
}

#[test]
fn s7_default_writes_aufs_forms() {
    let l = s7_layers();
    let lo = l.snap_lowers();
    let m = l.mount("");
    whiteout_and_opaque_ops(&l);
    unmount(m);
    assert_aufs_whiteout(&l.up(".wh.f"));
    assert!(lstat(&l.up(".wh.f")).file_type().is_file());
    assert!(lstat(&l.up("d")).is_dir());
    assert_aufs_whiteout(&l.up("d/.wh..wh..opq"));
    assert_eq!(all_paths(&l.upper), [".wh.f", "d", "d/.wh..wh..opq"]);
    assert_eq!(
        fails(get_xattr(&l.up("d"), "trusted.overlay.opaque")),
        libc::ENODATA
    );
    // The upper reads back the same after a remount.
    let m = l.mount("");
    assert_gone(&l.m("f"));
    assert_eq!(names(&l.m("d")), Vec::<String>::new());
    assert_eq!(names(&l.mnt), ["d", "keep"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s7_overlay_form_writes_char00_and_opaque_xattr() {
    let l = s7_layers();
    let lo = l.snap_lowers();
    let m = l.mount("whiteout=overlay");
    whiteout_and_opaque_ops(&l);
    unmount(m);
    assert_char00(&l.up("f"));
    assert!(lstat(&l.up("d")).is_dir());
    assert_eq!(
        get_xattr(&l.up("d"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(all_paths(&l.upper), ["d", "f"]);
    let m = l.mount("whiteout=overlay");
    assert_gone(&l.m("f"));
    assert_eq!(names(&l.m("d")), Vec::<String>::new());
    assert_eq!(names(&l.mnt), ["d", "keep"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s7_overlay_form_upper_mounts_in_kernel_overlayfs() {
    let l = s7_layers();
    l.put(0, "changed", "old\n");
    let lo = l.snap_lowers();
    let m = l.mount("whiteout=overlay");
    whiteout_and_opaque_ops(&l);
    fs::write(l.m("d/new"), "new in d\n").unwrap();
    fs::write(l.m("changed"), "new\n").unwrap();
    fs::write(l.m("created"), "created\n").unwrap();
    unmount(m);
    let kwork = l.root().join("kwork");
    let kmnt = l.root().join("kmnt");
    fs::create_dir(&kwork).unwrap();
    fs::create_dir(&kmnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            l.lowers[0].display(),
            l.lowers[1].display(),
            l.upper.display(),
            kwork.display()
        ))
        .arg(&kmnt)
        .status()
        .unwrap();
    assert!(st.success(), "kernel overlayfs refused the upper");
    let k = Mount { mnt: kmnt.clone() };
    assert_eq!(names(&kmnt), ["changed", "created", "d", "keep"]);
    assert_eq!(names(&kmnt.join("d")), ["new"]);
    assert_eq!(read(&kmnt.join("changed")), "new\n");
    assert_eq!(read(&kmnt.join("d/new")), "new in d\n");
    drop(k);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S8

#[test]
fn s8_wh_names_never_listed_or_looked_up() {
    let l = Layers::new(2);
    l.put(0, ".wh.gone", "");
    l.put(0, ".wh.a", "");
    l.put(0, "d/.wh..wh..opq", "");
    l.put(0, "d/x", "x\n");
    l.put(0, "d/.wh.orphan", "");
    l.put(1, "a", "a\n");
    l.put(1, "b", "b\n");
    l.put(1, ".wh.lowest", "");
    l.put_upper(".wh.c", "");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(names(&l.mnt), ["b", "d"]);
    assert_eq!(names(&l.m("d")), ["x"]);
    let mut raw = raw_names(&l.mnt);
    raw.sort();
    assert_eq!(raw, [".", "..", "b", "d"]);
    for p in [
        ".wh.gone",
        ".wh.a",
        ".wh.c",
        ".wh.lowest",
        "d/.wh..wh..opq",
        "d/.wh.orphan",
    ] {
        assert_gone(&l.m(p));
        assert_eq!(fails(File::open(l.m(p))), libc::ENOENT, "{p}");
    }
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s8_creating_reserved_names_fails_eperm() {
    let l = Layers::new(1);
    l.put(0, "f", "f\n");
    l.put(0, ".wh.f", "");
    l.mkdir(0, "d");
    let lo = l.snap_lowers();
    let m = l.mount("");
    let f = l.m("f");
    for n in [
        ".wh.x",
        ".wh..wh..opq",
        ".wh.f",
        "d/.wh.y",
        "d/.wh..wh..opq",
    ] {
        let p = l.m(n);
        assert_eq!(fails(fs::write(&p, "x")), libc::EPERM, "create {n}");
        assert_eq!(fails(fs::create_dir(&p)), libc::EPERM, "mkdir {n}");
        assert_eq!(fails(symlink("f", &p)), libc::EPERM, "symlink {n}");
        assert_eq!(
            fails(mknod(&p, libc::S_IFIFO | 0o600, 0, 0)),
            libc::EPERM,
            "mknod {n}"
        );
        assert_eq!(fails(fs::hard_link(&f, &p)), libc::EPERM, "link {n}");
        assert_eq!(fails(fs::rename(&f, &p)), libc::EPERM, "rename to {n}");
    }
    assert_eq!(read(&f), "f\n");
    assert_eq!(names(&l.mnt), ["d", "f"]);
    unmount(m);
    assert!(
        all_paths(&l.upper).iter().all(|p| !p.contains(".wh.")),
        "{:?}",
        all_paths(&l.upper)
    );
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s8_private_xattrs_hidden() {
    let l = Layers::new(1);
    l.put(0, "f", "f\n");
    let lf = l.lower(0, "f");
    set_xattr(&lf, "user.keep", b"1").unwrap();
    set_xattr(&lf, "trusted.keep", b"2").unwrap();
    set_xattr(&lf, "trusted.overlay.origin", b"xx").unwrap();
    set_xattr(&lf, "trusted.overlay.redirect", b"/elsewhere").unwrap();
    set_xattr(&lf, "user.overlay.foo", b"bar").unwrap();
    l.put(0, "o/inner", "i\n");
    set_xattr(&l.lower(0, "o"), "trusted.overlay.opaque", b"y").unwrap();
    set_xattr(&l.lower(0, "o"), "user.dirkeep", b"3").unwrap();
    set_xattr(&l.upper, "trusted.overlay.impure", b"y").unwrap();
    set_xattr(&l.upper, "user.overlay.x", b"1").unwrap();
    set_xattr(&l.upper, "user.rootkeep", b"r").unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(list_xattr(&l.mnt).unwrap(), ["user.rootkeep"]);
    assert_eq!(
        fails(get_xattr(&l.mnt, "trusted.overlay.impure")),
        libc::ENODATA
    );
    let f = l.m("f");
    assert_eq!(list_xattr(&f).unwrap(), ["trusted.keep", "user.keep"]);
    assert_eq!(get_xattr(&f, "user.keep").unwrap(), b"1");
    for x in [
        "trusted.overlay.origin",
        "trusted.overlay.redirect",
        "user.overlay.foo",
    ] {
        assert_eq!(fails(get_xattr(&f, x)), libc::ENODATA, "{x}");
    }
    assert_eq!(list_xattr(&l.m("o")).unwrap(), ["user.dirkeep"]);
    assert_eq!(
        fails(get_xattr(&l.m("o"), "trusted.overlay.opaque")),
        libc::ENODATA
    );
    // After a copy-up the view is the same plus the new name.
    set_xattr(&f, "user.new", b"4").unwrap();
    assert_eq!(
        list_xattr(&f).unwrap(),
        ["trusted.keep", "user.keep", "user.new"]
    );
    assert_eq!(fails(get_xattr(&f, "user.overlay.foo")), libc::ENODATA);
    // A directory made opaque by the daemon shows no private xattr either.
    fs::remove_file(l.m("o/inner")).unwrap();
    fs::remove_dir(l.m("o")).unwrap();
    fs::create_dir(l.m("o")).unwrap();
    assert_eq!(list_xattr(&l.m("o")).unwrap(), Vec::<String>::new());
    unmount(m);
    let m = l.mount("whiteout=overlay");
    fs::remove_dir(l.m("o")).unwrap();
    fs::create_dir(l.m("o")).unwrap();
    assert_eq!(list_xattr(&l.m("o")).unwrap(), Vec::<String>::new());
    assert_eq!(
        fails(get_xattr(&l.m("o"), "trusted.overlay.opaque")),
        libc::ENODATA
    );
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S9

/// Asserts no name appears twice and returns the names as a set.
#[track_caller]
fn no_repeats(list: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for n in list {
        assert!(seen.insert(n.clone()), "'{n}' listed twice");
    }
    seen
}

#[test]
fn s9_readdir_lists_each_name_once_with_dot_and_dotdot() {
    let l = Layers::new(3);
    l.put(0, "d/a", "a0");
    l.put(0, "d/b", "b0");
    l.put(0, "d/.wh.c", "");
    l.put(1, "d/b", "b1");
    l.put(1, "d/c", "c1");
    l.put(1, "d/e", "e1");
    l.put(1, "d/sub/x", "x1");
    l.put(2, "d/a", "a2");
    l.put(2, "d/f", "f2");
    l.put(2, "d/sub/y", "y2");
    l.put_upper("d/u", "u");
    l.put_upper("d/b", "bu");
    l.put_upper("d/.wh.e", "");
    let lo = l.snap_lowers();
    let m = l.mount("");
    let raw = raw_names(&l.m("d"));
    let set = no_repeats(&raw);
    assert_eq!(
        set.into_iter().collect::<Vec<_>>(),
        [".", "..", "a", "b", "f", "sub", "u"]
    );
    let raw = raw_names(&l.m("d/sub"));
    assert_eq!(no_repeats(&raw).len(), 4, "{raw:?}");
    assert_eq!(names(&l.m("d/sub")), ["x", "y"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s9_large_listing_split_across_calls() {
    let l = Layers::new(3);
    let name = |i: usize| format!("entry-with-a-rather-long-name-to-fill-buffers-{i:05}");
    for i in 0..1000 {
        l.put(0, &format!("d/{}", name(i)), "0");
        l.put(1, &format!("d/{}", name(i + 500)), "1");
        l.put(2, &format!("d/{}", name(i + 1000)), "2");
    }
    for i in 1200..1250 {
        l.put(0, &format!("d/.wh.{}", name(i)), "");
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    let raw = raw_names(&l.m("d"));
    let got = no_repeats(&raw);
    let mut want: BTreeSet<String> = (0..2000)
        .filter(|i| !(1200..1250).contains(i))
        .map(name)
        .collect();
    want.insert(".".into());
    want.insert("..".into());
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(read(&l.m(&format!("d/{}", name(700)))), "0");
    assert_eq!(read(&l.m(&format!("d/{}", name(1100)))), "1");
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s9_readdir_stable_while_changing() {
    let l = Layers::new(2);
    for i in 0..300 {
        l.put(0, &format!("d/a{i:03}"), "a");
        l.put(1, &format!("d/b{i:03}"), "b");
    }
    for i in 0..50 {
        l.put(1, &format!("d/a{i:03}"), "a below");
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    let d = l.m("d");
    let mut initial: BTreeSet<String> = (0..300)
        .flat_map(|i| [format!("a{i:03}"), format!("b{i:03}")])
        .collect();
    initial.insert(".".into());
    initial.insert("..".into());

    let mut dir = RawDir::open(&d);
    // First 150 entries, with the stream position after each.
    let mut first: Vec<String> = Vec::new();
    let mut pos: Vec<libc::c_long> = Vec::new();
    for _ in 0..150 {
        first.push(dir.read_name().expect("at least 150 entries"));
        pos.push(dir.tell());
    }
    // Change the directory while the handle is half read: remove 20 names already read
    // and 50 not read yet, create 200 new ones.
    let read_so_far: BTreeSet<String> = first.iter().cloned().collect();
    let mut removed: BTreeSet<String> = first[..60]
        .iter()
        .filter(|n| *n != "." && *n != "..")
        .take(20)
        .cloned()
        .collect();
    removed.extend(
        initial
            .iter()
            .filter(|n| !read_so_far.contains(*n) && *n != "." && *n != "..")
            .step_by(7)
            .take(50)
            .cloned(),
    );
    assert_eq!(removed.len(), 70);
    for n in &removed {
        fs::remove_file(d.join(n)).unwrap();
    }
    let created: BTreeSet<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    for n in &created {
        fs::write(d.join(n), "c").unwrap();
    }
    let rest = dir.read_rest();
    let all: Vec<String> = first.iter().chain(rest.iter()).cloned().collect();
    let got = no_repeats(&all);
    for n in initial.difference(&removed) {
        assert!(got.contains(n), "'{n}' was skipped");
    }
    for n in &got {
        assert!(
            initial.contains(n) || created.contains(n),
            "'{n}' is not a name of this directory"
        );
    }

    // seekdir to remembered positions replays the same listing.
    let live = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|n| !removed.contains(*n))
            .cloned()
            .collect()
    };
    for k in (0..149).step_by(9) {
        dir.seek(pos[k]);
        let replay = dir.read_rest();
        no_repeats(&replay);
        assert_eq!(
            live(&replay),
            live(&all[k + 1..]),
            "replay after seekdir to the position after entry {k}"
        );
    }
    // A rewound handle lists the directory as it is now.
    dir.rewind();
    let now = dir.read_rest();
    let now = no_repeats(&now);
    let mut want: BTreeSet<String> = initial.difference(&removed).cloned().collect();
    want.extend(created.iter().cloned());
    assert_eq!(now, want);
    drop(dir);
    let mut fresh = raw_names(&d);
    fresh.sort();
    assert_eq!(fresh, want.iter().cloned().collect::<Vec<_>>());
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S10

#[test]
fn s10_each_change_copies_up() {
    let l = Layers::new(1);
    let ops = [
        "open_wronly",
        "open_rdwr",
        "open_trunc",
        "truncate",
        "chmod",
        "chown",
        "utimes",
        "setxattr",
        "removexattr",
        "link",
        "rename",
    ];
    for op in ops {
        l.put(0, &format!("d/{op}"), &format!("lower {op}\n"));
        set_xattr(&l.lower(0, &format!("d/{op}")), "user.x", b"x").unwrap();
    }
    l.put(0, "d/untouched", "u\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    let p = |op: &str| l.m(&format!("d/{op}"));
    drop(
        OpenOptions::new()
            .write(true)
            .open(p("open_wronly"))
            .unwrap(),
    );
    drop(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(p("open_rdwr"))
            .unwrap(),
    );
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p("open_trunc"))
            .unwrap(),
    );
    truncate(&p("truncate"), 5).unwrap();
    fs::set_permissions(p("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(p("chown"), Some(1234), Some(5678)).unwrap();
    set_times(&p("utimes"), (1_000_000_000, 0), (1_100_000_000, 0)).unwrap();
    set_xattr(&p("setxattr"), "user.y", b"y").unwrap();
    remove_xattr(&p("removexattr"), "user.x").unwrap();
    fs::hard_link(p("link"), p("link2")).unwrap();
    fs::rename(p("rename"), p("renamed")).unwrap();

    // The merged view.
    assert_eq!(read(&p("open_wronly")), "lower open_wronly\n");
    assert_eq!(read(&p("open_rdwr")), "lower open_rdwr\n");
    assert_eq!(read(&p("open_trunc")), "");
    assert_eq!(read(&p("truncate")), "lower");
    assert_eq!(perm(&lstat(&p("chmod"))), 0o600);
    assert_eq!(
        (lstat(&p("chown")).uid(), lstat(&p("chown")).gid()),
        (1234, 5678)
    );
    assert_eq!(lstat(&p("utimes")).mtime(), 1_100_000_000);
    assert_eq!(get_xattr(&p("setxattr"), "user.y").unwrap(), b"y");
    assert_eq!(fails(get_xattr(&p("removexattr"), "user.x")), libc::ENODATA);
    assert_eq!(lstat(&p("link")).ino(), lstat(&p("link2")).ino());
    assert_gone(&p("rename"));
    assert_eq!(read(&p("renamed")), "lower rename\n");
    unmount(m);

    // The upper: each object has its own copy, complete.
    let u = |op: &str| l.up(&format!("d/{op}"));
    assert_eq!(
        all_paths(&l.up("d")),
        [
            ".wh.rename",
            "chmod",
            "chown",
            "link",
            "link2",
            "open_rdwr",
            "open_trunc",
            "open_wronly",
            "removexattr",
            "renamed",
            "setxattr",
            "truncate",
            "utimes",
        ]
    );
    for op in [
        "open_wronly",
        "open_rdwr",
        "chmod",
        "chown",
        "utimes",
        "setxattr",
        "link",
    ] {
        assert_eq!(read(&u(op)), format!("lower {op}\n"), "{op}");
        assert_eq!(get_xattr(&u(op), "user.x").unwrap(), b"x", "{op}");
    }
    assert_eq!(read(&u("open_trunc")), "");
    assert_eq!(read(&u("truncate")), "lower");
    assert_eq!(read(&u("renamed")), "lower rename\n");
    assert_eq!(perm(&lstat(&u("chmod"))), 0o600);
    assert_eq!(
        (lstat(&u("chown")).uid(), lstat(&u("chown")).gid()),
        (1234, 5678)
    );
    assert_eq!(lstat(&u("utimes")).mtime(), 1_100_000_000);
    assert_eq!(get_xattr(&u("setxattr"), "user.y").unwrap(), b"y");
    assert_eq!(fails(get_xattr(&u("removexattr"), "user.x")), libc::ENODATA);
    assert_eq!(lstat(&u("link")).ino(), lstat(&u("link2")).ino());
    assert_eq!(lstat(&u("link")).nlink(), 2);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s10_read_only_access_never_copies_up() {
    let l = Layers::new(2);
    l.put(0, "f", "f\n");
    set_xattr(&l.lower(0, "f"), "user.x", b"x").unwrap();
    l.put(0, "d/g", "g\n");
    l.put(1, "d/h", "h\n");
    l.put(1, "d/sub/deep", "deep\n");
    l.symlink(0, "ln", "f");
    l.symlink(1, "d/ln2", "../f");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(read(&l.m("f")), "f\n");
    assert_eq!(read(&l.m("d/h")), "h\n");
    assert_eq!(read(&l.m("d/sub/deep")), "deep\n");
    let mut fd = File::open(l.m("d/g")).unwrap();
    let mut s = String::new();
    fd.read_to_string(&mut s).unwrap();
    fd.seek(SeekFrom::Start(0)).unwrap();
    drop(fd);
    for p in [
        "",
        "f",
        "d",
        "d/g",
        "d/h",
        "ln",
        "d/ln2",
        "d/sub",
        "d/sub/deep",
    ] {
        lstat(&l.m(p));
        let _ = fs::metadata(l.m(p));
    }
    assert_eq!(fs::read_link(l.m("ln")).unwrap(), PathBuf::from("f"));
    assert_eq!(fs::read_link(l.m("d/ln2")).unwrap(), PathBuf::from("../f"));
    assert_eq!(read(&l.m("ln")), "f\n");
    assert_eq!(names(&l.mnt), ["d", "f", "ln"]);
    assert_eq!(names(&l.m("d")), ["g", "h", "ln2", "sub"]);
    raw_names(&l.m("d/sub"));
    assert_eq!(list_xattr(&l.m("f")).unwrap(), ["user.x"]);
    assert_eq!(get_xattr(&l.m("f"), "user.x").unwrap(), b"x");
    let c = cpath(&l.m("f"));
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::access(c.as_ptr(), libc::R_OK) }, 0);
    assert_eq!(all_paths(&l.upper), Vec::<String>::new());
    unmount(m);
    assert_eq!(all_paths(&l.upper), Vec::<String>::new());
    assert_eq!(names(&l.scratch()), Vec::<String>::new());
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S11

#[test]
fn s11_copyup_keeps_data_mode_owner_times_xattrs() {
    let l = Layers::new(1);
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let lf = l.lower(0, "dir/f");
    fs::create_dir_all(lf.parent().unwrap()).unwrap();
    fs::write(&lf, &data).unwrap();
    set_xattr(&lf, "user.a", b"1").unwrap();
    set_xattr(&lf, "user.b", &[0, 1, 2, 255]).unwrap();
    set_xattr(&lf, "trusted.t", b"t").unwrap();
    std::os::unix::fs::chown(&lf, Some(1234), Some(5678)).unwrap();
    chmod(&lf, 0o4751);
    set_times(&lf, (1_000_000_000, 111), (1_100_000_000, 222_333_444)).unwrap();
    let ld = l.lower(0, "dir");
    std::os::unix::fs::chown(&ld, Some(42), Some(43)).unwrap();
    chmod(&ld, 0o750);
    set_times(&ld, (1_200_000_000, 5), (1_200_000_000, 6)).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    // The first write-open copies up without changing anything.
    drop(OpenOptions::new().write(true).open(l.m("dir/f")).unwrap());
    let md = lstat(&l.m("dir/f"));
    assert_eq!(perm(&md), 0o4751);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 222_333_444));
    unmount(m);
    let u = l.up("dir/f");
    let md = lstat(&u);
    assert_eq!(fs::read(&u).unwrap(), data);
    assert_eq!(perm(&md), 0o4751);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 111));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 222_333_444));
    // Besides the union's private ones (the copy records its inode number).
    let public: Vec<String> = list_xattr(&u)
        .unwrap()
        .into_iter()
        .filter(|n| !n.starts_with("trusted.stratafs."))
        .collect();
    assert_eq!(public, ["trusted.t", "user.a", "user.b"]);
    assert_eq!(get_xattr(&u, "user.b").unwrap(), [0, 1, 2, 255]);
    assert_eq!(get_xattr(&u, "trusted.t").unwrap(), b"t");
    let md = lstat(&l.up("dir"));
    assert_eq!(perm(&md), 0o750);
    assert_eq!((md.uid(), md.gid()), (42, 43));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_200_000_000, 6));
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s11_sparse_holes_stay_holes() {
    const SIZE: u64 = 64 << 20;
    let l = Layers::new(1);
    let lf = l.lower(0, "sparse");
    {
        let f = File::create(&lf).unwrap();
        f.set_len(SIZE).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        f.write_all_at(b"tail", SIZE - 4).unwrap();
    }
    let lower_blocks = lstat(&lf).blocks();
    assert!(lower_blocks < 2048, "the test fs keeps holes");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::set_permissions(l.m("sparse"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut buf = [0u8; 6];
    let f = File::open(l.m("sparse")).unwrap();
    f.read_exact_at(&mut buf[..4], 0).unwrap();
    assert_eq!(&buf[..4], b"head");
    f.read_exact_at(&mut buf, 32 << 20).unwrap();
    assert_eq!(&buf, b"middle");
    f.read_exact_at(&mut buf[..4], SIZE - 4).unwrap();
    assert_eq!(&buf[..4], b"tail");
    drop(f);
    unmount(m);
    let u = l.up("sparse");
    let md = lstat(&u);
    assert_eq!(md.len(), SIZE);
    assert!(
        md.blocks() * 512 < (1 << 20),
        "copy-up filled the holes: {} blocks of 512 bytes",
        md.blocks()
    );
    let f = File::open(&u).unwrap();
    // SAFETY: a valid fd.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert!(
        hole > 0 && (hole as u64) < (32 << 20),
        "first hole at {hole}"
    );
    assert_eq!(file_digest(&u), file_digest(&lf));
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s11_symlink_copy_keeps_target_owner_times() {
    let l = Layers::new(1);
    l.symlink(0, "ln", "some/relative/target");
    l.symlink(0, "abs", "/abs/target/that/does/not/exist");
    std::os::unix::fs::lchown(l.lower(0, "ln"), Some(77), Some(88)).unwrap();
    set_times(&l.lower(0, "ln"), (1_300_000_000, 1), (1_300_000_000, 9)).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    set_xattr(&l.m("ln"), "trusted.k", b"v").unwrap();
    fs::rename(l.m("abs"), l.m("abs2")).unwrap();
    assert_eq!(
        fs::read_link(l.m("ln")).unwrap(),
        PathBuf::from("some/relative/target")
    );
    assert_eq!(
        fs::read_link(l.m("abs2")).unwrap(),
        PathBuf::from("/abs/target/that/does/not/exist")
    );
    unmount(m);
    let md = lstat(&l.up("ln"));
    assert!(md.file_type().is_symlink());
    assert_eq!(
        fs::read_link(l.up("ln")).unwrap(),
        PathBuf::from("some/relative/target")
    );
    assert_eq!((md.uid(), md.gid()), (77, 88));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_300_000_000, 9));
    assert_eq!(get_xattr(&l.up("ln"), "trusted.k").unwrap(), b"v");
    assert_eq!(
        fs::read_link(l.up("abs2")).unwrap(),
        PathBuf::from("/abs/target/that/does/not/exist")
    );
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s11_missing_parents_created_with_lower_attrs() {
    let l = Layers::new(2);
    l.put(0, "a/b/c/f", "f\n");
    l.put(1, "a/b/other", "o\n");
    l.put(1, "a/b/c/g", "g\n");
    let attrs = [
        ("a/b/c", 0o700, 5, 6, 1_000_000_003),
        ("a/b", 0o705, 3, 4, 1_000_000_002),
        ("a", 0o751, 1, 2, 1_000_000_001),
    ];
    for (p, mode, uid, gid, t) in attrs {
        let d = l.lower(0, p);
        std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        chmod(&d, mode);
        set_times(&d, (t, 0), (t, 7)).unwrap();
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    OpenOptions::new()
        .append(true)
        .open(l.m("a/b/c/f"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    // Copy-up is invisible in the merged view: the dirs keep their attributes.
    for (p, mode, uid, gid, t) in attrs {
        let md = lstat(&l.m(p));
        assert_eq!(perm(&md), mode, "{p}");
        assert_eq!((md.uid(), md.gid()), (uid, gid), "{p}");
        assert_eq!((md.mtime(), md.mtime_nsec()), (t, 7), "{p}");
    }
    assert_eq!(names(&l.m("a/b")), ["c", "other"]);
    assert_eq!(names(&l.m("a/b/c")), ["f", "g"]);
    unmount(m);
    for (p, mode, uid, gid, t) in attrs {
        let md = lstat(&l.up(p));
        assert!(md.is_dir(), "{p}");
        assert_eq!(perm(&md), mode, "{p}");
        assert_eq!((md.uid(), md.gid()), (uid, gid), "{p}");
        assert_eq!((md.mtime(), md.mtime_nsec()), (t, 7), "{p}");
    }
    assert_eq!(read(&l.up("a/b/c/f")), "f\nmore\n");
    assert_eq!(all_paths(&l.upper), ["a", "a/b", "a/b/c", "a/b/c/f"]);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S12

#[test]
fn s12_concurrent_copyup_one_copy() {
    const FILES: usize = 12;
    const THREADS: usize = 8;
    const SIZE: usize = 1 << 20;
    let l = Layers::new(1);
    let body = ".".repeat(SIZE);
    for i in 0..FILES {
        l.put(0, &format!("f{i}"), &body);
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    for i in 0..FILES {
        let p = l.m(&format!("f{i}"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (p, barrier) = (p.clone(), barrier.clone());
                std::thread::spawn(move || -> io::Result<()> {
                    barrier.wait();
                    let f = OpenOptions::new().read(true).write(true).open(&p)?;
                    f.write_all_at(&[b'A' + t as u8], (t * 4096 + 100) as u64)?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
    let mut want = body.clone().into_bytes();
    for t in 0..THREADS {
        want[t * 4096 + 100] = b'A' + t as u8;
    }
    for i in 0..FILES {
        let got = fs::read(l.m(&format!("f{i}"))).unwrap();
        assert!(got == want, "f{i}: a concurrent writer's change was lost");
    }
    assert_eq!(names(&l.scratch()), Vec::<String>::new());
    unmount(m);
    let mut want_names: Vec<String> = (0..FILES).map(|i| format!("f{i}")).collect();
    want_names.sort();
    assert_eq!(all_paths(&l.upper), want_names);
    for i in 0..FILES {
        assert!(
            fs::read(l.up(&format!("f{i}"))).unwrap() == want,
            "upper f{i}"
        );
    }
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s12_parallel_creates_in_lower_only_dirs() {
    const THREADS: usize = 8;
    let l = Layers::new(2);
    for t in 0..THREADS {
        l.put(0, &format!("a/b/c{}/seed", t % 3), "s\n");
    }
    l.put(1, "a/b/below", "b\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (dir, barrier) = (l.m(&format!("a/b/c{}", t % 3)), barrier.clone());
            std::thread::spawn(move || -> io::Result<()> {
                barrier.wait();
                for i in 0..20 {
                    fs::write(dir.join(format!("t{t}-{i}")), format!("{t} {i}\n"))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    for c in 0..3 {
        let mut want: Vec<String> = (0..THREADS)
            .filter(|t| t % 3 == c)
            .flat_map(|t| (0..20).map(move |i| format!("t{t}-{i}")))
            .collect();
        want.push("seed".into());
        want.sort();
        assert_eq!(names(&l.m(&format!("a/b/c{c}"))), want, "c{c}");
    }
    assert_eq!(names(&l.m("a/b")), ["below", "c0", "c1", "c2"]);
    assert_eq!(read(&l.m("a/b/c1/t4-7")), "4 7\n");
    assert_eq!(names(&l.scratch()), Vec::<String>::new());
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

/// Empties a directory.
fn clear_dir(d: &Path) {
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if lstat(&p).is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
}

#[test]
fn s12_copyup_atomic_under_kill9() {
    const SIZE: usize = 64 << 20;
    let l = Layers::new(1);
    {
        let mut f = File::create(l.lower(0, "big")).unwrap();
        let chunk: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 253) as u8 + 1).collect();
        for _ in 0..SIZE >> 20 {
            f.write_all(&chunk).unwrap();
        }
    }
    let lo = l.snap_lowers();
    let want = file_digest(&l.lower(0, "big"));
    for delay_ms in [0u64, 3, 10, 25, 50, 100, 200] {
        clear_dir(&l.upper);
        clear_dir(&l.work);
        let mut child = spawn_foreground(&l.opts(), &l.mnt);
        let guard = Mount { mnt: l.mnt.clone() };
        let target = l.m("big");
        let writer = std::thread::spawn(move || {
            OpenOptions::new()
                .write(true)
                .open(target)
                .map(|f| f.write_all_at(b"Z", 0))
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = writer.join().unwrap();
        drop(guard);
        // The upper holds the old view (no copy) or the whole file, never a part of it.
        let ups = all_paths(&l.upper);
        assert!(
            ups.is_empty() || ups == ["big"],
            "kill after {delay_ms} ms left {ups:?} in the upper"
        );
        if !ups.is_empty() {
            assert!(
                complete_copy(&l.up("big"), want),
                "kill after {delay_ms} ms left a partial copy in the upper"
            );
        }
        // Remounted, the view is complete and the scratch dir is clean (S3).
        let m = l.mount("");
        assert_eq!(names(&l.scratch()), Vec::<String>::new());
        assert!(
            complete_copy(&l.m("big"), want),
            "kill after {delay_ms} ms: the merged view shows a partial file"
        );
        unmount(m);
    }
    l.assert_lowers_unchanged(&lo);
}

/// Whether `p` holds the data of digest `want`, allowing the one-byte write ("Z" at 0)
/// that the test makes after the copy-up.
fn complete_copy(p: &Path, want: (u64, u64)) -> bool {
    use std::hash::Hasher;
    let mut data = fs::read(p).unwrap();
    if data.first() == Some(&b'Z') {
        data[0] = 1;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in data.chunks(1 << 20) {
        h.write(c);
    }
    (data.len() as u64, h.finish()) == want
}

// ------------------------------------------------------------------------------ S13

#[test]
fn s13_ino_stable_across_copyup_and_hardlinks() {
    let l = Layers::new(1);
    l.put(0, "f", "lower f\n");
    l.put(0, "g", "lower g\n");
    l.put(0, "d/x", "x\n");
    l.put_upper("h1", "upper link\n");
    fs::hard_link(l.up("h1"), l.up("h2")).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    let root_dev = lstat(&l.mnt).dev();
    let f = l.m("f");
    let i_f = lstat(&f).ino();
    let ro = File::open(&f).unwrap();
    assert_eq!(ro.metadata().unwrap().ino(), i_f);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(lstat(&f).ino(), i_f, "st_ino changed by copy-up");
    assert_eq!(ro.metadata().unwrap().ino(), i_f);
    fs::write(&f, "new\n").unwrap();
    assert_eq!(lstat(&f).ino(), i_f);
    drop(ro);
    drop_caches();
    assert_eq!(
        lstat(&f).ino(),
        i_f,
        "st_ino changed after the kernel forgot the inode"
    );

    // Hard links made through the mount (the source is copied up first).
    let i_g = lstat(&l.m("g")).ino();
    fs::hard_link(l.m("g"), l.m("d/g2")).unwrap();
    assert_eq!(lstat(&l.m("g")).ino(), i_g);
    assert_eq!(lstat(&l.m("d/g2")).ino(), i_g);
    assert_eq!(lstat(&l.m("g")).nlink(), 2);
    assert_eq!(lstat(&l.m("d/g2")).nlink(), 2);
    drop_caches();
    assert_eq!(lstat(&l.m("d/g2")).ino(), i_g);
    assert_eq!(lstat(&l.m("g")).ino(), i_g);
    fs::remove_file(l.m("g")).unwrap();
    assert_eq!(lstat(&l.m("d/g2")).ino(), i_g);
    assert_eq!(lstat(&l.m("d/g2")).nlink(), 1);
    fs::rename(l.m("d/g2"), l.m("g3")).unwrap();
    assert_eq!(lstat(&l.m("g3")).ino(), i_g);

    // Hard links that were in the upper already.
    let h1 = lstat(&l.m("h1"));
    let h2 = lstat(&l.m("h2"));
    assert_eq!(h1.ino(), h2.ino());
    assert_eq!((h1.nlink(), h2.nlink()), (2, 2));
    fs::remove_file(l.m("h1")).unwrap();
    assert_eq!(lstat(&l.m("h2")).ino(), h2.ino());
    assert_eq!(lstat(&l.m("h2")).nlink(), 1);

    // Directories keep theirs through the implicit copy-up of a parent, and the children
    // of a renamed merged directory keep theirs.
    let i_d = lstat(&l.m("d")).ino();
    let i_dx = lstat(&l.m("d/x")).ino();
    fs::write(l.m("d/made"), "m\n").unwrap();
    assert_eq!(lstat(&l.m("d")).ino(), i_d, "dir st_ino changed by copy-up");
    fs::rename(l.m("d"), l.m("d_renamed")).unwrap();
    assert_eq!(lstat(&l.m("d_renamed")).ino(), i_d);
    assert_eq!(lstat(&l.m("d_renamed/x")).ino(), i_dx);
    drop_caches();
    assert_eq!(lstat(&l.m("d_renamed/x")).ino(), i_dx);
    fs::rename(l.m("d_renamed"), l.m("d")).unwrap();

    // One st_dev, distinct numbers for distinct objects.
    let objs = ["", "f", "g3", "h2", "d", "d/x"];
    let mut inos = BTreeMap::new();
    for o in objs {
        let md = lstat(&l.m(o));
        assert_eq!(md.dev(), root_dev, "{o}");
        if let Some(other) = inos.insert(md.ino(), o) {
            panic!("'{o}' and '{other}' share st_ino {}", md.ino());
        }
    }
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

/// Two lower names of one lower inode, then a write through the first name.
fn lower_hardlink_pair() -> Layers {
    let l = Layers::new(1);
    l.put(0, "h1", "old\n");
    fs::hard_link(l.lower(0, "h1"), l.lower(0, "h2")).unwrap();
    l
}

#[test]
fn s10_copyup_of_lower_hardlink_lands_at_the_name_written() {
    let l = lower_hardlink_pair();
    let lo = l.snap_lowers();
    let m = l.mount("");
    lstat(&l.m("h1"));
    lstat(&l.m("h2"));
    fs::write(l.m("h1"), "new\n").unwrap();
    assert_eq!(read(&l.m("h1")), "new\n");
    unmount(m);
    assert!(
        all_paths(&l.upper).contains(&"h1".to_string()),
        "writing through h1 did not copy up h1: upper holds {:?}",
        all_paths(&l.upper)
    );
    assert_eq!(read(&l.up("h1")), "new\n");
    let m = l.mount("");
    assert_eq!(
        read(&l.m("h1")),
        "new\n",
        "the write through h1 is not at h1"
    );
    let h2 = read(&l.m("h2"));
    // h2 is either still linked to h1 (same object) or the untouched lower copy.
    assert!(h2 == "new\n" || h2 == "old\n", "h2 reads {h2:?}");
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s13_lower_hardlinks_after_copyup_distinct_or_linked() {
    let l = lower_hardlink_pair();
    let lo = l.snap_lowers();
    let m = l.mount("");
    let (a, b) = (lstat(&l.m("h1")), lstat(&l.m("h2")));
    assert_eq!(a.ino(), b.ino(), "two names of one object");
    fs::write(l.m("h1"), "new\n").unwrap();
    for round in ["after the write", "after the kernel dropped its caches"] {
        let (c1, c2) = (read(&l.m("h1")), read(&l.m("h2")));
        let (i1, i2) = (lstat(&l.m("h1")).ino(), lstat(&l.m("h2")).ino());
        assert_eq!(c1, "new\n", "{round}");
        if c1 == c2 {
            assert_eq!(i1, i2, "{round}: one object, two st_ino");
        } else {
            assert_ne!(i1, i2, "{round}: h1 {c1:?} and h2 {c2:?} share st_ino {i1}");
        }
        fs::write("/proc/sys/vm/drop_caches", "3").unwrap_or(());
    }
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s13_one_dev_distinct_inos_across_filesystems() {
    let mut l = Layers::new(0);
    // Two lowers on two fresh tmpfs: their raw inode numbers overlap.
    let t0 = mount_tmpfs(&l.root().join("t0"), "16m");
    let t1 = mount_tmpfs(&l.root().join("t1"), "16m");
    l.lowers = vec![l.root().join("t0"), l.root().join("t1")];
    for i in 0..100 {
        l.put(0, &format!("a{i}"), "0");
        l.put(1, &format!("b{i}"), "1");
        l.put(0, &format!("d{}/x", i % 10), "0");
        l.put(1, &format!("d{}/y", i % 10), "1");
    }
    for i in 0..50 {
        l.put_upper(&format!("u{i}"), "u");
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    let root_dev = lstat(&l.mnt).dev();
    let mut inos: BTreeMap<u64, String> = BTreeMap::new();
    let mut check = |rel: String| {
        let md = lstat(&l.m(&rel));
        assert_eq!(md.dev(), root_dev, "{rel}");
        if let Some(other) = inos.insert(md.ino(), rel.clone()) {
            panic!("'{rel}' and '{other}' share st_ino {}", md.ino());
        }
    };
    for n in names(&l.mnt) {
        if n.starts_with('d') {
            for k in names(&l.m(&n)) {
                check(format!("{n}/{k}"));
            }
        }
        check(n);
    }
    // New objects get fresh numbers too.
    for i in 0..30 {
        fs::write(l.m(&format!("n{i}")), "n").unwrap();
        check(format!("n{i}"));
    }
    assert_eq!(inos.len(), 100 + 100 + 50 + 10 + 20 + 30);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
    drop((t1, t0));
}

#[test]
fn s13_live_objects_never_share_ino() {
    let l = Layers::new(1);
    l.put(0, "lower", "l\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("a"), "a\n").unwrap();
    let fa = File::open(l.m("a")).unwrap();
    let fl = File::open(l.m("lower")).unwrap();
    fs::write(l.m("lower"), "copied\n").unwrap();
    let (ia, il) = (fa.metadata().unwrap().ino(), fl.metadata().unwrap().ino());
    fs::remove_file(l.m("a")).unwrap();
    fs::remove_file(l.m("lower")).unwrap();
    for i in 0..50 {
        let p = l.m(&format!("n{i}"));
        fs::write(&p, "n\n").unwrap();
        let ino = lstat(&p).ino();
        assert!(
            ino != ia && ino != il,
            "n{i} got the st_ino of an open unlinked file"
        );
    }
    assert_eq!(fa.metadata().unwrap().ino(), ia);
    assert_eq!(fl.metadata().unwrap().ino(), il);
    drop((fa, fl));
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S14

#[test]
fn s14_unlink_lower_file_writes_whiteout() {
    let l = Layers::new(2);
    l.put(0, "f", "f0\n");
    l.put(1, "f", "f1\n");
    l.put(0, "d/g", "g\n");
    l.put(1, "d/h", "h\n");
    l.put(1, "only_below", "b\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::remove_file(l.m("f")).unwrap();
    fs::remove_file(l.m("d/g")).unwrap();
    fs::remove_file(l.m("only_below")).unwrap();
    assert_gone(&l.m("f"));
    assert_gone(&l.m("d/g"));
    assert_gone(&l.m("only_below"));
    assert_eq!(names(&l.mnt), ["d"]);
    assert_eq!(names(&l.m("d")), ["h"]);
    unmount(m);
    assert_aufs_whiteout(&l.up(".wh.f"));
    assert_aufs_whiteout(&l.up("d/.wh.g"));
    assert_aufs_whiteout(&l.up(".wh.only_below"));
    assert_eq!(
        all_paths(&l.upper),
        [".wh.f", ".wh.only_below", "d", "d/.wh.g"]
    );
    // The lower copies stay hidden after a remount.
    let m = l.mount("");
    assert_gone(&l.m("f"));
    assert_eq!(names(&l.mnt), ["d"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s14_unlink_removes_upper_copy_then_whiteouts() {
    let l = Layers::new(1);
    l.put(0, "f", "lower\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("f"), "copied up\n").unwrap();
    assert_eq!(read(&l.up("f")), "copied up\n");
    fs::remove_file(l.m("f")).unwrap();
    assert_gone(&l.m("f"));
    // An object only in the upper leaves nothing behind.
    fs::write(l.m("n"), "new\n").unwrap();
    fs::create_dir(l.m("nd")).unwrap();
    fs::write(l.m("nd/x"), "x\n").unwrap();
    fs::remove_file(l.m("n")).unwrap();
    fs::remove_file(l.m("nd/x")).unwrap();
    fs::remove_dir(l.m("nd")).unwrap();
    assert_eq!(names(&l.mnt), Vec::<String>::new());
    unmount(m);
    assert_eq!(all_paths(&l.upper), [".wh.f"]);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s14_rmdir_merged_dir_enotempty_until_empty() {
    let l = Layers::new(2);
    l.put(0, "d/a", "a\n");
    l.put(1, "d/b", "b\n");
    l.mkdir(1, "e/sub");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("d/c"), "c\n").unwrap();
    assert_eq!(fails(fs::remove_dir(l.m("d"))), libc::ENOTEMPTY);
    fs::remove_file(l.m("d/a")).unwrap();
    fs::remove_file(l.m("d/c")).unwrap();
    assert_eq!(fails(fs::remove_dir(l.m("d"))), libc::ENOTEMPTY);
    assert_eq!(names(&l.m("d")), ["b"]);
    fs::remove_file(l.m("d/b")).unwrap();
    fs::remove_dir(l.m("d")).unwrap();
    assert_gone(&l.m("d"));
    assert_eq!(fails(fs::remove_dir(l.m("e"))), libc::ENOTEMPTY);
    fs::remove_dir(l.m("e/sub")).unwrap();
    fs::remove_dir(l.m("e")).unwrap();
    assert_eq!(names(&l.mnt), Vec::<String>::new());
    unmount(m);
    assert_eq!(all_paths(&l.upper), [".wh.d", ".wh.e"]);
    let m = l.mount("");
    assert_eq!(names(&l.mnt), Vec::<String>::new());
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s14_whiteout_comes_back_after_recreate_and_remove() {
    for form in ["", "whiteout=overlay"] {
        let l = Layers::new(2);
        l.put(0, "f", "f0\n");
        l.put(1, "f", "f1\n");
        l.put(1, "x", "a file below\n");
        l.put(0, "d/a", "a\n");
        let lo = l.snap_lowers();
        let m = l.mount(form);
        // delete, recreate, delete again: the lower copies stay hidden
        fs::remove_file(l.m("f")).unwrap();
        fs::write(l.m("f"), "mine\n").unwrap();
        fs::remove_file(l.m("f")).unwrap();
        assert_gone(&l.m("f"));
        // a dir made over a deleted lower file, then removed
        fs::remove_file(l.m("x")).unwrap();
        fs::create_dir(l.m("x")).unwrap();
        fs::remove_dir(l.m("x")).unwrap();
        assert_gone(&l.m("x"));
        // a dir made over a deleted lower dir, then removed
        fs::remove_dir_all(l.m("d")).unwrap();
        fs::create_dir(l.m("d")).unwrap();
        fs::remove_dir(l.m("d")).unwrap();
        assert_gone(&l.m("d"));
        assert_eq!(names(&l.mnt), Vec::<String>::new(), "option '{form}'");
        unmount(m);
        let m = l.mount(form);
        assert_eq!(names(&l.mnt), Vec::<String>::new(), "option '{form}'");
        unmount(m);
        l.assert_lowers_unchanged(&lo);
    }
}

// ------------------------------------------------------------------------------ S15

#[test]
fn s15_create_over_whiteout_removes_it() {
    for form in ["", "whiteout=overlay"] {
        let l = Layers::new(1);
        l.put(0, "f", "lower f\n");
        l.put(0, "s", "lower s\n");
        l.put(0, "n", "lower n\n");
        l.put(0, "h", "lower h\n");
        let lo = l.snap_lowers();
        let m = l.mount(form);
        for x in ["f", "s", "n", "h"] {
            fs::remove_file(l.m(x)).unwrap();
        }
        fs::write(l.m("f"), "new f\n").unwrap();
        symlink("target", l.m("s")).unwrap();
        mknod(&l.m("n"), libc::S_IFIFO | 0o600, 0, 0).unwrap();
        fs::hard_link(l.m("f"), l.m("h")).unwrap();
        assert_eq!(read(&l.m("f")), "new f\n");
        assert_eq!(read(&l.m("h")), "new f\n");
        assert_eq!(fs::read_link(l.m("s")).unwrap(), PathBuf::from("target"));
        assert!(lstat(&l.m("n")).file_type().is_fifo());
        unmount(m);
        assert_eq!(all_paths(&l.upper), ["f", "h", "n", "s"], "option '{form}'");
        assert!(lstat(&l.up("f")).is_file());
        assert!(lstat(&l.up("n")).file_type().is_fifo());
        let m = l.mount(form);
        assert_eq!(read(&l.m("f")), "new f\n");
        assert_eq!(names(&l.mnt), ["f", "h", "n", "s"]);
        unmount(m);
        l.assert_lowers_unchanged(&lo);
    }
}

#[test]
fn s15_mkdir_over_whiteout_is_opaque() {
    for form in ["", "whiteout=overlay"] {
        let l = Layers::new(2);
        l.put(0, "d/a", "a\n");
        l.put(0, "d/sub/x", "x\n");
        l.put(1, "d/b", "b\n");
        l.put(1, "p", "a file below\n");
        let lo = l.snap_lowers();
        let m = l.mount(form);
        fs::remove_dir_all(l.m("d")).unwrap();
        fs::remove_file(l.m("p")).unwrap();
        fs::create_dir(l.m("d")).unwrap();
        fs::create_dir(l.m("p")).unwrap();
        assert_eq!(names(&l.m("d")), Vec::<String>::new(), "option '{form}'");
        assert_eq!(names(&l.m("p")), Vec::<String>::new());
        assert_gone(&l.m("d/a"));
        assert_gone(&l.m("d/b"));
        fs::write(l.m("d/new"), "new\n").unwrap();
        unmount(m);
        if form.is_empty() {
            assert_aufs_whiteout(&l.up("d/.wh..wh..opq"));
        } else {
            assert_eq!(
                get_xattr(&l.up("d"), "trusted.overlay.opaque").unwrap(),
                b"y"
            );
        }
        let m = l.mount(form);
        assert_eq!(names(&l.m("d")), ["new"], "option '{form}'");
        assert_eq!(names(&l.mnt), ["d", "p"]);
        unmount(m);
        l.assert_lowers_unchanged(&lo);
    }
}

// ------------------------------------------------------------------------------ S16

#[test]
fn s16_rename_lower_files() {
    let l = Layers::new(2);
    l.put(0, "a", "A\n");
    l.put(1, "a", "A below\n");
    l.put(0, "b", "B\n");
    l.mkdir(1, "d");
    l.put(0, "x", "X\n");
    l.put(1, "y", "Y\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::rename(l.m("a"), l.m("c")).unwrap();
    fs::rename(l.m("b"), l.m("d/b")).unwrap();
    fs::rename(l.m("x"), l.m("y")).unwrap();
    let check = || {
        assert_gone(&l.m("a"));
        assert_gone(&l.m("b"));
        assert_gone(&l.m("x"));
        assert_eq!(read(&l.m("c")), "A\n");
        assert_eq!(read(&l.m("d/b")), "B\n");
        assert_eq!(read(&l.m("y")), "X\n");
        assert_eq!(names(&l.mnt), ["c", "d", "y"]);
    };
    check();
    unmount(m);
    assert_eq!(
        all_paths(&l.upper),
        [".wh.a", ".wh.b", ".wh.x", "c", "d", "d/b", "y"]
    );
    let m = l.mount("");
    check();
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s16_rename_merged_dir() {
    let l = Layers::new(2);
    l.put(0, "d/a", "a0\n");
    l.put(0, "d/sub/s0", "s0\n");
    l.put(1, "d/b", "b1\n");
    l.put(1, "d/a", "a1\n");
    l.put(1, "d/sub/s1", "s1\n");
    l.put(1, "d/.wh.nothing", "");
    l.put(1, "other/o", "o\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("d/c"), "c\n").unwrap();
    fs::remove_file(l.m("d/sub/s1")).unwrap();
    let ino = lstat(&l.m("d")).ino();
    fs::rename(l.m("d"), l.m("e")).unwrap();
    let check = |at: &str, gone: &str| {
        assert_gone(&l.m(gone));
        assert_eq!(names(&l.m(at)), ["a", "b", "c", "sub"], "{at}");
        assert_eq!(names(&l.m(&format!("{at}/sub"))), ["s0"], "{at}/sub");
        assert_eq!(read(&l.m(&format!("{at}/a"))), "a0\n");
        assert_eq!(read(&l.m(&format!("{at}/b"))), "b1\n");
        assert_eq!(read(&l.m(&format!("{at}/c"))), "c\n");
        assert_eq!(read(&l.m(&format!("{at}/sub/s0"))), "s0\n");
    };
    check("e", "d");
    assert_eq!(lstat(&l.m("e")).ino(), ino);
    assert_eq!(names(&l.mnt), ["e", "other"]);
    unmount(m);
    let m = l.mount("");
    check("e", "d");
    assert_eq!(names(&l.mnt), ["e", "other"]);
    // mv into another merged dir, then back to the old name.
    fs::rename(l.m("e"), l.m("other/e2")).unwrap();
    check("other/e2", "e");
    assert_eq!(names(&l.m("other")), ["e2", "o"]);
    fs::rename(l.m("other/e2"), l.m("d")).unwrap();
    check("d", "other/e2");
    assert_eq!(names(&l.mnt), ["d", "other"]);
    unmount(m);
    let m = l.mount("");
    check("d", "e");
    assert_eq!(names(&l.mnt), ["d", "other"]);
    assert_eq!(names(&l.m("other")), ["o"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s16_rename_dir_over_empty_merged_dir() {
    let l = Layers::new(2);
    l.put(0, "src/x", "x\n");
    l.put(1, "dst/y", "y\n");
    l.put(0, "s2/x", "x\n");
    l.put(1, "t2/z", "z\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::remove_file(l.m("dst/y")).unwrap();
    fs::rename(l.m("src"), l.m("dst")).unwrap();
    assert_gone(&l.m("src"));
    assert_eq!(names(&l.m("dst")), ["x"]);
    // A target that is not empty in the merged view is refused, nothing moves.
    assert_eq!(fails(fs::rename(l.m("s2"), l.m("t2"))), libc::ENOTEMPTY);
    assert_eq!(names(&l.m("s2")), ["x"]);
    assert_eq!(names(&l.m("t2")), ["z"]);
    unmount(m);
    let m = l.mount("");
    assert_eq!(names(&l.mnt), ["dst", "s2", "t2"]);
    assert_eq!(names(&l.m("dst")), ["x"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

/// What the merged view holds: name -> file content, or "dir:" + sorted child names.
fn view(l: &Layers, names_: &[&str]) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    for n in names_ {
        let p = l.m(n);
        let s = match fs::symlink_metadata(&p) {
            Err(_) => continue,
            Ok(md) if md.is_dir() => format!("dir:{}", names(&p).join(",")),
            Ok(_) => read(&p),
        };
        v.insert(n.to_string(), s);
    }
    v
}

/// Applies a renameat2 and checks the result: honoured (`after`), or EINVAL with nothing
/// changed. Returns the state the view must now have.
#[track_caller]
fn rename2_honoured_or_einval(
    l: &Layers,
    from: &str,
    to: &str,
    flags: u32,
    all: &[&str],
    after: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let before = view(l, all);
    match rename2(&l.m(from), &l.m(to), flags) {
        Ok(()) => {
            assert_eq!(view(l, all), after, "rename {from} -> {to} flags {flags}");
            after
        }
        Err(e) => {
            assert_eq!(errno(&e), libc::EINVAL, "rename {from} -> {to}: {e}");
            assert_eq!(
                view(l, all),
                before,
                "failed rename {from} -> {to} changed the view"
            );
            before
        }
    }
}

#[test]
fn s16_rename_noreplace_exchange() {
    let l = Layers::new(2);
    l.put(0, "a", "A\n");
    l.put(0, "b", "B\n");
    l.put(1, "f", "F\n");
    l.put(0, "d/x", "x\n");
    l.put(1, "d/y", "y\n");
    l.put(0, "p/p0", "p0\n");
    l.put(1, "p/p1", "p1\n");
    l.put(0, "q/q0", "q0\n");
    l.put(1, "q/q1", "q1\n");
    let all = ["a", "b", "c", "d", "f", "missing", "p", "q"];
    let lo = l.snap_lowers();
    let m = l.mount("");
    let mut state = view(&l, &all);
    // NOREPLACE onto an existing name: EEXIST (or EINVAL), nothing changes.
    let e = fails(rename2(&l.m("a"), &l.m("b"), libc::RENAME_NOREPLACE));
    assert!(e == libc::EEXIST || e == libc::EINVAL, "errno {e}");
    assert_eq!(
        fails(rename2(&l.m("a"), &l.m("d"), libc::RENAME_NOREPLACE)),
        e
    );
    assert_eq!(view(&l, &all), state);
    // NOREPLACE onto a free name.
    let mut next = state.clone();
    let v = next.remove("a").unwrap();
    next.insert("c".into(), v);
    state = rename2_honoured_or_einval(&l, "a", "c", libc::RENAME_NOREPLACE, &all, next);
    // EXCHANGE of two lower files (from two layers).
    let mut next = state.clone();
    next.insert("b".into(), "F\n".into());
    next.insert("f".into(), "B\n".into());
    state = rename2_honoured_or_einval(&l, "b", "f", libc::RENAME_EXCHANGE, &all, next);
    // EXCHANGE of a file and a merged directory.
    let mut next = state.clone();
    let (fv, dv) = (next["f"].clone(), next["d"].clone());
    next.insert("f".into(), dv);
    next.insert("d".into(), fv);
    state = rename2_honoured_or_einval(&l, "f", "d", libc::RENAME_EXCHANGE, &all, next);
    // EXCHANGE of two merged directories.
    let mut next = state.clone();
    let (pv, qv) = (next["p"].clone(), next["q"].clone());
    next.insert("p".into(), qv);
    next.insert("q".into(), pv);
    state = rename2_honoured_or_einval(&l, "p", "q", libc::RENAME_EXCHANGE, &all, next);
    // EXCHANGE with a missing name: ENOENT (or EINVAL), nothing changes.
    let e = fails(rename2(&l.m("b"), &l.m("missing"), libc::RENAME_EXCHANGE));
    assert!(e == libc::ENOENT || e == libc::EINVAL, "errno {e}");
    assert_eq!(view(&l, &all), state);
    unmount(m);
    let m = l.mount("");
    assert_eq!(view(&l, &all), state, "after a remount");
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S17

/// Runs `script` with sh as uid/gid, in `dir`.
fn sh_as(uid: u32, gid: u32, dir: &Path, script: &str) {
    use std::os::unix::process::CommandExt;
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh -c '{script}' as {uid}:{gid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn assert_owner_mode(p: &Path, uid: u32, gid: u32, mode: u32) {
    let md = lstat(p);
    assert_eq!(
        (md.uid(), md.gid(), perm(&md)),
        (uid, gid, mode),
        "{}: (uid, gid, mode)",
        p.display()
    );
}

#[test]
fn s17_new_objects_belong_to_caller_with_umask() {
    let l = Layers::new(1);
    chmod(l.root(), 0o755);
    l.mkdir(0, "pub");
    chmod(&l.lower(0, "pub"), 0o777);
    l.mkdir(0, "sg");
    std::os::unix::fs::chown(l.lower(0, "sg"), Some(0), Some(4242)).unwrap();
    chmod(&l.lower(0, "sg"), 0o2777);
    let lo = l.snap_lowers();
    let m = l.mount("allow_other");
    sh_as(
        1000,
        1000,
        &l.mnt,
        "umask 027 && echo hi > pub/file && mkdir pub/dir && ln -s target pub/ln \
         && mkfifo pub/fifo && echo x > sg/file && mkdir sg/dir",
    );
    sh_as(
        0,
        0,
        &l.mnt,
        "umask 077 && echo x > rootfile && mkdir rootdir",
    );
    sh_as(0, 0, &l.mnt, "umask 0 && echo x > open && mkdir opendir");
    let check = |base: &dyn Fn(&str) -> PathBuf| {
        assert_owner_mode(&base("pub/file"), 1000, 1000, 0o640);
        assert_owner_mode(&base("pub/dir"), 1000, 1000, 0o750);
        assert_owner_mode(&base("pub/fifo"), 1000, 1000, 0o640);
        let ln = lstat(&base("pub/ln"));
        assert_eq!((ln.uid(), ln.gid()), (1000, 1000));
        assert_owner_mode(&base("sg/file"), 1000, 4242, 0o640);
        assert_owner_mode(&base("sg/dir"), 1000, 4242, 0o2750);
        assert_owner_mode(&base("rootfile"), 0, 0, 0o600);
        assert_owner_mode(&base("rootdir"), 0, 0, 0o700);
        assert_owner_mode(&base("open"), 0, 0, 0o666);
        assert_owner_mode(&base("opendir"), 0, 0, 0o777);
    };
    check(&|p| l.m(p));
    unmount(m);
    check(&|p| l.up(p));
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s17_statfs_reports_upper_filesystem() {
    let mut l = Layers::new(1);
    l.put(0, "f", "f\n");
    let fsdir = l.root().join("upfs");
    let t = mount_tmpfs(&fsdir, "37m");
    l.upper = fsdir.join("upper");
    l.work = fsdir.join("work");
    fs::create_dir(&l.upper).unwrap();
    fs::create_dir(&l.work).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("big"), vec![7u8; 5 << 20]).unwrap();
    File::open(l.m("big")).unwrap().sync_all().unwrap();
    let (sm, su, sl) = (statvfs(&l.mnt), statvfs(&l.upper), statvfs(&l.lowers[0]));
    let total = |s: &libc::statvfs| s.f_blocks * s.f_frsize;
    let free = |s: &libc::statvfs| s.f_bfree * s.f_frsize;
    assert_eq!(total(&su), 37 << 20);
    assert_eq!(
        total(&sm),
        total(&su),
        "statfs of the mount is not the upper's"
    );
    assert_ne!(total(&sm), total(&sl));
    assert_eq!(free(&sm), free(&su));
    assert_eq!(sm.f_files, su.f_files);
    assert_eq!(sm.f_ffree, su.f_ffree);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
    drop(t);
}

// ------------------------------------------------------------------------------ S19

/// A directory outside every layer, with files a daemon must never reach.
fn outside_dir(root: &Path) -> PathBuf {
    let out = root.join("outside");
    fs::create_dir_all(out.join("sub")).unwrap();
    fs::write(out.join("secret"), "secret\n").unwrap();
    chmod(&out.join("secret"), 0o640);
    fs::write(out.join("passwd"), "outside passwd\n").unwrap();
    fs::write(out.join("sub/inner"), "inner\n").unwrap();
    out
}

/// A relative path from a layer root that climbs to `/` with `..` and then down to `abs`.
fn climbing(abs: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}{}",
        "../".repeat(40),
        abs.display().to_string().trim_start_matches('/')
    ))
}

#[test]
fn s19_symlink_escape_not_followed() {
    let l = Layers::new(2);
    let out = outside_dir(l.root());
    let secret = out.join("secret");
    let rel_secret = climbing(&secret);
    // Symlinks as objects of a lower.
    l.symlink(0, "abs", &secret);
    l.symlink(0, "rel", &rel_secret);
    l.symlink(0, "abs_unlink", &secret);
    l.symlink(0, "rel_unlink", &rel_secret);
    l.symlink(0, "abs_times", &secret);
    // Symlinked dirs in a lower under a real dir of a higher layer: the merge must stop there.
    l.put(0, "etc/passwd", "layer passwd\n");
    l.symlink(1, "etc", &out);
    l.put(0, "var/log/keep", "keep\n");
    l.symlink(1, "var/log", climbing(&out));
    // A symlink in the top lower over a real dir below.
    l.symlink(0, "home", &out);
    l.put(1, "home/user/file", "user file\n");
    let outs = snapshot(&out);
    let lo = l.snap_lowers();
    let m = l.mount("");

    assert_eq!(fs::read_link(l.m("abs")).unwrap(), secret);
    assert_eq!(fs::read_link(l.m("rel")).unwrap(), rel_secret);
    // Copy-up of the links themselves, never of what they point at.
    std::os::unix::fs::lchown(l.m("abs"), Some(4321), Some(4321)).unwrap();
    set_xattr(&l.m("rel"), "trusted.k", b"v").unwrap();
    set_times(&l.m("abs_times"), (5, 0), (6, 0)).unwrap();
    fs::hard_link(l.m("abs"), l.m("abs_link")).unwrap();
    fs::rename(l.m("rel"), l.m("rel2")).unwrap();
    fs::remove_file(l.m("abs_unlink")).unwrap();
    fs::remove_file(l.m("rel_unlink")).unwrap();
    assert!(lstat(&l.m("abs")).file_type().is_symlink());
    assert_eq!(lstat(&l.m("abs")).uid(), 4321);
    assert_eq!(lstat(&l.m("abs_times")).mtime(), 6);

    // Merged dirs never list or reach the outside dir.
    assert_eq!(names(&l.m("etc")), ["passwd"]);
    assert_gone(&l.m("etc/secret"));
    assert_gone(&l.m("etc/sub"));
    assert_eq!(read(&l.m("etc/passwd")), "layer passwd\n");
    fs::set_permissions(l.m("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(l.m("etc/new"), "new\n").unwrap();
    fs::remove_file(l.m("etc/passwd")).unwrap();
    assert_eq!(
        fails(fs::set_permissions(
            l.m("etc/secret"),
            fs::Permissions::from_mode(0o777)
        )),
        libc::ENOENT
    );
    assert_eq!(fails(fs::remove_file(l.m("etc/secret"))), libc::ENOENT);
    assert_eq!(fails(fs::remove_file(l.m("etc/passwd"))), libc::ENOENT);
    assert_eq!(names(&l.m("var/log")), ["keep"]);
    assert_gone(&l.m("var/log/secret"));
    fs::write(l.m("var/log/keep"), "rewritten\n").unwrap();
    fs::remove_file(l.m("var/log/keep")).unwrap();
    fs::write(l.m("var/log/secret"), "not the outside one\n").unwrap();
    assert!(lstat(&l.m("home")).file_type().is_symlink());
    fs::remove_file(l.m("home")).unwrap();
    assert_gone(&l.m("home"));
    unmount(m);

    assert_same_tree("the outside dir", &outs, &snapshot(&out));
    l.assert_lowers_unchanged(&lo);
    let u = |p: &str| l.up(p);
    assert!(lstat(&u("abs")).file_type().is_symlink());
    assert_eq!(fs::read_link(u("abs")).unwrap(), secret);
    assert_eq!(lstat(&u("abs")).uid(), 4321);
    assert_eq!(lstat(&u("abs")).ino(), lstat(&u("abs_link")).ino());
    assert_eq!(fs::read_link(u("rel2")).unwrap(), rel_secret);
    assert_eq!(get_xattr(&u("rel2"), "trusted.k").unwrap(), b"v");
    assert!(lstat(&u("abs_times")).file_type().is_symlink());
    for w in [".wh.rel", ".wh.abs_unlink", ".wh.rel_unlink", ".wh.home"] {
        assert_aufs_whiteout(&u(w));
    }
    assert_eq!(read(&u("etc/new")), "new\n");
    assert_eq!(read(&u("var/log/secret")), "not the outside one\n");
    assert!(lstat(&u("etc")).is_dir() && lstat(&u("var/log")).is_dir());
}

#[test]
fn s19_workdir_scratch_symlink_not_followed() {
    for absolute in [true, false] {
        let l = Layers::new(1);
        l.put(0, "f", "lower\n");
        let out = outside_dir(l.root());
        let target = if absolute {
            out.clone()
        } else {
            climbing(&out)
        };
        symlink(&target, l.scratch()).unwrap();
        let outs = snapshot(&out);
        let lo = l.snap_lowers();
        let r = run_stratafs(&["-o", &l.opts(), l.mnt.to_str().unwrap()]);
        if r.status.success() {
            let m = Mount { mnt: l.mnt.clone() };
            fs::write(l.m("f"), "changed\n").unwrap();
            fs::write(l.m("g"), "new\n").unwrap();
            fs::remove_dir_all(l.mnt.join("nothing")).unwrap_or(());
            unmount(m);
        } else {
            assert!(!is_mounted(&l.mnt));
        }
        assert_same_tree("the outside dir", &outs, &snapshot(&out));
        l.assert_lowers_unchanged(&lo);
    }
}

// ------------------------------------------------------------------------------ S20

#[test]
fn s20_bad_input_table() {
    let l = Layers::new(2);
    l.put(0, "f", "f\n");
    l.put(1, "g", "g\n");
    l.mkdir(0, "up_in_lower");
    l.mkdir(0, "work_in_lower");
    let root = l.root().to_path_buf();
    let afile = root.join("afile");
    fs::write(&afile, "a file\n").unwrap();
    fs::create_dir(l.up("work_in_upper")).unwrap();
    fs::create_dir(l.up("lower_in_upper")).unwrap();
    let shm = mount_tmpfs(&root.join("shm"), "8m");
    fs::create_dir(root.join("shm/work")).unwrap();
    let d = |p: &Path| p.display().to_string();
    let (l0, l1, up, wk, mnt) = (
        d(&l.lowers[0]),
        d(&l.lowers[1]),
        d(&l.upper),
        d(&l.work),
        d(&l.mnt),
    );
    let nope = d(&root.join("nope"));
    let file = d(&afile);
    let std_ = |lower: &str, upper: &str, work: &str| {
        format!("lowerdir={lower},upperdir={upper},workdir={work}")
    };
    // (what, -o options, mountpoint, option the message must name, path it must name)
    let cases: Vec<(&str, String, String, &str, Option<String>)> = vec![
        (
            "missing lower",
            std_(&format!("{nope}:{l1}"), &up, &wk),
            mnt.clone(),
            "lowerdir",
            Some(nope.clone()),
        ),
        (
            "missing second lower",
            std_(&format!("{l0}:{nope}"), &up, &wk),
            mnt.clone(),
            "lowerdir",
            Some(nope.clone()),
        ),
        (
            "lower is a file",
            std_(&format!("{l0}:{file}"), &up, &wk),
            mnt.clone(),
            "lowerdir",
            Some(file.clone()),
        ),
        (
            "missing upper",
            std_(&l0, &nope, &wk),
            mnt.clone(),
            "upperdir",
            Some(nope.clone()),
        ),
        (
            "upper is a file",
            std_(&l0, &file, &wk),
            mnt.clone(),
            "upperdir",
            Some(file.clone()),
        ),
        (
            "missing workdir",
            std_(&l0, &up, &nope),
            mnt.clone(),
            "workdir",
            Some(nope.clone()),
        ),
        (
            "workdir is a file",
            std_(&l0, &up, &file),
            mnt.clone(),
            "workdir",
            Some(file.clone()),
        ),
        (
            "upper inside a lower",
            std_(&format!("{l0}:{l1}"), &format!("{l0}/up_in_lower"), &wk),
            mnt.clone(),
            "upperdir",
            Some(format!("{l0}/up_in_lower")),
        ),
        (
            "upper is a lower",
            std_(&format!("{l0}:{l1}"), &l1, &wk),
            mnt.clone(),
            "upperdir",
            Some(l1.clone()),
        ),
        (
            "lower inside the upper",
            std_(&format!("{l0}:{up}/lower_in_upper"), &up, &wk),
            mnt.clone(),
            "lowerdir",
            Some(format!("{up}/lower_in_upper")),
        ),
        (
            "workdir inside the upper",
            std_(&l0, &up, &format!("{up}/work_in_upper")),
            mnt.clone(),
            "workdir",
            Some(format!("{up}/work_in_upper")),
        ),
        (
            "workdir inside a lower",
            std_(&format!("{l0}:{l1}"), &up, &format!("{l0}/work_in_lower")),
            mnt.clone(),
            "workdir",
            Some(format!("{l0}/work_in_lower")),
        ),
        (
            "workdir on another filesystem",
            std_(&l0, &up, &d(&root.join("shm/work"))),
            mnt.clone(),
            "workdir",
            Some(d(&root.join("shm/work"))),
        ),
        (
            "same lower twice",
            std_(&format!("{l0}:{l1}:{l0}"), &up, &wk),
            mnt.clone(),
            "lowerdir",
            Some(l0.clone()),
        ),
        (
            "unknown option",
            format!("{},bogus=1", std_(&l0, &up, &wk)),
            mnt.clone(),
            "bogus",
            None,
        ),
        (
            "no lowerdir",
            format!("upperdir={up},workdir={wk}"),
            mnt.clone(),
            "lowerdir",
            None,
        ),
        (
            "upper without workdir",
            format!("lowerdir={l0},upperdir={up}"),
            mnt.clone(),
            "workdir",
            None,
        ),
        (
            "missing mountpoint",
            std_(&l0, &up, &wk),
            nope.clone(),
            "mountpoint",
            Some(nope.clone()),
        ),
        (
            "mountpoint is a file",
            std_(&l0, &up, &wk),
            file.clone(),
            "mountpoint",
            Some(file.clone()),
        ),
    ];
    for (what, opts, mountpoint, opt, path) in cases {
        let before = snapshot(&root);
        let out = run_stratafs(&["-o", &opts, &mountpoint]);
        if is_mounted(Path::new(&mountpoint)) {
            drop(Mount {
                mnt: PathBuf::from(&mountpoint),
            });
            panic!("{what}: mounted despite bad input");
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("{what}: {stderr:?}");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: exit status; stderr {stderr:?}"
        );
        assert!(out.stdout.is_empty(), "{what}: stdout {:?}", out.stdout);
        assert!(
            stderr.starts_with("stratafs: ")
                && stderr.ends_with('\n')
                && stderr.lines().count() == 1,
            "{what}: stderr must be one line 'stratafs: ...', got {stderr:?}"
        );
        assert!(
            stderr.contains(opt),
            "{what}: stderr {stderr:?} does not name '{opt}'"
        );
        if let Some(p) = &path {
            assert!(
                stderr.contains(p.as_str()),
                "{what}: stderr {stderr:?} does not name {p}"
            );
        }
        assert_same_tree(what, &before, &snapshot(&root));
    }
    drop(shm);
}
