//! S19: every path stays inside its layer.

use super::*;

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
