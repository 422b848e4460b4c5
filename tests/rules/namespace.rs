//! S14-S17: unlink and rmdir, creation over whiteouts, rename, owners of new objects.

use super::*;

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
