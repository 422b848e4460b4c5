//! S4-S7: which copy a path shows, whiteouts, opaque directories, and how stratafs records them.

use super::*;

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

/// Mounts the S7 layers with `opts`, deletes and re-creates through the mount, lets
/// `upper_holds` check what the upper dir holds, then remounts: the upper must read back
/// as the same merged view, and the lowers stay unchanged.
fn s7_writes_and_reads_back(opts: &str, upper_holds: impl Fn(&Layers)) {
    let l = s7_layers();
    let lo = l.snap_lowers();
    let m = l.mount(opts);
    whiteout_and_opaque_ops(&l);
    unmount(m);
    upper_holds(&l);
    let m = l.mount(opts);
    assert_gone(&l.m("f"));
    assert_eq!(names(&l.m("d")), Vec::<String>::new());
    assert_eq!(names(&l.mnt), ["d", "keep"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s7_default_writes_aufs_forms() {
    s7_writes_and_reads_back("", |l| {
        assert_aufs_whiteout(&l.up(".wh.f"));
        assert!(lstat(&l.up(".wh.f")).file_type().is_file());
        assert!(lstat(&l.up("d")).is_dir());
        assert_aufs_whiteout(&l.up("d/.wh..wh..opq"));
        assert_eq!(all_paths(&l.upper), [".wh.f", "d", "d/.wh..wh..opq"]);
        assert_eq!(
            fails(get_xattr(&l.up("d"), "trusted.overlay.opaque")),
            libc::ENODATA
        );
    });
}

#[test]
fn s7_overlay_form_writes_char00_and_opaque_xattr() {
    s7_writes_and_reads_back("whiteout=overlay", |l| {
        assert_char00(&l.up("f"));
        assert!(lstat(&l.up("d")).is_dir());
        assert_eq!(
            get_xattr(&l.up("d"), "trusted.overlay.opaque").unwrap(),
            b"y"
        );
        assert_eq!(all_paths(&l.upper), ["d", "f"]);
    });
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
