//! Issue 5 round trip: changes of every kind made through a mount, `stratafs commit` of the
//! upper, `stratafs import` of that tar as a new top lower under the same lowers with an
//! empty upper: the two merged views must be identical entry by entry.
mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::process::Command;

/// What must survive the round trip: everything but inode numbers, ctimes and dir times.
#[derive(Debug, PartialEq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    nlink: Option<u64>,
    mtime: Option<(i64, i64)>,
    rdev: u64,
    data: Option<(u64, u64)>,
    target: Option<std::path::PathBuf>,
    xattrs: Vec<(String, Vec<u8>)>,
    /// Index of the hard-link group (first path sharing its inode), for files with links.
    link_group: Option<String>,
}

fn view(root: &Path) -> BTreeMap<String, Seen> {
    let tree = snapshot(root);
    let mut first_by_ino: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (path, o) in &tree {
        let is_dir = o.mode & libc::S_IFMT == libc::S_IFDIR;
        let is_reg = o.mode & libc::S_IFMT == libc::S_IFREG;
        let link_group = (is_reg && o.nlink > 1)
            .then(|| first_by_ino.entry(o.ino).or_insert(path.clone()).clone());
        out.insert(
            path.clone(),
            Seen {
                mode: o.mode,
                uid: o.uid,
                gid: o.gid,
                size: (!is_dir).then_some(o.size),
                nlink: (!is_dir).then_some(o.nlink),
                mtime: is_reg.then_some(o.mtime),
                rdev: o.rdev,
                data: o.data,
                target: o.target.clone(),
                xattrs: o.xattrs.clone(),
                link_group,
            },
        );
    }
    out
}

/// Two lowers with files, dirs, a symlink and xattrs to change.
fn image() -> Layers {
    let l = Layers::new(2);
    l.put(1, "etc/os-release", "base\n");
    l.put(1, "etc/keep.conf", "keep\n");
    l.put(1, "usr/share/doc/a.txt", "doc a\n");
    l.put(1, "usr/share/doc/b.txt", "doc b\n");
    l.put(1, "var/lib/old/state", "old state\n");
    l.put(1, "opt/tool/bin", "tool\n");
    l.put(0, "etc/app.conf", "app v1\n");
    l.put(0, "srv/data/one", "1\n");
    l.put(0, "srv/data/two", "2\n");
    l.put(0, "home/user/notes", "notes\n");
    symlink("../etc/app.conf", l.lower(0, "srv/conf")).unwrap();
    set_xattr(&l.lower(0, "etc/app.conf"), "user.origin", b"lower").unwrap();
    l
}

#[test]
fn commit_then_import_gives_the_same_merged_view() {
    let l = image();
    {
        let _m = l.mount("");
        // create, modify, delete a lower file, delete a lower dir
        fs::write(l.m("etc/new.conf"), "new\n").unwrap();
        fs::write(l.m("etc/app.conf"), "app v2\n").unwrap();
        fs::remove_file(l.m("etc/keep.conf")).unwrap();
        fs::remove_dir_all(l.m("var/lib/old")).unwrap();
        // replace a dir by a file
        fs::remove_dir_all(l.m("opt/tool")).unwrap();
        fs::write(l.m("opt/tool"), "now a file\n").unwrap();
        // rename a file and a merged dir
        fs::rename(l.m("usr/share/doc/a.txt"), l.m("usr/share/doc/A.txt")).unwrap();
        fs::rename(l.m("srv/data"), l.m("srv/data2")).unwrap();
        // chmod, chown, xattr
        chmod(&l.m("home/user/notes"), 0o600);
        std::os::unix::fs::chown(l.m("home/user/notes"), Some(1000), Some(1000)).unwrap();
        set_xattr(&l.m("etc/app.conf"), "user.changed", b"yes").unwrap();
        // hard link, symlink, fifo, device
        fs::hard_link(l.m("etc/new.conf"), l.m("etc/new.link")).unwrap();
        symlink("/etc/new.conf", l.m("etc/abs.link")).unwrap();
        mknod(&l.m("srv/fifo"), libc::S_IFIFO | 0o644, 0, 0).unwrap();
        mknod(&l.m("srv/null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
        // a new dir replacing a deleted lower dir: opaque
        fs::create_dir(l.m("var/lib/old")).unwrap();
        fs::write(l.m("var/lib/old/fresh"), "fresh\n").unwrap();
    }
    let changed = {
        let _m = l.mount("");
        view(&l.mnt)
    };

    let tar = l.tmp.path().join("layer.tar");
    let digest = stratafs_ok(&[
        "commit",
        l.upper.to_str().unwrap(),
        "--output",
        tar.to_str().unwrap(),
    ]);
    assert!(
        digest.trim().starts_with("sha256:"),
        "digest line: {digest}"
    );
    let imported = l.tmp.path().join("imported");
    stratafs_ok(&["import", tar.to_str().unwrap(), imported.to_str().unwrap()]);

    // The imported layer on top of the same lowers, with a fresh empty upper.
    let upper2 = l.tmp.path().join("upper2");
    let work2 = l.tmp.path().join("work2");
    fs::create_dir(&upper2).unwrap();
    fs::create_dir(&work2).unwrap();
    let opts = format!(
        "lowerdir={}:{}:{},upperdir={},workdir={}",
        imported.display(),
        l.lowers[0].display(),
        l.lowers[1].display(),
        upper2.display(),
        work2.display()
    );
    let replayed = {
        let _m = Mount::new(&opts, &l.mnt);
        view(&l.mnt)
    };

    let keys_a: Vec<&String> = changed.keys().collect();
    let keys_b: Vec<&String> = replayed.keys().collect();
    assert_eq!(keys_a, keys_b, "the same names in both views");
    for (path, a) in &changed {
        assert_eq!(Some(a), replayed.get(path), "entry '{path}'");
    }
    // Spot checks that the changes were really there.
    assert!(!changed.contains_key("etc/keep.conf"));
    assert!(!changed.contains_key("var/lib/old/state"));
    assert!(changed.contains_key("var/lib/old/fresh"));
    assert!(changed.contains_key("srv/data2/one") && !changed.contains_key("srv/data"));
    assert_eq!(
        changed["etc/new.conf"].link_group.as_deref(),
        Some("etc/new.conf")
    );
    assert_eq!(
        changed["etc/new.link"].link_group.as_deref(),
        Some("etc/new.conf")
    );
    assert_eq!(
        changed["opt/tool"].mode & libc::S_IFMT,
        libc::S_IFREG,
        "dir replaced by a file"
    );
    assert_eq!(changed["home/user/notes"].uid, 1000);
}

#[test]
fn commit_is_reproducible_for_the_same_upper() {
    let l = image();
    {
        let _m = l.mount("");
        fs::write(l.m("etc/new.conf"), "new\n").unwrap();
        fs::remove_file(l.m("etc/keep.conf")).unwrap();
    }
    let t1 = l.tmp.path().join("a.tar");
    let t2 = l.tmp.path().join("b.tar");
    let d1 = stratafs_ok(&[
        "commit",
        l.upper.to_str().unwrap(),
        "--output",
        t1.to_str().unwrap(),
    ]);
    let d2 = stratafs_ok(&[
        "commit",
        l.upper.to_str().unwrap(),
        "--output",
        t2.to_str().unwrap(),
    ]);
    assert_eq!(d1, d2);
    assert_eq!(fs::read(&t1).unwrap(), fs::read(&t2).unwrap());
    let listing = Command::new("tar").arg("-tf").arg(&t1).output().unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        names
            .lines()
            .any(|n| n.trim_end_matches('/') == "etc/.wh.keep.conf"),
        "{names}"
    );
    assert!(names.lines().all(|n| !n.starts_with('/')), "{names}");
    let _ = fs::metadata(&t1).unwrap().size();
}

/// Whiteouts are hard links of one empty file in the workdir (as overlayfs shares one
/// whiteout inode; S7 names them, their inode is nobody's business), and `stratafs commit`
/// writes each as a whiteout file of its own, never as a hard link to another whiteout.
#[test]
fn whiteouts_share_one_inode_and_commit_as_whiteout_files() {
    let l = image();
    {
        let _m = l.mount("");
        for p in ["etc/keep.conf", "usr/share/doc/a.txt", "srv/data/one"] {
            fs::remove_file(l.m(p)).unwrap();
        }
    }
    let shared = fs::metadata(l.work.join("stratafs.whiteout")).unwrap();
    for wh in [
        "etc/.wh.keep.conf",
        "usr/share/doc/.wh.a.txt",
        "srv/data/.wh.one",
    ] {
        let md = fs::metadata(l.up(wh)).unwrap();
        assert_eq!((md.ino(), md.len()), (shared.ino(), 0), "{wh}");
    }
    assert_eq!(shared.nlink(), 4);
    let t = l.tmp.path().join("wh.tar");
    stratafs_ok(&[
        "commit",
        l.upper.to_str().unwrap(),
        "--output",
        t.to_str().unwrap(),
    ]);
    let listing = Command::new("tar").arg("-tvf").arg(&t).output().unwrap();
    let lines = String::from_utf8_lossy(&listing.stdout);
    let whiteouts: Vec<&str> = lines.lines().filter(|l| l.contains("/.wh.")).collect();
    assert_eq!(whiteouts.len(), 3, "{lines}");
    assert!(whiteouts.iter().all(|l| l.starts_with('-')), "{lines}");
}
