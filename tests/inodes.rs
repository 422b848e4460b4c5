//! Inode numbers across remounts (S24 of docs/semantics.md, which extends S13; issue 10,
//! item 7): st_ino of every object, lower, copied-up or upper-only, is the same after
//! umount + mount of the same layers, unique among live objects, under one st_dev, and
//! d_ino agrees with st_ino. The `git` test is the real-world case: a refreshed index must
//! still match after a remount, as it does on kernel overlayfs.
mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

#[track_caller]
fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// Unmounts and waits for the daemon to exit, so that the next mount at the same place
/// does not race with the old daemon's exit path.
fn unmount(mut m: Mount) {
    m.unmount();
    wait_daemons_gone(&m.mnt);
}

/// (st_ino, st_dev, st_nlink, is_dir) of every object below `root` (the root as ""), found
/// by readdir; also checks that each entry's d_ino is its st_ino.
fn walk_inos(root: &Path) -> BTreeMap<String, (u64, u64, u64, bool)> {
    fn go(root: &Path, rel: &str, out: &mut BTreeMap<String, (u64, u64, u64, bool)>) {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let md = lstat(&p);
        out.insert(
            rel.to_string(),
            (md.ino(), md.dev(), md.nlink(), md.is_dir()),
        );
        if !md.is_dir() {
            return;
        }
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let d_ino = e.ino();
            go(root, &r, out);
            assert_eq!(d_ino, out[&r].0, "{r}: d_ino is not st_ino");
        }
    }
    let mut out = BTreeMap::new();
    go(root, "", &mut out);
    out
}

/// One st_dev for all, and no two paths share st_ino unless they are hard links of one
/// object (listed in `links`).
#[track_caller]
fn assert_unique(inos: &BTreeMap<String, (u64, u64, u64, bool)>, links: &[(&str, &str)]) {
    let dev = inos[""].1;
    let mut by_ino: BTreeMap<u64, &str> = BTreeMap::new();
    for (p, (ino, d, _, _)) in inos {
        assert_eq!(*d, dev, "'{p}' has another st_dev");
        if let Some(other) = by_ino.insert(*ino, p) {
            let linked = links
                .iter()
                .any(|(a, b)| (*a == p && *b == other) || (*a == other && *b == p));
            assert!(linked, "'{p}' and '{other}' share st_ino {ino}");
        }
    }
}

/// st_ino of each path in `paths`, looked up one by one (no readdir), in reverse order.
fn stat_all(root: &Path, paths: &[String]) -> BTreeMap<String, u64> {
    paths
        .iter()
        .rev()
        .map(|p| (p.clone(), lstat(&root.join(p)).ino()))
        .collect()
}

fn only_ino(m: &BTreeMap<String, (u64, u64, u64, bool)>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.clone(), v.0)).collect()
}

/// S24: lower, copied-up and upper-only objects keep st_ino across a remount; the number
/// is the real one (one filesystem), a copy's its origin's, and the xattr carrying it is
/// hidden (S8).
#[test]
fn st_ino_survives_remount() {
    let l = Layers::new(2);
    l.put(0, "lf", "lower file\n");
    l.put(0, "ld/x", "x\n");
    l.put(1, "ld/z", "z from below\n");
    l.mkdir(1, "ld2/sub");
    l.symlink(0, "lsym", "lf");
    l.put(0, "wr", "to be written\n");
    l.put(0, "ch", "to be chmodded\n");
    l.put(0, "ren_src", "to be renamed\n");
    l.put(0, "hl1", "lower hard link\n");
    fs::hard_link(l.lower(0, "hl1"), l.lower(0, "hl2")).unwrap();
    l.put(1, "below", "only in the second lower\n");
    l.put_upper("u1", "upper only\n");
    l.put_upper("ud/u2", "upper only, in a dir\n");
    symlink("u1", l.up("usym")).unwrap();
    fs::hard_link(l.up("u1"), l.up("uh")).unwrap();
    let lo = l.snap_lowers();

    let m = l.mount("");
    fs::write(l.m("wr"), "written through the mount\n").unwrap();
    chmod(&l.m("ch"), 0o600);
    fs::write(l.m("ld/made"), "new in a merged dir\n").unwrap();
    fs::rename(l.m("ren_src"), l.m("ren_dst")).unwrap();
    fs::write(l.m("new"), "new\n").unwrap();
    fs::create_dir(l.m("nd")).unwrap();
    symlink("new", l.m("msym")).unwrap();
    let first = walk_inos(&l.mnt);
    let links = [("u1", "uh"), ("hl1", "hl2")];
    assert_unique(&first, &links);
    unmount(m);

    // Like overlayfs with every layer on one filesystem: the real inode numbers, the
    // origin's for a copy.
    let real = |p: &Path| lstat(p).ino();
    assert_eq!(first["lf"].0, real(&l.lower(0, "lf")));
    assert_eq!(first["ld2/sub"].0, real(&l.lower(1, "ld2/sub")));
    assert_eq!(first["lsym"].0, real(&l.lower(0, "lsym")));
    assert_eq!(first["u1"].0, real(&l.up("u1")));
    assert_eq!(first["new"].0, real(&l.up("new")));
    assert_eq!(first["wr"].0, real(&l.lower(0, "wr")), "copy-up by write");
    assert_eq!(first["ch"].0, real(&l.lower(0, "ch")), "copy-up by chmod");
    assert_eq!(first["ren_dst"].0, real(&l.lower(0, "ren_src")));
    assert_eq!(first["ld"].0, real(&l.lower(0, "ld")), "copied-up dir");
    let recorded = get_xattr(&l.up("wr"), "trusted.stratafs.ino").unwrap();
    assert_eq!(recorded, first["wr"].0.to_string().into_bytes());

    // Looked up name by name, no readdir first.
    let paths: Vec<String> = first.keys().cloned().collect();
    let m = l.mount("");
    assert_eq!(
        stat_all(&l.mnt, &paths),
        only_ino(&first),
        "after a remount"
    );
    unmount(m);
    // Listed first (readdir numbers entries before any lookup).
    let m = l.mount("");
    let third = walk_inos(&l.mnt);
    assert_eq!(only_ino(&third), only_ino(&first), "after a second remount");
    assert_unique(&third, &links);
    // The xattr that carries a copy's number never shows in the merged view.
    assert!(!list_xattr(&l.m("wr"))
        .unwrap()
        .iter()
        .any(|n| n.contains("stratafs")));
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

/// S24 with `metacopy=on` and `redirect_dir=on`.
#[test]
fn st_ino_survives_remount_with_metacopy_and_redirect_dir() {
    let l = Layers::new(1);
    l.put(0, "big", &"data\n".repeat(10_000));
    l.put(0, "dir/a", "a\n");
    l.put(0, "dir/sub/b", "b\n");
    let lo = l.snap_lowers();
    let opts = "metacopy=on,redirect_dir=on";
    let m = l.mount(opts);
    chmod(&l.m("big"), 0o640);
    fs::rename(l.m("dir"), l.m("moved")).unwrap();
    let first = walk_inos(&l.mnt);
    assert_unique(&first, &[]);
    unmount(m);
    assert_eq!(first["big"].0, lstat(&l.lower(0, "big")).ino());
    assert_eq!(first["moved"].0, lstat(&l.lower(0, "dir")).ino());
    let m = l.mount(opts);
    assert_eq!(only_ino(&walk_inos(&l.mnt)), only_ino(&first));
    // Completing the metadata-only copy keeps the number too.
    fs::write(l.m("big"), "now with data\n").unwrap();
    assert_eq!(lstat(&l.m("big")).ino(), first["big"].0);
    unmount(m);
    let m = l.mount(opts);
    assert_eq!(lstat(&l.m("big")).ino(), first["big"].0);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits lower files (one of them changed through the mount, so copied up), refreshes
/// the index, remounts, and returns what `git diff-files` then lists.
fn git_after_remount(l: &Layers, mount: &dyn Fn() -> Box<dyn FnOnce()>) -> String {
    let done = mount();
    git(&l.mnt, &["init", "-q"]);
    fs::write(l.m("src/a.txt"), "a, changed\n").unwrap();
    chmod(&l.m("run.sh"), 0o755);
    git(&l.mnt, &["add", "-A"]);
    git(&l.mnt, &["commit", "-q", "-m", "init"]);
    fs::write(l.m("new.txt"), "new\n").unwrap();
    git(&l.mnt, &["add", "new.txt"]);
    git(&l.mnt, &["update-index", "--refresh"]);
    assert_eq!(git(&l.mnt, &["diff-files", "--name-only"]), "");
    done();
    let done = mount();
    let listed = git(&l.mnt, &["diff-files", "--name-only"]);
    done();
    listed
}

fn git_layers() -> Layers {
    let l = Layers::new(1);
    l.put(0, "src/a.txt", "a\n");
    l.put(0, "src/b.txt", "b\n");
    l.put(0, "docs/readme", "readme\n");
    l.put(0, "run.sh", "#!/bin/sh\n");
    l
}

/// S24, the real-world case: a refreshed git index still matches after a remount.
#[test]
fn git_index_stays_valid_across_remount() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("git is not installed: skipped");
        return;
    }
    let l = git_layers();
    let listed = git_after_remount(&l, &|| {
        let m = l.mount("");
        Box::new(move || unmount(m))
    });
    let o = git_layers();
    let on_overlay = git_after_remount(&o, &|| {
        let m = o.mount_overlay("");
        Box::new(move || drop(m))
    });
    assert_eq!(on_overlay, "", "kernel overlayfs lists changed files");
    assert_eq!(listed, "", "files git sees as changed after a remount");
}

/// A fresh small ext4 on a loop device at `root/ext4` (None without mkfs.ext4 or loop
/// devices); unmounted when the guard drops. A fresh ext4 gives a freed inode number to
/// the next file created in the same directory, which is the case to test.
fn mount_fresh_ext4(root: &Path) -> Option<Mount> {
    let (img, dir) = (root.join("ext4.img"), root.join("ext4"));
    fs::create_dir_all(&dir).unwrap();
    File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .is_ok_and(|s| s.success());
    let mounted = made
        && Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
    mounted.then_some(Mount { mnt: dir })
}

/// S24 and S13: removed objects the kernel still holds (an open file, an O_PATH fd, an open
/// directory) keep their numbers; new objects, one of which gets a freed disk inode, get
/// others (the reserved range).
#[test]
fn reused_disk_inode_gets_another_number() {
    let mut l = Layers::new(1);
    let ext4 = mount_fresh_ext4(l.root());
    if let Some(e) = &ext4 {
        l.upper = e.mnt.join("upper");
        l.work = e.mnt.join("work");
        fs::create_dir(&l.upper).unwrap();
        fs::create_dir(&l.work).unwrap();
    } else {
        eprintln!("no loop ext4: the upper stays where it is, disk inodes may not be reused");
    }
    l.put(0, "lower", "l\n");
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("open"), "o\n").unwrap();
    fs::write(l.m("held"), "h\n").unwrap();
    fs::create_dir(l.m("dir")).unwrap();
    let f = File::open(l.m("open")).unwrap();
    // O_PATH: the kernel holds the node, the daemon no file (the disk inode is freed).
    let held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(l.m("held"))
        .unwrap();
    let d = File::open(l.m("dir")).unwrap();
    let live = [
        lstat(&l.m("open")).ino(),
        lstat(&l.m("held")).ino(),
        lstat(&l.m("dir")).ino(),
    ];
    let freed = lstat(&l.up("held")).ino();
    for p in ["open", "held"] {
        fs::remove_file(l.m(p)).unwrap();
    }
    fs::remove_dir(l.m("dir")).unwrap();
    let mut seen = BTreeMap::new();
    let mut reused = false;
    for i in 0..20 {
        let (fp, dp) = (format!("n{i}"), format!("d{i}"));
        fs::write(l.m(&fp), "n\n").unwrap();
        fs::create_dir(l.m(&dp)).unwrap();
        for p in [fp, dp] {
            let ino = lstat(&l.m(&p)).ino();
            assert!(
                !live.contains(&ino),
                "{p} got the st_ino of a removed live object"
            );
            if let Some(other) = seen.insert(ino, p.clone()) {
                panic!("{p} and {other} share st_ino {ino}");
            }
            reused |= lstat(&l.up(&p)).ino() == freed;
        }
    }
    assert_eq!(f.metadata().unwrap().ino(), live[0]);
    assert!(
        reused || ext4.is_none(),
        "no new file got the freed disk inode {freed}: the case was not exercised"
    );
    drop((f, held, d));
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

/// S24: layers on two filesystems, numbers composed as overlayfs' xino: unique and stable.
#[test]
fn two_filesystems_unique_and_stable() {
    let mut l = Layers::new(0);
    // Two lowers on two fresh tmpfs: their raw inode numbers overlap with each other.
    let t0 = mount_tmpfs(&l.root().join("t0"), "16m");
    let t1 = mount_tmpfs(&l.root().join("t1"), "16m");
    l.lowers = vec![l.root().join("t0"), l.root().join("t1")];
    for i in 0..20 {
        l.put(0, &format!("a{i}"), "0");
        l.put(1, &format!("b{i}"), "1");
        l.put(0, &format!("d{}/x", i % 4), "0");
        l.put(1, &format!("d{}/y", i % 4), "1");
    }
    for i in 0..10 {
        l.put_upper(&format!("u{i}"), "u");
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("a3"), "copied from t0\n").unwrap();
    fs::write(l.m("b5"), "copied from t1\n").unwrap();
    fs::set_permissions(l.m("d1/y"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(l.m("new"), "new\n").unwrap();
    let first = walk_inos(&l.mnt);
    assert_unique(&first, &[]);
    unmount(m);
    // Composed as (fs index << 56) | real ino: upper 0, t0 1, t1 2.
    let low = |n: u64| n & ((1 << 56) - 1);
    for (p, fs_index, real) in [
        ("a0", 1, lstat(&l.lower(0, "a0")).ino()),
        ("a3", 1, lstat(&l.lower(0, "a3")).ino()),
        ("b5", 2, lstat(&l.lower(1, "b5")).ino()),
        ("d1/y", 2, lstat(&l.lower(1, "d1/y")).ino()),
        ("u1", 0, lstat(&l.up("u1")).ino()),
    ] {
        assert_eq!(first[p].0 >> 56, fs_index, "{p}");
        assert_eq!(low(first[p].0), real, "{p}");
    }
    let m = l.mount("");
    let second = walk_inos(&l.mnt);
    assert_eq!(only_ino(&second), only_ino(&first), "after a remount");
    assert_unique(&second, &[]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
    drop((t1, t0));
}

/// S24 and S13: a lower hard link written through one name in an earlier mount: after a
/// remount the copy (carrying the origin's number) and the other name (still lower, same
/// origin) are two objects, which must not share a number.
#[test]
fn lower_hard_link_split_by_an_earlier_copy_up() {
    let l = Layers::new(1);
    l.put(0, "h1", "old\n");
    fs::hard_link(l.lower(0, "h1"), l.lower(0, "h2")).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    fs::write(l.m("h1"), "new\n").unwrap();
    unmount(m);
    for order in [["h1", "h2"], ["h2", "h1"]] {
        let m = l.mount("");
        let a = lstat(&l.m(order[0]));
        let b = lstat(&l.m(order[1]));
        let (ca, cb) = (
            fs::read(l.m(order[0])).unwrap(),
            fs::read(l.m(order[1])).unwrap(),
        );
        if ca == cb {
            assert_eq!(a.ino(), b.ino(), "{order:?}: one object, two numbers");
        } else {
            assert_ne!(a.ino(), b.ino(), "{order:?}: two objects, one number");
        }
        assert_unique(&walk_inos(&l.mnt), &[("h1", "h2")]);
        unmount(m);
    }
    l.assert_lowers_unchanged(&lo);
}

/// S24: the number a copy carries is private: `stratafs commit` does not export it.
#[test]
fn commit_leaves_the_number_out() {
    let l = Layers::new(1);
    l.put(0, "f", "f\n");
    let m = l.mount("");
    fs::write(l.m("f"), "changed\n").unwrap();
    unmount(m);
    assert!(get_xattr(&l.up("f"), "trusted.stratafs.ino").is_ok());
    let out = l.root().join("layer.tar");
    let r = run_stratafs(&[
        "commit",
        l.upper.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let tar = fs::read(&out).unwrap();
    assert!(
        !tar.windows(b"stratafs".len()).any(|w| w == b"stratafs"),
        "the layer tar names a stratafs xattr"
    );
}
