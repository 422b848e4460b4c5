//! Mount flags, read-only and remounts (S25 of docs/semantics.md), in-use layer dirs (S26),
//! and open handles (the fallback rule: as overlayfs), as kernel overlayfs has them
//! (issue 10, items 12-19). Side-by-side scenarios (tests/common/side.rs) assert the same
//! outcome on both filesystems; what overlayfs does not have (refusing a second mount of an
//! upper, the remount path of our own binary) is checked on stratafs alone.
mod common;
use common::side::*;
use common::*;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

fn flags_layout(l: &Path) {
    sh(
        l,
        "printf '#!/bin/sh\\necho ran\\n' > script && chmod 755 script
         mknod null c 1 3 && chmod 666 null
         cp /bin/true suidtrue && chmod 4755 suidtrue",
    );
}

const STATVFS_FLAGS: &str = "python3 -c \"import os; f = os.statvfs('.').f_flag; \
     print([n for n in ('ST_RDONLY', 'ST_NOSUID', 'ST_NODEV', 'ST_NOEXEC', 'ST_NOATIME') \
     if f & getattr(os, n)])\"";

/// S25, item 14: nosuid, nodev, noexec and noatime reach the kernel mount.
#[test]
fn generic_mount_flags_apply_as_on_overlayfs() {
    same_as_overlayfs_with(
        flags_layout,
        "nosuid,nodev,noexec,noatime",
        &[
            root(STATVFS_FLAGS),
            root("./script"),
            root("echo x > null"),
            root("cat null"),
        ],
    );
    // And without them the same objects work.
    same_as_overlayfs(
        flags_layout,
        &[root(STATVFS_FLAGS), root("./script"), root("echo x > null")],
    );
}

fn handles_layout(l: &Path) {
    sh(
        l,
        "mkdir lowdir && echo l > lowdir/f && echo low > lowfile
         echo g > setgid && chown 54321:54321 setgid && chmod 2775 setgid
         echo u > setuid && chown 54321:54321 setuid && chmod 4755 setuid
         mkdir -m 777 shared
         echo s > suidw && chmod 4777 suidw",
    );
}

/// fstat of an fd whose name was replaced or removed (python, so the fd stays open).
const FSTAT_AFTER_RENAME: &str = r#"python3 -c "
import os
open('a', 'w').write('a'); open('b', 'w').write('b')
fd = os.open('b', os.O_RDONLY); os.rename('a', 'b')
print('file', os.fstat(fd).st_nlink, os.read(fd, 9)); os.close(fd)
os.mkdir('da'); os.mkdir('db')
fd = os.open('db', os.O_RDONLY); os.rename('da', 'db')
st = os.fstat(fd); print('dir', st.st_nlink, oct(st.st_mode)); os.close(fd)
os.mkdir('dc'); fd = os.open('dc', os.O_RDONLY); os.rmdir('dc')
print('rmdir', os.fstat(fd).st_nlink); os.close(fd)
fd = os.open('lowfile', os.O_RDONLY); os.unlink('lowfile')
print('lower', os.read(fd, 9)); os.close(fd)
""#;

/// Entries created after opendir appear after rewinddir (python's os.scandir cannot
/// rewind, so through libc).
const REWINDDIR: &str = r#"python3 -c "
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.opendir.restype = ctypes.c_void_p
libc.readdir.restype = ctypes.c_void_p
libc.readdir.argtypes = [ctypes.c_void_p]
libc.rewinddir.argtypes = [ctypes.c_void_p]
libc.closedir.argtypes = [ctypes.c_void_p]
def count(d):
    n = 0
    while libc.readdir(d):
        n += 1
    return n
d = libc.opendir(b'lowdir')
print('first', count(d))
open('lowdir/new1', 'w').close()
libc.rewinddir(d); print('after create', count(d))
os.unlink('lowdir/f')
libc.rewinddir(d); print('after unlink', count(d))
libc.closedir(d)
""#;

/// A plain user writes a setuid file that root holds open for reading (so its opens
/// share one passthrough backing file): the bit goes all the same.
const WRITE_WHILE_HELD_OPEN: &str = r#"python3 -c "
import os, subprocess
os.utime('suidw')  # in the upper now (a copy-up), so the reader's open is passthrough
held = open('suidw', 'rb')
subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                'sh', '-c', 'echo more >> suidw'], check=True)
print(oct(os.stat('suidw').st_mode & 0o7777), held.read())
""#;

/// Items 16, 18 and 19 (the fallback rule: as overlayfs): open handles survive renames and
/// removals, rewinddir sees changes, and fallocate by a plain writer drops setuid/setgid.
#[test]
fn open_handles_and_privilege_bits_as_on_overlayfs() {
    same_as_overlayfs(
        handles_layout,
        &[
            root(FSTAT_AFTER_RENAME),
            root(REWINDDIR),
            root(WRITE_WHILE_HELD_OPEN),
            user(OWNER, "fallocate -l 8192 setgid; stat -c %a setgid"),
            user(OWNER, "fallocate -p -o 0 -l 4096 setuid; stat -c %a setuid"),
            root("chmod 4755 setuid"),
            user(OWNER, "fallocate -z -o 0 -l 4096 setuid; stat -c %a setuid"),
            root("chmod 6775 setgid; stat -c %a setgid"),
            user(OWNER, "fallocate -l 1 -o 8192 -n setgid; stat -c %a setgid"),
        ],
    );
}

/// S25, item 13: a read-only mount with an upper shows the whole union, read-only.
#[test]
fn read_only_mount_shows_the_upper() {
    let results: Vec<(Vec<String>, String)> = [Fs::Overlay, Fs::Strata]
        .into_iter()
        .map(|fs_kind| {
            let l = Layers::new(1);
            l.put(0, "lower", "lower\n");
            l.put(0, "gone", "gone\n");
            {
                let _m = if fs_kind == Fs::Overlay {
                    Ok(l.mount_overlay(""))
                } else {
                    Err(l.mount(""))
                };
                fs::write(l.m("created"), "created\n").unwrap();
                fs::write(l.m("lower"), "changed\n").unwrap();
                fs::remove_file(l.m("gone")).unwrap();
            }
            let _m = if fs_kind == Fs::Overlay {
                Ok(l.mount_overlay("ro"))
            } else {
                Err(l.mount("ro"))
            };
            let listing = names(&l.mnt);
            let write = run(&l.mnt, As::Root, "echo x > new; echo y >> lower; cat lower");
            (listing, write)
        })
        .collect();
    assert_eq!(results[0].0, vec!["created", "lower"]);
    assert_eq!(results[1], results[0]);
}

/// S25, item 15: remount ro and back to rw, through the binary (as mount.fuse3 calls it)
/// and through the mount.stratafs helper protocol, with the flags applied to the live mount.
#[test]
fn remount_changes_ro_rw_and_flags_of_the_live_mount() {
    let l = Layers::new(1);
    l.put(0, "f", "lower\n");
    let _m = l.mount("");
    let mnt = l.mnt.to_str().unwrap();
    let helper = l.root().join("mount.stratafs");
    symlink(bin(), &helper).unwrap();
    let remount = |via_helper: bool, opts: &str| {
        let out = if via_helper {
            Command::new(&helper)
                .args(["stratafs", mnt, "-o", opts])
                .output()
        } else {
            Command::new(bin()).args(["-o", opts, mnt]).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "remount {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let writable = || fs::write(l.m("w"), "x").map_err(|e| errno(&e));
    for via_helper in [false, true] {
        remount(via_helper, "remount,ro");
        assert_eq!(writable(), Err(libc::EROFS));
        assert_eq!(fs::read_to_string(l.m("f")).unwrap(), "lower\n");
        remount(via_helper, "remount,rw,nosuid");
        assert_eq!(writable(), Ok(()));
        let opts = mount_options(&l.mnt);
        assert!(opts.contains("nosuid"), "{opts}");
        remount(via_helper, "remount,suid");
        assert!(!mount_options(&l.mnt).contains("nosuid"));
    }
    // Not a stratafs mount: refused in one line.
    let err = stratafs_refuses(&["-o", "remount,ro", l.root().to_str().unwrap()]);
    assert!(err.contains("not a stratafs mount"), "{err}");
}

/// The per-mount options column of /proc/self/mounts for `mnt`.
fn mount_options(mnt: &Path) -> String {
    let want = mnt.to_str().unwrap();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .rfind(|l| l.split(' ').nth(1) == Some(want))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or_default()
        .to_string()
}

/// S26, item 12: a second mount of an upper or work dir in use is refused with a one-line
/// error naming the dir; the lock goes with the daemon, even after kill -9.
#[test]
fn upper_and_work_dirs_in_use_are_refused() {
    let l = Layers::new(1);
    l.put(0, "f", "x");
    let second = l.root().join("second");
    fs::create_dir_all(&second).unwrap();
    let other_work = l.root().join("other-work");
    fs::create_dir_all(&other_work).unwrap();
    let other_upper = l.root().join("other-upper");
    fs::create_dir_all(&other_upper).unwrap();
    let lower = l.lowers[0].display().to_string();
    let try_mount = |upper: &Path, work: &Path| {
        Command::new(bin())
            .arg("-o")
            .arg(format!(
                "lowerdir={lower},upperdir={},workdir={}",
                upper.display(),
                work.display()
            ))
            .arg(&second)
            .output()
            .unwrap()
    };
    let mut first = spawn_foreground(&l.opts(), &l.mnt);
    for (upper, work, named) in [
        (&l.upper, &other_work, "upperdir"),
        (&other_upper, &l.work, "workdir"),
    ] {
        let out = try_mount(upper, work);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(named) && err.contains("in use") && err.lines().count() == 1,
            "{err}"
        );
        assert!(!is_mounted(&second));
    }
    // kill -9 of the daemon frees the dirs (the dead mount still needs an unmount).
    first.kill().unwrap();
    first.wait().unwrap();
    umount_retry(&l.mnt);
    let out = try_mount(&l.upper, &l.work);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(second.join("f")).unwrap(), "x");
    umount_retry(&second);
}

fn xattr_whiteouts_layout(l: &Path) {
    sh(
        l,
        "mkdir unmarked
         echo data > unmarked/plain
         : > unmarked/wh && setfattr -n trusted.overlay.whiteout -v y unmarked/wh
         echo not empty > unmarked/full && setfattr -n trusted.overlay.whiteout -v y unmarked/full",
    );
}

/// S5: in a directory not marked overlay.opaque=x, an empty file with the whiteout xattr
/// is listed, but a lookup does not find it, exactly as on overlayfs (a marked directory
/// hides it from listings too: tests/rules/merge.rs, s5_whiteout_forms_aufs_overlay_char_xattr);
/// a non-empty one is a plain file.
#[test]
fn xattr_whiteouts_in_an_unmarked_directory_as_on_overlayfs() {
    same_as_overlayfs(
        xattr_whiteouts_layout,
        &[
            root("ls unmarked; ls -a unmarked"),
            root("cat unmarked/wh; cat unmarked/full; stat -c %s unmarked/wh"),
            root("ls -l unmarked | wc -l; rm unmarked/plain; ls unmarked"),
        ],
    );
}

/// statx of `p` (no final symlink followed), asking for the basic stats and btime.
fn statx(p: &Path) -> libc::statx {
    let c = cpath(p);
    // SAFETY: zeroed statx is a valid out-parameter; valid C string.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut sx,
        )
    };
    assert_eq!(r, 0, "statx {}", p.display());
    sx
}

/// statx answers btime as overlayfs does: the birth time of the object's current copy (a
/// lower file's until it is copied up), with STATX_BTIME in stx_mask, for files, dirs and
/// symlinks (issue 10, item 8). (stx_attributes: the kernel takes none from a FUSE
/// filesystem; lsattr shows them, tests/permissions.rs.)
#[test]
fn statx_reports_birth_time() {
    let l = Layers::new(1);
    l.put(0, "f", "x\n");
    l.mkdir(0, "d");
    symlink("f", l.lower(0, "s")).unwrap();
    l.put(0, "imm", "i\n");
    let _unprotect = Unprotect(l.root());
    sh(&l.lowers[0], "chattr +i imm");
    let m = l.mount("");
    for name in ["f", "d", "s", "imm"] {
        let (got, real) = (statx(&l.m(name)), statx(&l.lower(0, name)));
        assert_ne!(
            got.stx_mask & libc::STATX_BTIME,
            0,
            "{name}: no STATX_BTIME"
        );
        assert_eq!(
            (got.stx_btime.tv_sec, got.stx_btime.tv_nsec),
            (real.stx_btime.tv_sec, real.stx_btime.tv_nsec),
            "{name}: btime of the lower copy"
        );
    }
    // Copied up: the copy's birth.
    fs::write(l.m("f"), "y\n").unwrap();
    let (got, real) = (statx(&l.m("f")), statx(&l.up("f")));
    assert_eq!(
        (got.stx_btime.tv_sec, got.stx_btime.tv_nsec),
        (real.stx_btime.tv_sec, real.stx_btime.tv_nsec),
        "btime of the upper copy after copy-up"
    );
    drop(m);
    // And on overlayfs, the same mask bit for the same objects.
    let l2 = Layers::new(1);
    l2.put(0, "f", "x\n");
    let _o = l2.mount_overlay("");
    assert_ne!(statx(&l2.m("f")).stx_mask & libc::STATX_BTIME, 0);
}

fn sized_file_layout(l: &Path) {
    sh(l, "head -c 32768 /dev/zero | tr '\\0' x > low");
}

/// Issue 10, item 11, a difference the kernel makes (README): fallocate's collapse-range
/// and insert-range modes work on overlayfs over ext4, but the kernel's FUSE fallocate
/// refuses them before asking the daemon. The refusal is EOPNOTSUPP and leaves the file
/// as it was, on a lower file and on an upper one.
#[test]
fn fallocate_collapse_and_insert_are_refused_cleanly_where_fuse_cannot_carry_them() {
    const STEPS: &str = "head -c 32768 /dev/zero | tr '\\0' x > up && cp up ref && \
        for f in low up; do for m in -c -i; do \
        if e=$(fallocate $m -o 4096 -l 4096 $f 2>&1); then echo \"$f $m done\"; \
        else case $e in *'not supported'*) echo \"$f $m refused\";; *) echo \"$e\";; esac; fi; \
        done; done; stat -c '%n %s' low up; cmp -s low ref && echo low unchanged";
    let out = outcome(Fs::Strata, sized_file_layout, "", STEPS);
    assert_eq!(
        out,
        "status 0 stdout \"low -c refused\\nlow -i refused\\nup -c refused\\nup -i refused\\n\
         low 32768\\nup 32768\\nlow unchanged\\n\""
    );
    let out = outcome(Fs::Overlay, sized_file_layout, "", STEPS);
    assert!(
        out.contains("low -c done") && out.contains("up -i done"),
        "{out}"
    );
}

fn program_layout(l: &Path) {
    sh(l, "cp /usr/bin/sleep lowrun && chmod 755 lowrun");
}

/// Runs the program `$P` from the mount, opens it read-only with O_TRUNC while it runs,
/// and prints the errno, whether the file is intact and whether the program still runs.
macro_rules! trunc_running {
    ($setup:literal) => {
        concat!(
            $setup,
            r#" && { ./$P 5 & pid=$!; } && sleep 0.3; python3 -c "
import os, errno
try:
    os.close(os.open('$P', os.O_RDONLY | os.O_TRUNC)); print('opened')
except OSError as e:
    print(errno.errorcode[e.errno])
"; cmp -s $P /usr/bin/sleep && echo intact || echo changed
kill $pid 2>/dev/null && echo running; wait"#
        )
    };
}

/// A read-only open with O_TRUNC of a program that runs from the union is refused with
/// ETXTBSY and truncates nothing (the kernel checks it only after the filesystem's open,
/// which under FUSE_ATOMIC_O_TRUNC truncates): an upper program as on overlayfs; a lower
/// one stays as it is, where overlayfs leaves an empty copy-up behind.
#[test]
fn truncating_open_of_a_running_program_is_refused_and_truncates_nothing() {
    const UPPER: &str = trunc_running!("cp /usr/bin/sleep uprun && P=uprun");
    same_as_overlayfs(program_layout, &[root(UPPER)]);
    for steps in [UPPER, trunc_running!("P=lowrun")] {
        assert_eq!(
            outcome(Fs::Strata, program_layout, "", steps),
            "status 0 stdout \"ETXTBSY\\nintact\\nrunning\\n\"",
            "{steps}"
        );
    }
}

fn tmpfile_layout(l: &Path) {
    sh(l, "mkdir -p sub && echo a > sub/a && mkdir -p sub/deep");
}

/// O_TMPFILE (issue 10, item 10) as on overlayfs: an unnamed file in a (merged) directory,
/// nlink 0, invisible to readdir, its mode from the open minus the umask; linkat through
/// /proc/self/fd gives it a name with the same inode and content; an O_EXCL one cannot be
/// linked; closing an unlinked one leaves nothing behind.
#[test]
fn o_tmpfile_as_on_overlayfs() {
    const SCRIPT: &str = r#"umask 022; python3 - sub <<'PY'
import os, sys, ctypes
libc = ctypes.CDLL(None, use_errno=True)
def link_fd(fd, dst):
    if libc.linkat(-100, b"/proc/self/fd/%d" % fd, -100, dst.encode(), 0x400) != 0:
        return os.strerror(ctypes.get_errno())
    return "linked"
d = sys.argv[1]
fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o666)
os.write(fd, b"hello\n")
st = os.fstat(fd)
print("nlink", st.st_nlink, "mode", oct(st.st_mode & 0o7777), "size", st.st_size)
print("listed", sorted(os.listdir(d)))
print(link_fd(fd, d + "/named"))
named = os.stat(d + "/named")
print("nlink", named.st_nlink, os.fstat(fd).st_nlink, "same inode", named.st_ino == st.st_ino)
print(open(d + "/named").read().strip())
ex = os.open(d, os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
print("excl", link_fd(ex, d + "/excl"))
gone = os.open(d + "/deep", os.O_TMPFILE | os.O_WRONLY, 0o600)
os.write(gone, b"x")
os.close(gone); os.close(ex); os.close(fd)
print("final", sorted(os.listdir(d)), sorted(os.listdir(d + "/deep")))
PY"#;
    // What both must print (so that the comparison cannot pass on two failures).
    let out = outcome(Fs::Strata, tmpfile_layout, "", SCRIPT);
    for want in [
        "nlink 0 mode 0o644 size 6",
        "listed ['a', 'deep']",
        "linked",
        "nlink 1 1 same inode True",
        "excl No such file or directory",
        "final ['a', 'deep', 'named'] []",
    ] {
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    same_as_overlayfs(
        tmpfile_layout,
        &[
            root(SCRIPT),
            root("stat -c '%n %h %a %s' sub/named && cat sub/named"),
            REMOUNT_STEP,
            root("cat sub/named && ls sub sub/deep"),
        ],
    );
}

/// `umount M && mount ... M` at once, as scripts and xfstests do: the daemon of the old
/// mount may still be finishing (and holding the upper's in-use lock, S26); the new mount
/// waits for it instead of refusing the dir. Made certain here with a lazy unmount while a
/// file is open, which keeps the old daemon for 300 ms after the mount point is free.
#[test]
fn mount_right_after_umount_is_not_refused() {
    let l = Layers::new(1);
    l.put(0, "f", "x\n");
    let mount = || {
        Command::new(bin())
            .arg("-o")
            .arg(l.opts())
            .arg(&l.mnt)
            .output()
            .unwrap()
    };
    for i in 0..3 {
        let out = mount();
        assert!(
            out.status.success(),
            "mount {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let held = fs::File::open(l.m("f")).unwrap();
        let st = Command::new("umount")
            .arg("-l")
            .arg(&l.mnt)
            .status()
            .unwrap();
        assert!(st.success());
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let out = mount();
        closer.join().unwrap();
        assert!(
            out.status.success(),
            "mount {i} while the old daemon finishes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read_to_string(l.m("f")).unwrap(), "x\n");
        let st = Command::new("umount").arg(&l.mnt).status().unwrap();
        assert!(st.success());
    }
    wait_daemons_gone(&l.mnt);
}

/// Item 21: `umount` right after an `rm -rf` of the mount's contents, as xfstests' "mkfs"
/// of a FUSE scratch fs does, is never refused as busy: the files were read and written
/// by processes (passthrough opens, a mapping, a reader killed while it reads) that have
/// exited, and nothing of the mount stays referenced once they are gone (each round
/// unmounts without MNT_DETACH).
#[test]
fn umount_right_after_rm_rf_is_not_busy() {
    let l = Layers::new(1);
    sh(
        &l.lowers[0],
        "mkdir -p d/e && for i in 1 2 3 4 5 6 7 8; do echo $i > d/f$i; done",
    );
    for round in 0..15 {
        let mut m = l.mount("");
        sh(
            &l.mnt,
            r#"cat d/f1 d/f2 > /dev/null; echo x >> d/f3; cp -r d c; ln d/f4 d/hard
               python3 -c "import mmap; f = open('d/f5', 'r+b'); m = mmap.mmap(f.fileno(), 0); m[0:1] = b'y'"
               tail -f d/f6 > /dev/null & sleep 0.05; kill $!; wait
               rm -rf ./*"#,
        );
        let out = Command::new("umount").arg(&l.mnt).output().unwrap();
        assert!(
            out.status.success(),
            "round {round}: umount right after rm -rf: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.unmount();
    }
}

fn mmap_layout(l: &Path) {
    sh(l, "echo lower > lowerfile");
}

/// A write through a shared mmap updates mtime and ctime, as on overlayfs (issue 10, item
/// 17; xfstests generic/080 and 215): with passthrough the kernel writes the layer file
/// itself, so the attributes the kernel cached must go when the file is closed.
#[test]
fn mmap_write_updates_mtime_as_on_overlayfs() {
    const MMAP_WRITE: &str = r#"for f in newfile lowerfile; do
  [ -e $f ] || echo data > $f
  before=$(stat -c '%Y %Z' $f); sleep 1.1
  python3 -c "import mmap,sys; f=open(sys.argv[1],'r+b'); m=mmap.mmap(f.fileno(),0); m[0:1]=b'X'; m.close(); f.close()" $f
  after=$(stat -c '%Y %Z' $f)
  [ "$before" != "$after" ] && echo "$f: times updated" || echo "$f: times NOT updated"
  head -c 1 $f; echo
done"#;
    same_as_overlayfs(mmap_layout, &[root(MMAP_WRITE)]);
    let out = outcome(Fs::Strata, mmap_layout, "", MMAP_WRITE);
    assert!(
        out.contains("newfile: times updated") && out.contains("lowerfile: times updated"),
        "{out}"
    );
}

fn atime_layout(l: &Path) {
    sh(
        l,
        "printf '#!/bin/sh\\necho ran\\n' > run.sh && chmod 755 run.sh && echo data > f && \
         touch -a -d @946684800 f run.sh",
    );
}

/// Under `noatime` neither a read nor running a program changes the access time when the
/// daemon serves the reads (it opens layer files with O_NOATIME), as on overlayfs. With
/// passthrough (the default) the kernel opens the layer file anew for the reader and the
/// layer's own mount decides (README, differences from overlayfs).
#[test]
fn noatime_leaves_access_times_alone_when_the_daemon_reads() {
    let out = outcome(
        Fs::Strata,
        atime_layout,
        "noatime,passthrough=off",
        "cat f > /dev/null && ./run.sh >/dev/null && stat -c %X f run.sh",
    );
    assert_eq!(out, "status 0 stdout \"946684800\\n946684800\\n\"");
}

/// Under `noatime` (and `strictatime`) access times follow the mount's option with
/// passthrough too, as on overlayfs (xfstests generic/003, 120): the layer roots are opened
/// on private clones of their mounts with that access-time mode, so the kernel's reads of
/// the layer files obey it.
#[test]
fn access_times_follow_the_mount_options_as_on_overlayfs() {
    same_as_overlayfs_with(
        atime_layout,
        "noatime",
        &[
            root("cat f > /dev/null && head -c1 run.sh >/dev/null && ./run.sh && stat -c '%n %X' f run.sh"),
            REMOUNT_STEP,
            root("cat f run.sh > /dev/null && stat -c '%n %X' f run.sh"),
            root("echo new > g && touch -a -d @946684800 g && cat g >/dev/null && stat -c '%n %X' g"),
        ],
    );
    // strictatime: a read updates an access time that relatime would leave (newer than
    // the modification time, less than a day old).
    const STRICT: &str = "touch -m -d '-2 hours' f && touch -a -d '-1 hour' f && \
        a=$(stat -c %X f) && cat f >/dev/null && \
        [ \"$(stat -c %X f)\" != \"$a\" ] && echo updated || echo kept";
    same_as_overlayfs_with(atime_layout, "strictatime", &[root(STRICT)]);
    // relatime (named, as the default is): that read keeps the access time, and one
    // older than the modification time is updated.
    const RELATIVE: &str = "touch -m -d '-1 hour' f && touch -a -d '-2 hours' f && \
        a=$(stat -c %X f) && cat f >/dev/null && \
        [ \"$(stat -c %X f)\" != \"$a\" ] && echo updated || echo kept";
    same_as_overlayfs_with(atime_layout, "relatime", &[root(STRICT), root(RELATIVE)]);
    assert_eq!(
        outcome(Fs::Strata, atime_layout, "strictatime", STRICT),
        "status 0 stdout \"updated\\n\""
    );
}

/// name_to_handle_at of a file and a dir (no AT_HANDLE_FID), through libc.
const NAME_TO_HANDLE: &str = r#"python3 -c "
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for p in (b'f', b'd'):
    buf = ctypes.create_string_buffer(8 + 128)
    ctypes.c_uint.from_buffer(buf).value = 128
    mnt = ctypes.c_int()
    r = libc.name_to_handle_at(-100, p, buf, ctypes.byref(mnt), 0)
    print(p.decode(), 'handle' if r == 0 else os.strerror(ctypes.get_errno()))
""#;

/// Item 20: a FUSE node id lives only while the kernel remembers it, so a handle could not
/// be opened after the inode is forgotten or after a remount (ESTALE for a file that
/// exists); stratafs refuses to make one, as overlayfs does without nfs_export.
#[test]
fn file_handles_are_refused_as_on_overlayfs() {
    fn layout(l: &Path) {
        sh(l, "echo x > f && mkdir d");
    }
    let l = Layers::new(1);
    layout(&l.lowers[0]);
    let _m = l.mount("");
    let out = run(&l.mnt, As::Root, NAME_TO_HANDLE);
    assert!(
        out.contains("f Operation not supported") && out.contains("d Operation not supported"),
        "{out}"
    );
    drop(_m);
    same_as_overlayfs(layout, &[root(NAME_TO_HANDLE)]);
}
