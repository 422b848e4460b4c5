//! S10-S13: copy-up (when, what it carries, all or nothing) and inode numbers.

use super::*;

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
