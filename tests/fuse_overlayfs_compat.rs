//! A drop-in for fuse-overlayfs (issue 11): its options are accepted with their meaning,
//! checked side by side with fuse-overlayfs 1.x (Debian's package) on the same layers
//! (tests/common/side.rs), and a mount by root serves every user, as both peers do.
mod common;
use common::side::*;
use common::*;

use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;
use std::process::Command;

fn layout(l: &Path) {
    sh(
        l,
        "mkdir -p d/sub1 d/sub2 && echo f > d/f && chmod 644 d/f
         echo secret > secret && chmod 600 secret
         chown 1000:1000 d/f && setfattr -n user.x -v 1 d/f",
    );
}

/// A mount by root is usable by every user (the kernel checks the mode bits), as with
/// fuse-overlayfs run by root and with kernel overlayfs.
#[test]
fn root_mounts_serve_every_user() {
    let steps = [
        user(NOBODY, "cat d/f; ls d"),
        user(NOBODY, "cat secret"),
        user(NOBODY, "touch d/new"),
    ];
    same_as(Fs::FuseOverlayfs, layout, "", &steps);
    same_as(Fs::Overlay, layout, "", &steps);
}

/// `-o noallow_other` keeps a root mount to root.
#[test]
fn noallow_other_keeps_a_root_mount_private() {
    use std::os::unix::process::CommandExt;
    let l = Layers::new(1);
    chmod(l.root(), 0o755);
    l.put(0, "f", "x\n");
    chmod(&l.lower(0, "f"), 0o644);
    let cat_as_nobody = || {
        Command::new("cat")
            .arg(l.m("f"))
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };
    {
        let _m = l.mount("noallow_other");
        let out = cat_as_nobody();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    }
    let _m = l.mount("");
    assert_eq!(cat_as_nobody().stdout, b"x\n");
}

/// The options the podman images pass (`nodev,fsync=0`), and the others fuse-overlayfs
/// takes, as it understands them.
#[test]
fn fuse_overlayfs_options_mean_what_they_mean_there() {
    let steps = [
        root("stat -c '%n %h' d d/sub1 .; cat d/f"),
        root("echo x > d/g && sync -f d/g && python3 -c \"import os; f = os.open('d/g', os.O_RDWR); os.fsync(f); os.fdatasync(f)\" && cat d/g"),
        root("mkdir d/sub3 && stat -c '%n %h' d"),
        root("python3 -c \"import os; print(bool(os.statvfs('.').f_flag & os.ST_NODEV))\""),
    ];
    same_as(
        Fs::FuseOverlayfs,
        layout,
        "nodev,fsync=0,static_nlink,threaded=1,writeback=1,fast_ino=1,noacl,xino=auto",
        &steps,
    );
}

/// fsync=0 leaves no marker behind (unlike `volatile`): the next mount is not refused.
#[test]
fn fsync_0_leaves_no_volatile_marker() {
    let l = Layers::new(1);
    l.put(0, "f", "x\n");
    {
        let _m = l.mount("fsync=0");
        std::fs::write(l.m("f"), "y\n").unwrap();
        assert!(!l.work.join("stratafs.volatile").exists());
    }
    let _m = l.mount("");
    assert_eq!(std::fs::read_to_string(l.m("f")).unwrap(), "y\n");
}

/// Options fuse-overlayfs has that stratafs cannot serve are refused in one line.
#[test]
fn plugins_are_refused_in_one_line() {
    let l = Layers::new(1);
    let opts = format!("{},plugins=/usr/lib/stargz.so", l.opts());
    let err = stratafs_refuses(&["-o", &opts, l.mnt.to_str().unwrap()]);
    assert_eq!(
        err.trim(),
        "stratafs: option 'plugins': lazy-pull layer plugins are not supported"
    );
    assert!(!is_mounted(&l.mnt));
}

/// squash_to_uid / squash_to_gid / squash_to_root show every object with that owner (what
/// is stored is unchanged); noxattrs=1 refuses every xattr call (fuse-overlayfs 1.10 still
/// lets removexattr through, which stratafs refuses too).
#[test]
fn squash_and_noxattrs_as_fuse_overlayfs() {
    let owners = [
        root("stat -c '%n %u:%g' d d/f ."),
        root("touch d/new && stat -c '%u:%g' d/new"),
        root("chown 5:5 d/f && stat -c '%u:%g' d/f"),
    ];
    same_as(
        Fs::FuseOverlayfs,
        layout,
        "squash_to_uid=7,squash_to_gid=8",
        &owners,
    );
    same_as(Fs::FuseOverlayfs, layout, "squash_to_root", &owners);
    same_as(
        Fs::FuseOverlayfs,
        layout,
        "squash_to_gid=9,squash_to_root",
        &owners,
    );
    same_as(
        Fs::FuseOverlayfs,
        layout,
        "noxattrs=1",
        &[
            root("getfattr -d d/f"),
            root("getfattr -n user.x d/f"),
            root("setfattr -n user.y -v 2 d/f"),
            root("cat d/f"),
        ],
    );
}

/// uidmapping/gidmapping: owners stored in the layers show through the ranges, ids callers
/// give are stored back through them, unmapped ids show (and are stored) as the overflow
/// id, as fuse-overlayfs does.
#[test]
fn uid_and_gid_mapping_as_fuse_overlayfs() {
    let steps = [
        root("stat -c '%n %u:%g' d d/f secret ."),
        root("touch d/new && stat -c '%u:%g' d/new"),
        root("chown 5003:6004 d/f && stat -c '%u:%g' d/f"),
        root("chown 7:7 secret && stat -c '%u:%g' secret"),
        root("mkdir d/nd && chown 5001:6001 d/nd && stat -c '%u:%g' d/nd"),
    ];
    same_as(
        Fs::FuseOverlayfs,
        layout,
        "uidmapping=0:0:1:1000:5000:100,gidmapping=0:0:1:1000:6000:100",
        &steps,
    );
}

/// The ids inside POSIX ACLs are mapped as owners are (fuse-overlayfs stores them as
/// given): what the layers hold stays in their id space.
#[test]
fn acl_ids_are_mapped_both_ways() {
    let l = Layers::new(1);
    l.put(0, "f", "x\n");
    let _m = l.mount("uidmapping=0:0:1:1000:5000:100,gidmapping=0:0:1:1000:6000:100");
    let run = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m = l.m("f");
    run(&format!("setfacl -m u:5001:r,g:6002:rw {}", m.display()));
    let shown = run(&format!("getfacl -n --omit-header {}", m.display()));
    assert!(
        shown.contains("user:5001:r--") && shown.contains("group:6002:rw-"),
        "{shown}"
    );
    let stored = run(&format!("getfacl -n --omit-header {}", l.up("f").display()));
    assert!(
        stored.contains("user:1001:r--") && stored.contains("group:1002:rw-"),
        "{stored}"
    );
}

/// Setting an ACL keeps a setgid bit for a caller in the file's group through a
/// supplementary group, which /proc lists as the kernel's id: it is compared mapped.
#[test]
fn setfacl_keeps_setgid_for_a_mapped_supplementary_group() {
    let l = Layers::new(1);
    for f in ["member", "outsider"] {
        l.put(0, f, "x\n");
        let p = l.lower(0, f);
        std::os::unix::fs::chown(&p, Some(1003), Some(1004)).unwrap();
        chmod(&p, 0o2775);
    }
    let _m = l.mount("uidmapping=0:0:1:1000:5000:100,gidmapping=0:0:1:1000:6000:100");
    let setfacl = |groups: &str, f: &str| {
        let out = Command::new("setpriv")
            .args([
                "--reuid=5003",
                "--regid=7",
                groups,
                "setfacl",
                "-m",
                "u:5001:r",
            ])
            .arg(l.m(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::metadata(l.m(f)).unwrap().mode() & 0o7777
    };
    assert_eq!(setfacl("--groups=6004", "member"), 0o2775);
    assert_eq!(setfacl("--clear-groups", "outsider"), 0o775);
}

/// `ino32_t`: inode numbers keep their low 32 bits (a lower on another filesystem than the
/// upper composes numbers above 2^32 otherwise).
#[test]
fn ino32_t_keeps_inode_numbers_in_32_bits() {
    let l = Layers::new(1);
    let other = l.root().join("tmpfs");
    let _t = mount_tmpfs(&other, "4m");
    fs::write(other.join("t"), "t\n").unwrap();
    let opts = format!(
        "{},lowerdir={}:{}",
        l.opts(),
        other.display(),
        l.lowers[0].display()
    );
    let ino = |extra: &str| {
        let m = Mount::new(&format!("{opts}{extra}"), &l.mnt);
        let st = fs::metadata(l.m("t")).unwrap().ino();
        let listed = fs::read_dir(&l.mnt)
            .unwrap()
            .flatten()
            .find(|e| e.file_name() == "t")
            .map(|e| e.ino())
            .unwrap();
        drop(m);
        wait_daemons_gone(&l.mnt);
        (st, listed)
    };
    let (wide, wide_listed) = ino("");
    assert!(
        wide > u32::MAX as u64,
        "expected a composed number, got {wide}"
    );
    assert_eq!(wide, wide_listed);
    assert_eq!(ino(",ino32_t"), (wide & 0xffff_ffff, wide & 0xffff_ffff));
}

fn override_layout(l: &Path) {
    sh(
        l,
        "mkdir d && echo x > f && chmod 640 f && chown 7:8 f && echo dev > dev
         setfattr -n user.fuseoverlayfs.override_stat -v 0:0:40755 .
         setfattr -n user.fuseoverlayfs.override_stat -v 3:4:4711 d
         setfattr -n user.fuseoverlayfs.override_stat -v 0:0:620:char-4-1 dev",
    );
}

/// xattr_permissions=2: owners and modes shown from, and written to, an override xattr
/// (`UID:GID:MODE[:TYPE]`), as containers-storage's force_mask wants. The steps where
/// fuse-overlayfs 1.10 behaves run side by side; where it does not (a lower file without
/// an override in a marked layer gives ENODATA there; chown and chmod of a lower file
/// drop its owner; new files show mode 755), stratafs is checked alone.
#[test]
fn xattr_permissions_keep_owners_and_modes_in_an_xattr() {
    same_as(
        Fs::FuseOverlayfs,
        override_layout,
        "xattr_permissions=2",
        &[
            root("stat -c '%n %u:%g %a' . d"),
            root("chown 11:12 d && stat -c '%n %u:%g %a' d"),
            root("getfattr -d -m - d | grep -c override || true"),
        ],
    );
    let l = Layers::new(1);
    override_layout(&l.lowers[0]);
    let mut m = l.mount("xattr_permissions=2,nodev");
    let out = |cmd: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&l.mnt)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        out("stat -c '%n %u:%g %a %F' f dev"),
        "f 7:8 640 regular file\ndev 0:0 620 character special file\n"
    );
    assert_eq!(
        out("chmod 4755 f && chown 5 f && touch n && chown 9:9 n && stat -c '%n %u:%g %a' f n"),
        "f 5:8 4755\nn 9:9 644\n"
    );
    // The real copy keeps its owner and mode; the override says what shows.
    let real = fs::metadata(l.up("f")).unwrap();
    assert_eq!(
        (real.uid(), real.gid(), real.mode() & 0o7777),
        (7, 8, 0o640)
    );
    assert_eq!(
        get_xattr(&l.up("f"), "user.containers.override_stat").unwrap(),
        b"5:8:104755"
    );
    assert_eq!(
        get_xattr(&l.upper, "user.containers.override_stat").unwrap(),
        b"0:0:40755",
        "the upper root takes the lower's marker"
    );
    // A setgid directory whose bit and group live in the override hands both to what is
    // created in it.
    assert_eq!(
        out(
            "umask 022; mkdir sg && chown 0:77 sg && chmod 2775 sg && touch sg/new && \
             mkdir sg/sub && stat -c '%n %g %a' sg/new sg/sub"
        ),
        "sg/new 77 644\nsg/sub 77 2755\n"
    );
    // chown and chmod of a file with no name (O_TMPFILE, linked afterwards) go to the
    // override as well.
    assert_eq!(
        out(r#"python3 -c "
import ctypes, os
fd = os.open('.', os.O_TMPFILE | os.O_RDWR, 0o600)
os.fchown(fd, 5, 6); os.fchmod(fd, 0o640)
st = os.fstat(fd); print(st.st_uid, st.st_gid, oct(st.st_mode & 0o7777))
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
libc = ctypes.CDLL(None, use_errno=True)
assert libc.linkat(AT_FDCWD, b'/proc/self/fd/%d' % fd, AT_FDCWD, b'tmpd', AT_SYMLINK_FOLLOW) == 0
""#),
        "5 6 0o640\n"
    );
    let real = fs::metadata(l.up("tmpd")).unwrap();
    assert_eq!((real.uid(), real.mode() & 0o7777), (0, 0o600));
    assert_eq!(
        get_xattr(&l.up("tmpd"), "user.containers.override_stat").unwrap(),
        b"5:6:100640"
    );
    // The override names are the mount's own: not listed, not settable (one set through
    // any mount would take effect at a later mount that reads them).
    assert!(!list_xattr(&l.m("f"))
        .unwrap()
        .iter()
        .any(|n| n.contains("override_stat")));
    assert!(set_xattr(&l.m("n"), "user.containers.override_stat", b"0:0:4755").is_err());
    m.unmount();
    // Without nodev a device override shows the regular file it is (a layer must not
    // hand out the host's devices), and a mount with default options of an upper that
    // keeps overrides changes the override on chmod, not the real file behind it.
    let _m = l.mount("");
    assert_eq!(out("stat -c '%n %F' dev"), "dev regular file\n");
    assert_eq!(out("chmod 600 f && stat -c '%n %u:%g %a' f"), "f 5:8 600\n");
    assert_eq!(fs::metadata(l.up("f")).unwrap().mode() & 0o7777, 0o640);
}
