//! S1-S3: the layer stack, lowers that are never written, the workdir.

use super::*;

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
