//! Mounts by a plain user (issue 11, part 2): the daemon, run as uid 65534 on layers that
//! user owns, mounts through fusermount3 as libfuse filesystems do, keeps its private
//! xattrs in `user.stratafs.*` (no trusted.* for a user), ends on `fusermount3 -u` and on
//! the user's `umount`; `allow_other` follows /etc/fuse.conf; fstab lines with `user` /
//! `users` mount for the user; what a user may not mount is a one-line error. Options that
//! change owners (uidmapping, squash) are checked here too, as the user.
//!
//! The machine's /etc/fstab and /etc/fuse.conf are never touched: the tests that need
//! other contents run in a private mount namespace (`unshare -m`) where a temp file is
//! bind-mounted over them. fusermount3 opens /dev/fuse as the user, which Debian's udev
//! rule makes 0666; where a machine (a container) leaves it 0600, the tests make it 0666
//! while they run and restore the mode after the last one.
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::*;

const USER: u32 = 65534;
const OTHER_USER: u32 = 1234;

/// /dev/fuse open to users while any test of this file runs.
struct FuseDeviceOpen;

static DEVICE_USERS: Mutex<(usize, Option<u32>)> = Mutex::new((0, None));

impl FuseDeviceOpen {
    fn new() -> FuseDeviceOpen {
        let mut g = DEVICE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            let mode = fs::metadata("/dev/fuse").expect("/dev/fuse").mode() & 0o7777;
            if mode & 0o006 != 0o006 {
                fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
                g.1 = Some(mode);
            }
        }
        g.0 += 1;
        FuseDeviceOpen
    }
}

impl Drop for FuseDeviceOpen {
    fn drop(&mut self) {
        let mut g = DEVICE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        g.0 -= 1;
        if g.0 == 0 {
            if let Some(mode) = g.1.take() {
                let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode));
            }
        }
    }
}

/// Layers owned by USER, with a copy of the binary under test the user can run (the
/// build dir may sit in a home the user cannot enter).
struct UserLayers {
    l: Layers,
    bin: PathBuf,
    _dev: FuseDeviceOpen,
}

impl UserLayers {
    fn new() -> UserLayers {
        let dev = FuseDeviceOpen::new();
        let l = Layers::new(1);
        l.put(0, "f", "lower\n");
        l.put(0, "d/g", "g\n");
        l.put(0, "gone", "x\n");
        let copy = l.root().join("stratafs");
        fs::copy(bin(), &copy).unwrap();
        let st = Command::new("chown")
            .args(["-R", &format!("{USER}:{USER}")])
            .arg(l.root())
            .status()
            .unwrap();
        assert!(st.success());
        chmod(l.root(), 0o755);
        UserLayers {
            l,
            bin: copy,
            _dev: dev,
        }
    }

    /// The binary under test, as USER with a plain PATH.
    fn stratafs(&self, args: &[&str]) -> Output {
        as_user(USER, Command::new(&self.bin).args(args))
    }

    fn mount_as_user(&self, extra: &str) -> Output {
        let opts = format!("{},{extra}", self.l.opts());
        self.stratafs(&[
            "-o",
            opts.trim_end_matches(','),
            self.l.mnt.to_str().unwrap(),
        ])
    }

    /// Mounts as USER and returns the guard (root's umount when dropped).
    fn mount(&self, extra: &str) -> Mount {
        let out = self.mount_as_user(extra);
        assert!(
            out.status.success(),
            "mount as user failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(&self.l.mnt));
        Mount {
            mnt: self.l.mnt.clone(),
        }
    }

    fn wait_daemon_gone(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !daemons_of(&self.bin, &self.l.mnt).is_empty() {
            assert!(std::time::Instant::now() < deadline, "daemon still running");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn as_user(uid: u32, c: &mut Command) -> Output {
    c.env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("LC_ALL", "C")
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run as user")
}

fn sh_as(uid: u32, dir: &Path, cmd: &str) -> String {
    let out = as_user(uid, Command::new("sh").arg("-c").arg(cmd).current_dir(dir));
    assert!(
        out.status.success(),
        "`{cmd}` as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mount_line(mnt: &Path) -> String {
    let want = format!(" {} ", mnt.display());
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.contains(&want))
        .unwrap_or_default()
        .to_string()
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("stratafs: "), "{err:?}");
    err
}

#[test]
fn a_plain_user_mounts_writes_and_remounts_through_fusermount3() {
    let u = UserLayers::new();
    let l = &u.l;
    let mut m = u.mount("");
    let line = mount_line(&l.mnt);
    assert!(line.contains(" fuse.stratafs "), "{line}");
    assert!(line.contains(&format!("user_id={USER}")), "{line}");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");

    let before = sh_as(
        USER,
        &l.mnt,
        "cat f d/g && echo more >> f && rm gone && mkdir n && echo new > n/h && \
         stat -c '%n %i' f d/g n/h",
    );
    assert!(before.starts_with("lower\ng\n"), "{before}");
    assert!(!l.up("f").exists() || fs::read_to_string(l.up("f")).unwrap() == "lower\nmore\n");
    assert!(
        l.up(".wh.gone").exists(),
        "whiteout of a removed lower file"
    );
    // The copy-up's inode number is kept in the user namespace of xattrs: root's trusted.*
    // is out of a user's reach.
    let names = list_xattr(&l.up("f")).unwrap();
    assert!(names.iter().any(|n| n == "user.stratafs.ino"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("trusted.")),
        "{names:?}"
    );
    // What the daemon serves as `stratafs stats` reaches the user who mounted.
    let stats = u.stratafs(&["stats", l.mnt.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&stats.stdout).contains("requests"),
        "stratafs stats as the user: {}",
        String::from_utf8_lossy(&stats.stderr)
    );

    // fusermount3 -u ends the mount and the daemon.
    let out = as_user(USER, Command::new("fusermount3").arg("-u").arg(&l.mnt));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&l.mnt));
    u.wait_daemon_gone();
    m.unmount();

    // Mounted again: the same content and the same inode numbers.
    let _m = u.mount("");
    let after = sh_as(USER, &l.mnt, "cat f && stat -c '%n %i' f d/g n/h");
    let numbers = |s: &str| {
        s.lines()
            .filter(|l| l.contains(' '))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&after), numbers(&before));
    assert!(after.starts_with("lower\nmore\n"));
}

#[test]
fn the_users_umount_ends_the_daemon() {
    let u = UserLayers::new();
    let _m = u.mount("");
    let out = as_user(USER, Command::new("umount").arg(&u.l.mnt));
    assert!(
        out.status.success(),
        "umount as the user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&u.l.mnt));
    u.wait_daemon_gone();
}

/// Refusals are one line and change nothing in the layers (S20): checked before the
/// workdir is touched.
#[test]
fn what_a_user_may_not_mount_is_one_line_and_changes_nothing() {
    let u = UserLayers::new();
    // A mount point the user cannot write.
    let theirs = u.l.root().join("roots");
    fs::create_dir(&theirs).unwrap();
    let before = snapshot(u.l.root());
    let opts = u.l.opts();
    let err = one_line_error(&u.stratafs(&["-o", &opts, theirs.to_str().unwrap()]));
    assert!(err.contains("no write access"), "{err}");
    // allow_other without user_allow_other in /etc/fuse.conf (Debian's default).
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "user_allow_other") {
        let err = one_line_error(&u.mount_as_user("allow_other"));
        assert!(err.contains("user_allow_other"), "{err}");
    }
    assert!(!is_mounted(&u.l.mnt) && !is_mounted(&theirs));
    assert_same_tree("refused user mounts", &before, &snapshot(u.l.root()));
}

/// Runs `script` as root in a private mount namespace, with `binds` (file, target) bind
/// mounted first; its stdout, or a panic with its stderr.
fn in_private_namespace(binds: &[(&Path, &str)], script: &str) -> String {
    let mut full = String::from("set -e\n");
    for (file, target) in binds {
        full.push_str(&format!("mount --bind '{}' '{target}'\n", file.display()));
    }
    full.push_str(script);
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &full])
        .output()
        .expect("unshare");
    assert!(
        out.status.success(),
        "script failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn allow_other_follows_user_allow_other() {
    let u = UserLayers::new();
    let conf = u.l.root().join("fuse.conf");
    fs::write(&conf, "user_allow_other\n").unwrap();
    let mnt = u.l.mnt.display();
    let out = in_private_namespace(
        &[(&conf, "/etc/fuse.conf")],
        &format!(
            "trap 'umount -l {mnt} 2>/dev/null || true' EXIT
             setpriv --reuid={USER} --regid={USER} --clear-groups {bin} -o {opts},allow_other {mnt}
             setpriv --reuid={OTHER_USER} --regid={OTHER_USER} --clear-groups cat {mnt}/f
             setpriv --reuid={USER} --regid={USER} --clear-groups fusermount3 -u {mnt}",
            bin = u.bin.display(),
            opts = u.l.opts(),
        ),
    );
    assert_eq!(out, "lower\n");
    u.wait_daemon_gone();
}

/// fstab lines with `user` and `users`, type fuse.stratafs (mount.fuse3 runs `stratafs`
/// through /bin/sh, which looks in /usr/local/sbin first: a private tmpfs there holds the
/// binary under test), mounted and unmounted by the user with mount(8) and umount(8).
#[test]
fn fstab_user_lines_mount_for_a_plain_user() {
    let u = UserLayers::new();
    let mnt = u.l.mnt.display();
    for (i, flag) in ["user", "users"].iter().enumerate() {
        let fstab = u.l.root().join(format!("fstab{i}"));
        fs::write(
            &fstab,
            format!(
                "stratafs {mnt} fuse.stratafs {flag},noauto,{} 0 0\n",
                u.l.opts()
            ),
        )
        .unwrap();
        let out = in_private_namespace(
            &[(&fstab, "/etc/fstab")],
            &format!(
                "trap 'umount -l {mnt} 2>/dev/null || true' EXIT
                 mount -t tmpfs tmpfs /usr/local/sbin
                 cp {bin} /usr/local/sbin/stratafs
                 setpriv --reuid={USER} --regid={USER} --clear-groups mount {mnt}
                 grep ' {mnt} ' /proc/self/mounts | cut -d' ' -f3
                 setpriv --reuid={USER} --regid={USER} --clear-groups cat {mnt}/f
                 setpriv --reuid={USER} --regid={USER} --clear-groups umount {mnt}
                 grep -c ' {mnt} ' /proc/self/mounts || true",
                bin = u.bin.display(),
            ),
        );
        assert_eq!(out, "fuse.stratafs\nlower\n0\n", "fstab `{flag}` line");
        u.wait_daemon_gone();
    }
}

/// Owners shown through uidmapping/gidmapping and squash_to_root, as the user.
#[test]
fn mapping_and_squash_for_a_plain_user() {
    let u = UserLayers::new();
    u.l.put(0, "roots", "r\n");
    chmod(&u.l.lower(0, "roots"), 0o644); // owned by root, which USER cannot map
    let cases = [
        (
            "uidmapping=65534:0:1,gidmapping=65534:0:1",
            "f 0:0\nd 0:0\nroots 65534:65534\n",
        ),
        (
            "uidmapping=65534:1000:1,gidmapping=65534:2000:1",
            "f 1000:2000\nd 1000:2000\nroots 65534:65534\n",
        ),
        ("squash_to_root", "f 0:0\nd 0:0\nroots 0:0\n"),
    ];
    for (opts, want) in cases {
        let m = u.mount(opts);
        let out = sh_as(USER, &u.l.mnt, "stat -c '%n %u:%g' f d roots");
        assert_eq!(out, want, "{opts}");
        drop(m);
        u.wait_daemon_gone();
    }
}

/// xattr_permissions=2 for a user without subordinate ids: a file of another owner is
/// copied up with that owner kept in the override (fuse-overlayfs 1.10 answers EPERM).
#[test]
fn xattr_permissions_let_a_user_copy_up_files_of_other_owners() {
    let u = UserLayers::new();
    u.l.put(0, "theirs", "x\n");
    chmod(&u.l.lower(0, "theirs"), 0o666);
    u.l.mkdir(0, "theirdir");
    chmod(&u.l.lower(0, "theirdir"), 0o777); // both owned by root
    let _m = u.mount("xattr_permissions=2");
    let out = sh_as(
        USER,
        &u.l.mnt,
        "echo more >> theirs && touch theirdir/mine && \
         stat -c '%n %u:%g %a' theirs theirdir theirdir/mine && cat theirs",
    );
    assert_eq!(
        out,
        "theirs 0:0 666\ntheirdir 0:0 777\ntheirdir/mine 65534:65534 644\nx\nmore\n"
    );
    let real = fs::metadata(u.l.up("theirs")).unwrap();
    assert_eq!(real.uid(), USER, "the real copy is the user's");
}

/// An upper a plain user's mount wrote keeps stratafs' private xattrs as user.*; a later
/// mount of it by root reads them there (the workdir records the namespace), so inode
/// numbers of copied-up files stay what the user saw (S8, S24).
#[test]
fn a_users_upper_mounted_by_root_keeps_its_private_xattrs() {
    let u = UserLayers::new();
    let m = u.mount("");
    let seen = sh_as(USER, &u.l.mnt, "echo more >> f && stat -c %i f");
    drop(m);
    u.wait_daemon_gone();
    assert_eq!(
        fs::read_to_string(u.l.work.join("stratafs.xattrs")).unwrap(),
        "user\n"
    );
    let _root = u.l.mount("");
    let again = sh_as(0, &u.l.mnt, "stat -c %i f");
    assert_eq!(
        again, seen,
        "st_ino of a copied-up file after a remount by root"
    );
}

/// A directory its owner may read but not search (mode 0444) lists through the mount as it
/// does natively: the daemon, running as that owner, cannot open it through its "." then,
/// and reads it through its /proc link instead.
#[test]
fn a_dir_its_owner_may_read_but_not_search_lists_for_the_owner() {
    let u = UserLayers::new();
    let l = &u.l;
    l.put(0, "r/a", "");
    l.put(0, "r/b", "");
    let r = l.lower(0, "r");
    let st = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(&r)
        .status()
        .unwrap();
    assert!(st.success());
    set_xattr(&r, "user.k", b"v").unwrap();
    chmod(&r, 0o444);
    let cmd = |at: &str| format!("ls {at} && getfattr --only-values -n user.k {at}");
    let native = sh_as(USER, l.root(), &cmd(&r.display().to_string()));
    assert_eq!(native, "a\nb\nv");
    let _m = u.mount("");
    assert_eq!(sh_as(USER, &l.mnt, &cmd("r")), native);
}
