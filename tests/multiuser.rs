//! Multi-user (issue 6): a mount with `allow_other,default_permissions`, used by an
//! unprivileged uid (54321, no user-db entry needed: a forked child drops to it with
//! setgroups/setgid/setuid). Every operation is also done on a plain directory laid out the
//! same way, and the errnos must match what the kernel answers there:
//! - no reading 0600 files of another user (in a lower and in the upper);
//! - no writing into 0755 root dirs (create, mkdir, mknod, symlink, link, unlink, rename);
//! - no chmod/chown of others' files, no trusted.* xattrs, no device nodes, the sticky bit;
//! - no escalation through copy-up: setuid/setgid bits are cleared when a non-owner writes
//!   or truncates a file it may write (lower files copied up, and upper files), as the
//!   kernel does, and the upper copy never carries them;
//! - new files, dirs, nodes and symlinks belong to the caller's uid/gid; a setgid dir
//!   passes its group on and a new dir in it is setgid (S17).
mod common;
use common::*;

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const USER: u32 = 54321;
const OTHER: u32 = 54999;
const GROUP: u32 = 3333;

/// Runs `f` in a forked child as uid/gid `USER` (no supplementary groups, umask 022) and
/// returns what it returned (an errno, 0 for success; 255 if it panicked).
fn as_user(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes syscalls and plain Rust calls, then _exits; glibc's
    // fork handlers keep malloc usable in the child.
    unsafe {
        match libc::fork() {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => {
                let ok = libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setgid(USER) == 0
                    && libc::setuid(USER) == 0;
                libc::umask(0o022);
                let r = if ok {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(255)
                } else {
                    254
                };
                libc::_exit(r)
            }
            pid => {
                let mut st = 0;
                assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
                assert!(libc::WIFEXITED(st), "child died: status {st}");
                libc::WEXITSTATUS(st)
            }
        }
    }
}

fn err_of<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(254).min(253),
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn md(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// Lays out the same tree in `dir` (a lower, or the plain twin) and returns nothing.
fn lay_out(dir: &Path) {
    let w = |rel: &str, mode: u32, uid: u32, gid: u32| {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("data of {rel}\n")).unwrap();
        chown(&p, uid, gid);
        chmod(&p, mode);
    };
    let d = |rel: &str, mode: u32, uid: u32, gid: u32| {
        let p = dir.join(rel);
        fs::create_dir_all(&p).unwrap();
        chown(&p, uid, gid);
        chmod(&p, mode);
    };
    d("rootdir", 0o755, 0, 0);
    w("rootdir/rootfile", 0o644, 0, 0);
    w("secret600", 0o600, OTHER, OTHER);
    w("mine600", 0o600, USER, USER);
    d("pub", 0o777, 0, 0);
    d("sticky", 0o1777, 0, 0);
    w("sticky/others", 0o666, OTHER, OTHER);
    d("sgid", 0o2777, 0, GROUP);
    // setuid/setgid files the user may write (world-writable), owned by root and others.
    for n in ["suid_w", "suid_a", "suid_t", "suid_ft", "sgid_w", "sgid_t"] {
        let mode = if n.starts_with("suid") {
            0o4777
        } else {
            0o2777
        };
        w(n, mode, 0, 0);
    }
    w("suid_other", 0o4777, OTHER, OTHER);
    // setgid without group exec is a mandatory-locking mark, not a privilege: kept.
    w("sgid_noexec", 0o2666, 0, 0);
}

struct Bed {
    // First, so that it is unmounted before the temp dir is removed.
    _m: Mount,
    l: Layers,
    plain: PathBuf,
}

impl Bed {
    fn new(extra: &str) -> Bed {
        let l = Layers::new(1);
        chmod(l.root(), 0o755);
        lay_out(&l.lowers[0]);
        // The upper holds its own copies of some of them (no copy-up needed there).
        fs::create_dir(l.up("upper_only")).unwrap();
        chmod(&l.up("upper_only"), 0o755);
        for (n, mode, uid) in [("usecret600", 0o600, OTHER), ("usuid_w", 0o4777, 0)] {
            let p = l.up(n);
            fs::write(&p, "upper\n").unwrap();
            chown(&p, uid, uid);
            chmod(&p, mode);
        }
        let plain = l.root().join("plain");
        fs::create_dir(&plain).unwrap();
        lay_out(&plain);
        fs::create_dir(plain.join("upper_only")).unwrap();
        for (n, mode, uid) in [("usecret600", 0o600, OTHER), ("usuid_w", 0o4777, 0)] {
            let p = plain.join(n);
            fs::write(&p, "upper\n").unwrap();
            chown(&p, uid, uid);
            chmod(&p, mode);
        }
        let opts = if extra.is_empty() {
            "allow_other,default_permissions".to_string()
        } else {
            format!("allow_other,default_permissions,{extra}")
        };
        let m = l.mount(&opts);
        Bed { _m: m, l, plain }
    }

    /// Runs `op` as the user on the mount and on the plain twin; the errnos must match.
    /// Returns the errno.
    #[track_caller]
    fn same(&self, what: &str, op: impl Fn(&Path) -> i32 + Copy) -> i32 {
        let mnt = self.l.mnt.clone();
        let plain = self.plain.clone();
        let a = as_user(move || op(&mnt));
        let b = as_user(move || op(&plain));
        assert_eq!(
            a, b,
            "{what}: errno {a} through the mount, {b} on a plain dir"
        );
        a
    }
}

fn read(p: &Path) -> io::Result<String> {
    let mut s = String::new();
    fs::File::open(p)?.read_to_string(&mut s)?;
    Ok(s)
}

#[test]
fn other_users_files_and_root_dirs_are_protected() {
    let b = Bed::new("");
    let mut n = 0;
    let mut want = |what: &str, e: i32, expected: i32| {
        n += 1;
        assert_eq!(e, expected, "{what}");
    };
    // Reading: 0600 files of another user, from the lower and from the upper.
    for f in ["secret600", "usecret600"] {
        want(
            &format!("read {f}"),
            b.same(f, move |d| err_of(read(&d.join(f)))),
            libc::EACCES,
        );
        want(
            &format!("open {f} for writing"),
            b.same(f, move |d| {
                err_of(OpenOptions::new().write(true).open(d.join(f)))
            }),
            libc::EACCES,
        );
    }
    want(
        "read own 0600",
        b.same("mine", |d| err_of(read(&d.join("mine600")))),
        0,
    );
    // Writing into a 0755 root dir, and at the 0755 root of the mount itself.
    for dir in ["rootdir", "upper_only", ""] {
        let j = move |d: &Path, n: &str| {
            if dir.is_empty() {
                d.join(n)
            } else {
                d.join(dir).join(n)
            }
        };
        want(
            &format!("create in {dir:?}"),
            b.same("create", move |d| err_of(fs::write(j(d, "new"), "x"))),
            libc::EACCES,
        );
        want(
            &format!("mkdir in {dir:?}"),
            b.same("mkdir", move |d| err_of(fs::create_dir(j(d, "newdir")))),
            libc::EACCES,
        );
        want(
            &format!("mkfifo in {dir:?}"),
            b.same("mkfifo", move |d| {
                err_of(mknod(&j(d, "fifo"), libc::S_IFIFO | 0o644, 0, 0))
            }),
            libc::EACCES,
        );
        want(
            &format!("symlink in {dir:?}"),
            b.same("symlink", move |d| err_of(symlink("x", j(d, "sl")))),
            libc::EACCES,
        );
        want(
            &format!("link into {dir:?}"),
            b.same("link", move |d| {
                err_of(fs::hard_link(d.join("mine600"), j(d, "hl")))
            }),
            libc::EACCES,
        );
    }
    want(
        "unlink in rootdir",
        b.same("unlink", |d| {
            err_of(fs::remove_file(d.join("rootdir/rootfile")))
        }),
        libc::EACCES,
    );
    want(
        "rename out of rootdir",
        b.same("rename", |d| {
            err_of(fs::rename(d.join("rootdir/rootfile"), d.join("pub/stolen")))
        }),
        libc::EACCES,
    );
    want(
        "rmdir rootdir",
        b.same("rmdir", |d| err_of(fs::remove_dir(d.join("rootdir")))),
        libc::EACCES,
    );
    // Others' files: no chmod, no chown, no times, no trusted.* xattr.
    want(
        "chmod other's file",
        b.same("chmod", |d| {
            err_of(fs::set_permissions(
                d.join("secret600"),
                fs::Permissions::from_mode(0o666),
            ))
        }),
        libc::EPERM,
    );
    want(
        "chown own file to root",
        b.same("chown", |d| {
            err_of(std::os::unix::fs::chown(
                d.join("mine600"),
                Some(0),
                Some(0),
            ))
        }),
        libc::EPERM,
    );
    want(
        "utimes of other's file",
        b.same("utimes", |d| {
            err_of(set_times(&d.join("secret600"), (1, 0), (1, 0)))
        }),
        libc::EPERM,
    );
    want(
        "trusted xattr on own file",
        b.same("trusted", |d| {
            err_of(set_xattr(&d.join("mine600"), "trusted.x", b"y"))
        }),
        libc::EPERM,
    );
    want(
        "user xattr on other's file",
        b.same("user xattr", |d| {
            err_of(set_xattr(&d.join("secret600"), "user.x", b"y"))
        }),
        libc::EACCES,
    );
    // Devices need CAP_MKNOD, in a dir the user may write.
    want(
        "mknod a char device",
        b.same("mknod", |d| {
            err_of(mknod(&d.join("pub/mem"), libc::S_IFCHR | 0o666, 1, 1))
        }),
        libc::EPERM,
    );
    // The sticky bit: no removing or renaming another user's file in /tmp-like dirs.
    want(
        "unlink other's file in a sticky dir",
        b.same("sticky unlink", |d| {
            err_of(fs::remove_file(d.join("sticky/others")))
        }),
        libc::EPERM,
    );
    want(
        "rename other's file in a sticky dir",
        b.same("sticky rename", |d| {
            err_of(fs::rename(d.join("sticky/others"), d.join("sticky/mine")))
        }),
        libc::EPERM,
    );
    // A hard link to another user's file (fs.protected_hardlinks decides, as on a plain dir).
    b.same("link to other's file", |d| {
        err_of(fs::hard_link(d.join("secret600"), d.join("pub/hl")))
    });
    n += 1;
    // Nothing of the secrets reached the upper by any of this.
    for f in ["pub/stolen", "pub/hl", "rootdir/new"] {
        if let Ok(m) = fs::symlink_metadata(b.l.up(f)) {
            assert!(
                m.mode() & 0o004 == 0 || m.uid() != OTHER,
                "{f} in the upper"
            );
        }
    }
    assert_eq!(md(&b.l.lower(0, "secret600")).mode() & 0o7777, 0o600);
    eprintln!("multiuser: {n} permission checks, each against a plain dir");
}

/// An operation on a path, as a plain function.
type PathOp = fn(&Path) -> io::Result<()>;

/// Mode bits of a path, as root sees them.
fn perm(p: &Path) -> u32 {
    md(p).mode() & 0o7777
}

#[test]
fn no_escalation_through_copy_up() {
    let b = Bed::new("");
    // Write, append, truncate(2): the kernel clears setuid, and setgid with group exec,
    // when a caller without CAP_FSETID changes the data.
    let ops: [(&str, PathOp); 6] = [
        ("suid_w", |p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .and_then(|mut f| f.write_all(b"evil"))
        }),
        ("suid_a", |p| {
            OpenOptions::new()
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(b"evil"))
        }),
        ("suid_t", |p| truncate(p, 1)),
        ("sgid_w", |p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .and_then(|mut f| f.write_all(b"evil"))
        }),
        ("sgid_t", |p| truncate(p, 1)),
        ("usuid_w", |p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .and_then(|mut f| f.write_all(b"evil"))
        }),
    ];
    for (name, op) in ops {
        let e = b.same(name, move |d| err_of(op(&d.join(name))));
        assert_eq!(e, 0, "{name}: the user may write it");
        let (mnt_mode, plain_mode) = (perm(&b.l.m(name)), perm(&b.plain.join(name)));
        assert_eq!(
            mnt_mode, plain_mode,
            "{name}: mode after the write (mount vs plain)"
        );
        assert_eq!(
            mnt_mode & 0o6000,
            0,
            "{name}: privilege bits survived the write"
        );
        assert_eq!(
            perm(&b.l.up(name)) & 0o6000,
            0,
            "{name}: the upper copy keeps privilege bits"
        );
        assert_eq!(
            md(&b.l.up(name)).uid(),
            md(&b.plain.join(name)).uid(),
            "{name}: owner"
        );
    }
    // A read never copies up, so the lower's bits stay as they are (and the lower is intact).
    assert_eq!(
        b.same("read suid_other", |d| err_of(read(&d.join("suid_other")))),
        0
    );
    assert!(
        fs::symlink_metadata(b.l.up("suid_other")).is_err(),
        "a read copied up"
    );
    assert_eq!(
        perm(&b.l.lower(0, "suid_w")),
        0o4777,
        "the lower is untouched"
    );
    // Setting setuid on a file one does not own is refused; on one's own file it is allowed
    // but gives nothing (the file is the user's).
    assert_eq!(
        b.same("chmod u+s other's", |d| err_of(fs::set_permissions(
            d.join("suid_other"),
            fs::Permissions::from_mode(0o4777)
        ))),
        libc::EPERM
    );
    // setgid to a group the user is not in is dropped by the kernel on chmod.
    let e = b.same("chmod g+s own", |d| {
        let p = d.join("pub/own");
        err_of(
            fs::write(&p, "x")
                .and_then(|_| fs::set_permissions(&p, fs::Permissions::from_mode(0o2755))),
        )
    });
    assert_eq!(e, 0);
    assert_eq!(
        perm(&b.l.m("pub/own")),
        perm(&b.plain.join("pub/own")),
        "g+s on own file"
    );
    eprintln!("multiuser: setuid/setgid cleared on write, append and truncate like the kernel");
}

/// Two edge cases where the kernel's FUSE client leaves privilege bits to the daemon:
/// open(O_TRUNC) by a non-owner clears setuid on ext4 (do_truncate), and a write by a caller
/// outside the file's group clears setgid even without group exec (kernel 6.2+ rules).
#[test]
fn privilege_bits_cleared_like_the_kernel_edge_cases() {
    let b = Bed::new("");
    let e = b.same("sgid_noexec", |d| {
        err_of(
            OpenOptions::new()
                .write(true)
                .open(d.join("sgid_noexec"))
                .and_then(|mut f| f.write_all(b"x")),
        )
    });
    assert_eq!(e, 0);
    assert_eq!(
        perm(&b.l.m("sgid_noexec")),
        perm(&b.plain.join("sgid_noexec"))
    );
    assert_eq!(
        perm(&b.l.up("sgid_noexec")) & 0o2000,
        0,
        "the upper keeps setgid"
    );
    let e = b.same("O_TRUNC", |d| {
        err_of(
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(d.join("suid_ft")),
        )
    });
    assert_eq!(e, 0);
    assert_eq!(perm(&b.plain.join("suid_ft")) & 0o6000, 0, "ext4 clears it");
    assert_eq!(
        perm(&b.l.m("suid_ft")) & 0o6000,
        0,
        "setuid survived an O_TRUNC open"
    );
}

#[test]
fn new_objects_belong_to_the_caller_and_setgid_dirs_pass_their_group() {
    for extra in ["", "passthrough=off"] {
        let b = Bed::new(extra);
        for dir in ["pub", "sgid"] {
            let make = move |d: &Path| -> i32 {
                let base = d.join(dir);
                let r = (|| {
                    fs::write(base.join("file"), "x")?;
                    fs::create_dir(base.join("dir"))?;
                    mknod(&base.join("fifo"), libc::S_IFIFO | 0o666, 0, 0)?;
                    symlink("file", base.join("link"))?;
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o777)
                        .open(base.join("exe"))?;
                    Ok::<(), io::Error>(())
                })();
                err_of(r)
            };
            assert_eq!(b.same(&format!("create in {dir}"), make), 0);
            for n in ["file", "dir", "fifo", "link", "exe"] {
                let (m, p) = (
                    md(&b.l.m(&format!("{dir}/{n}"))),
                    md(&b.plain.join(format!("{dir}/{n}"))),
                );
                let u = md(&b.l.up(&format!("{dir}/{n}")));
                let want_gid = if dir == "sgid" { GROUP } else { USER };
                assert_eq!(
                    (m.uid(), m.gid()),
                    (USER, want_gid),
                    "{extra} {dir}/{n}: owner in the mount"
                );
                assert_eq!(
                    (u.uid(), u.gid()),
                    (USER, want_gid),
                    "{extra} {dir}/{n}: owner in the upper"
                );
                assert_eq!(
                    (p.uid(), p.gid()),
                    (USER, want_gid),
                    "{dir}/{n}: owner on a plain dir"
                );
                if n != "link" {
                    assert_eq!(
                        m.mode(),
                        p.mode(),
                        "{extra} {dir}/{n}: mode (umask 022, setgid dirs)"
                    );
                    assert_eq!(u.mode(), p.mode(), "{extra} {dir}/{n}: mode in the upper");
                }
            }
            if dir == "sgid" {
                assert_ne!(
                    perm(&b.l.m("sgid/dir")) & libc::S_ISGID,
                    0,
                    "a new dir in a setgid dir is setgid"
                );
            }
        }
        // The user's own new file: readable by it, not by another uid (0600 after chmod).
        let e = b.same("private", |d| {
            let p = d.join("pub/private");
            err_of(
                fs::write(&p, "mine")
                    .and_then(|_| fs::set_permissions(&p, fs::Permissions::from_mode(0o600))),
            )
        });
        assert_eq!(e, 0);
        assert_eq!(perm(&b.l.up("pub/private")), 0o600);
        assert_eq!(md(&b.l.up("pub/private")).uid(), USER);
    }
}
