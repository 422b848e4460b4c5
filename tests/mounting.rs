//! Mounting stratafs the way people do (issue 4): mount(8) with `-t stratafs` (the
//! mount.stratafs helper) and `-t fuse.stratafs` (mount.fuse3), fstab lines through
//! `mount --fstab FILE` (never the machine's /etc/fstab), `mount -f` / `-v`, umount,
//! signals, the systemd unit and fstab examples in fixtures/, and what container engines
//! pass (200 lowers and a 16 KiB+ option string, mixed whiteout forms, context=, volatile,
//! empty option elements, symlinked lowers). Every test goes through real mounts on this
//! machine (root, /dev/fuse) and the real tools.
//!
//! Every mount these tests make runs the binary cargo built for them, whatever an earlier
//! `scripts/install.sh` left on the machine. mount(8) finds its helper only in a fixed
//! place (`/sbin/mount.TYPE`; libmount's search path is compiled in) and runs it with an
//! empty environment; mount.fuse3 then runs `stratafs` through /bin/sh, whose fallback
//! PATH starts with /usr/local/sbin. So while a test needs them, /sbin/mount.stratafs and
//! /usr/local/sbin/stratafs are symlinks that name the built binary directly (never a link
//! that merely resolves to it through another link, such as an install's
//! /sbin/mount.stratafs -> /usr/local/bin/stratafs), an installed binary in /usr/local/bin
//! is shadowed rather than moved, and both paths are removed, or restored to what was
//! there, when the last test using them ends (also on panic); a lock file serializes that
//! with other test processes.
//!
//! This process is a child subreaper: a daemon that mount(8) starts and that detaches
//! becomes our child, so its exit status after `umount` or a signal can be checked.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use common::{bin, errno, is_mounted, kill, mknod, names, set_xattr, umount_retry, Layers, Mount};

/// The PATH a root shell gets on Debian, and the one /bin/sh falls back to when it has
/// none (mount.fuse3's /bin/sh: mount(8) runs helpers with an empty environment), without
/// cargo's or the user's additions.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where mount(8) looks first for the helper of `-t stratafs` (libmount's compiled-in
/// search path is /sbin:/sbin/fs.d:/sbin/fs).
const HELPER_LINK: &str = "/sbin/mount.stratafs";
/// `stratafs` in the first directory of DEFAULT_PATH: what mount.fuse3's /bin/sh runs for
/// `-t fuse.stratafs`, ahead of an installed /usr/local/bin/stratafs or /usr/bin/stratafs.
const BIN_LINK: &str = "/usr/local/sbin/stratafs";
const VOLATILE_MARKER: &str = "stratafs.volatile";

// ---------------------------------------------------------------------------------------
// Machine-level guards: helper links, subreaper, commands with a deadline.
// ---------------------------------------------------------------------------------------

/// How to undo one link once no test needs it any more.
enum Restore {
    /// There was nothing: remove our link.
    Remove,
    /// A symlink pointed elsewhere: point it back.
    Relink(PathBuf),
    /// A file (an installed binary) was there: it was moved aside to this path.
    MoveBack(PathBuf),
    /// It already pointed to our binary: leave it.
    Nothing,
}

struct LinkState {
    users: usize,
    restore: Restore,
}

#[derive(Default)]
struct Links {
    /// Held (flock) while any link of ours is in place: other test processes wait.
    lock: Option<fs::File>,
    links: HashMap<PathBuf, LinkState>,
}

static LINKS: Mutex<Option<Links>> = Mutex::new(None);

/// `path` is a symlink to the binary under test while this guard (or another one for the
/// same path) lives.
struct LinkGuard {
    path: PathBuf,
}

fn lock_links() -> std::sync::MutexGuard<'static, Option<Links>> {
    LINKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replaces whatever is at `path` by a symlink to `target`, atomically (rename).
fn put_symlink(target: &Path, path: &Path) {
    let tmp = path.with_file_name(format!(
        ".{}.stratafs-test-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

fn link_ours(path: &str) -> LinkGuard {
    let path = PathBuf::from(path);
    let ours = fs::canonicalize(bin()).expect("the stratafs binary");
    let mut g = lock_links();
    let links = g.get_or_insert_with(Links::default);
    if links.lock.is_none() {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("stratafs-mounting-tests.lock"))
            .expect("lock file");
        // SAFETY: a valid open fd.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
        links.lock = Some(f);
    }
    if let Some(s) = links.links.get_mut(&path) {
        s.users += 1;
        return LinkGuard { path };
    }
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Only a link that names our binary itself is left alone. One that merely resolves to
    // it through another link (an install's /sbin/mount.stratafs -> /usr/local/bin/stratafs
    // while something points /usr/local/bin/stratafs at us for a while) runs the installed
    // binary again as soon as that other link is undone.
    let restore = match fs::symlink_metadata(&path) {
        Err(_) => {
            put_symlink(&ours, &path);
            Restore::Remove
        }
        Ok(md) if md.file_type().is_symlink() => {
            let old = fs::read_link(&path).unwrap();
            if old == ours {
                Restore::Nothing
            } else {
                put_symlink(&ours, &path);
                Restore::Relink(old)
            }
        }
        Ok(_) => {
            let aside = path.with_file_name(format!(
                "{}.stratafs-test-saved",
                path.file_name().unwrap().to_string_lossy()
            ));
            fs::rename(&path, &aside).unwrap();
            put_symlink(&ours, &path);
            Restore::MoveBack(aside)
        }
    };
    links
        .links
        .insert(path.clone(), LinkState { users: 1, restore });
    LinkGuard { path }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let mut g = lock_links();
        let Some(links) = g.as_mut() else { return };
        let Some(s) = links.links.get_mut(&self.path) else {
            return;
        };
        s.users -= 1;
        if s.users > 0 {
            return;
        }
        let s = links.links.remove(&self.path).unwrap();
        match s.restore {
            Restore::Remove => {
                let _ = fs::remove_file(&self.path);
            }
            Restore::Relink(old) => put_symlink(&old, &self.path),
            Restore::MoveBack(aside) => {
                let _ = fs::rename(&aside, &self.path);
            }
            Restore::Nothing => {}
        }
        if links.links.is_empty() {
            links.lock = None; // closing the file releases the flock
        }
    }
}

/// /sbin/mount.stratafs -> our binary: what `mount -t stratafs` and fstab lines run.
fn helper_link() -> LinkGuard {
    link_ours(HELPER_LINK)
}

/// /usr/local/sbin/stratafs -> our binary: what mount.fuse3 runs through /bin/sh. Checks
/// that /bin/sh, with the environment mount(8) gives helpers, finds exactly that.
fn bin_link() -> LinkGuard {
    let g = link_ours(BIN_LINK);
    let out = run(Command::new("/bin/sh")
        .env_clear()
        .env("HOME", "/root")
        .args(["-c", "command -v stratafs"]));
    let found = out.stdout.trim();
    assert_eq!(
        fs::canonicalize(found).ok(),
        fs::canonicalize(bin()).ok(),
        "/bin/sh without PATH (as mount.fuse3 runs it) finds stratafs at '{found}', not the \
         binary under test via {BIN_LINK}"
    );
    g
}

/// Makes this process the reaper of orphans below it, so a daemon that detaches from
/// mount(8) becomes our child and its exit status can be read.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    });
}

/// The result of a command run to the end.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn ok(self, what: &str) -> Out {
        assert!(
            self.status.success(),
            "{what}: {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs a command to the end (stdout and stderr into files, so a daemon that keeps them
/// open cannot block us); panics if it takes more than 30 s: a hang is a failure too.
fn run(cmd: &mut Command) -> Out {
    let mut so = tempfile::tempfile().unwrap();
    let mut se = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(so.try_clone().unwrap())
        .stderr(se.try_clone().unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = wait_child(&mut child, Duration::from_secs(30), &format!("{cmd:?}"));
    let read = |f: &mut fs::File| {
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Out {
        status,
        stdout: read(&mut so),
        stderr: read(&mut se),
    }
}

/// Waits for a child, killing it and panicking after `limit`.
fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (hangs)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A system tool with the default root PATH and no other environment.
fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.env_clear().env("PATH", DEFAULT_PATH);
    c
}

/// `mount FLAGS -t stratafs stratafs MNT -o OPTS`: mount(8) and its helper, as fstab and
/// systemd mount units call them.
fn mount_t_stratafs(flags: &[&str], mnt: &Path, opts: &str) -> Out {
    run(tool("mount")
        .args(flags)
        .args(["-t", "stratafs", "stratafs"])
        .arg(mnt)
        .arg("-o")
        .arg(opts))
}

/// A guard that unmounts `mnt` when dropped (common's Mount: umount, lazily if busy).
fn guard(mnt: &Path) -> Mount {
    Mount {
        mnt: mnt.to_path_buf(),
    }
}

/// The `/proc/mounts` line of the mount at `mnt`.
fn mount_line(mnt: &Path) -> Option<String> {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1).map(Path::new) == Some(want.as_path()))
        .map(str::to_string)
}

/// How many mounts are stacked at `mnt`.
fn mount_count(mnt: &Path) -> usize {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1).map(Path::new) == Some(want.as_path()))
        .count()
}

// ---------------------------------------------------------------------------------------
// Daemon processes: found by scanning /proc for our binary with the mountpoint argument.
// ---------------------------------------------------------------------------------------

fn proc_state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// Live stratafs processes whose command line names `mnt`.
fn daemon_pids(mnt: &Path) -> Vec<i32> {
    let ours = fs::canonicalize(bin()).unwrap();
    let mut wants = vec![mnt.as_os_str().as_bytes().to_vec()];
    if let Ok(c) = fs::canonicalize(mnt) {
        wants.push(c.as_os_str().as_bytes().to_vec());
    }
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy();
        if Path::new(exe.trim_end_matches(" (deleted)")) != ours {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|a| wants.iter().any(|w| w.as_slice() == a))
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The one daemon serving `mnt`.
#[track_caller]
fn the_daemon(mnt: &Path) -> i32 {
    let pids = daemon_pids(mnt);
    assert_eq!(
        pids.len(),
        1,
        "expected one stratafs daemon for {}, found {pids:?}",
        mnt.display()
    );
    pids[0]
}

/// How a process ended, as far as we can see it.
#[derive(Debug, PartialEq)]
enum Ended {
    Exited(i32),
    Signaled(i32),
    /// Gone, but not our child: its status is not observable.
    Unobserved,
}

/// Waits (10 s at most) until `pid` is gone; reaps it if it is our child.
#[track_caller]
fn wait_gone(pid: i32, what: &str) -> Ended {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(st) {
                Ended::Exited(libc::WEXITSTATUS(st))
            } else {
                Ended::Signaled(libc::WTERMSIG(st))
            };
        }
        if r < 0 && !alive(pid) {
            return Ended::Unobserved;
        }
        if Instant::now() > deadline {
            panic!("{what}: daemon pid {pid} still running 10 s later");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until nothing is mounted at `mnt` (10 s at most).
#[track_caller]
fn wait_unmounted(mnt: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(mnt) {
        assert!(
            Instant::now() < deadline,
            "{what}: {} still mounted 10 s later",
            mnt.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `umount MNT` exits 0, the mount is gone, the daemon is gone and exited 0.
#[track_caller]
fn umount_ends_daemon(mnt: &Path, what: &str) {
    let pid = the_daemon(mnt);
    run(tool("umount").arg(mnt)).ok(&format!("{what}: umount"));
    wait_unmounted(mnt, what);
    let ended = wait_gone(pid, what);
    assert_eq!(
        ended,
        Ended::Exited(0),
        "{what}: the daemon should exit 0 after umount (subreaper: it is our child)"
    );
    assert!(
        daemon_pids(mnt).is_empty(),
        "{what}: a stratafs process for {} is left",
        mnt.display()
    );
}

/// A foreground daemon (`stratafs -f`), killed and its mount detached if a test fails.
struct Fg {
    child: Child,
    mnt: PathBuf,
    stderr: fs::File,
}

impl Fg {
    fn start(opts: &str, mnt: &Path) -> Fg {
        let stderr = tempfile::tempfile().unwrap();
        let child = Command::new(bin())
            .arg("-f")
            .arg("-o")
            .arg(opts)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().unwrap())
            .spawn()
            .expect("spawn stratafs -f");
        let mut fg = Fg {
            child,
            mnt: mnt.to_path_buf(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(mnt) {
            if let Ok(Some(st)) = fg.child.try_wait() {
                panic!("stratafs -f exited before mounting: {st}: {}", fg.err());
            }
            assert!(
                Instant::now() < deadline,
                "stratafs -f: not mounted in 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        fg
    }

    fn err(&mut self) -> String {
        let mut s = String::new();
        self.stderr.seek(SeekFrom::Start(0)).unwrap();
        let _ = self.stderr.read_to_string(&mut s);
        s
    }

    fn signal(&self, sig: libc::c_int) {
        kill(self.child.id(), sig).expect("kill");
    }

    fn wait(&mut self, what: &str) -> ExitStatus {
        wait_child(&mut self.child, Duration::from_secs(10), what)
    }
}

impl Drop for Fg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        umount_retry(&self.mnt);
    }
}

/// A small two-lower image: l0 has `top` and `both` (wins), l1 has `bottom` and `both`.
/// Where most mount(8) tests start: mount.stratafs linked to this build, a small image,
/// and a guard that unmounts it (fields drop in this order: the mount, the layers, the
/// link).
struct HelperBed {
    _mounted: Mount,
    l: Layers,
    _link: LinkGuard,
}

fn helper_bed() -> HelperBed {
    become_subreaper();
    let link = helper_link();
    let l = small_image();
    HelperBed {
        _mounted: guard(&l.mnt),
        l,
        _link: link,
    }
}

fn small_image() -> Layers {
    let l = Layers::new(2);
    l.put(0, "top", "top\n");
    l.put(0, "both", "from l0\n");
    l.put(1, "bottom", "bottom\n");
    l.put(1, "both", "from l1\n");
    l
}

/// The merged view of `small_image` is right, and a write lands in the upper.
#[track_caller]
fn check_small_view(l: &Layers) {
    assert_eq!(names(&l.mnt), ["both", "bottom", "top"]);
    assert_eq!(fs::read_to_string(l.m("both")).unwrap(), "from l0\n");
    assert_eq!(fs::read_to_string(l.m("bottom")).unwrap(), "bottom\n");
    fs::write(l.m("new"), "new\n").unwrap();
    assert_eq!(fs::read_to_string(l.up("new")).unwrap(), "new\n");
}

// ---------------------------------------------------------------------------------------
// mount(8): -t stratafs, -t fuse.stratafs, -f, -v; umount.
// ---------------------------------------------------------------------------------------

#[test]
fn mount_t_stratafs_runs_the_helper_and_umount_ends_the_daemon() {
    let bed = helper_bed();
    let l = &bed.l;
    let out = mount_t_stratafs(&[], &l.mnt, &l.opts()).ok("mount -t stratafs");
    assert!(
        out.stderr.is_empty(),
        "mount -t stratafs said: {}",
        out.text()
    );
    let line = mount_line(&l.mnt).expect("mounted");
    assert!(
        line.starts_with("stratafs ") && line.contains(" fuse.stratafs rw,"),
        "/proc/mounts: {line}"
    );
    check_small_view(l);
    umount_ends_daemon(&l.mnt, "mount -t stratafs");
}

#[test]
fn mount_t_fuse_stratafs_goes_through_mount_fuse3() {
    become_subreaper();
    assert!(
        Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists(),
        "mount.fuse3 is missing: install the fuse3 package (scripts/deps.sh)"
    );
    // mount.fuse3 runs `stratafs SOURCE MOUNTPOINT -o OPTIONS` through /bin/sh with the
    // default PATH: the binary must be in one of its dirs (/usr/local/sbin comes first).
    let _link = bin_link();
    let l = small_image();
    let _g = guard(&l.mnt);
    run(tool("mount")
        .args(["-t", "fuse.stratafs", "stratafs"])
        .arg(&l.mnt)
        .arg("-o")
        .arg(format!(
            "{},nofail,x-systemd.requires-mounts-for=/tmp",
            l.opts()
        )))
    .ok("mount -t fuse.stratafs");
    let line = mount_line(&l.mnt).expect("mounted");
    assert!(line.contains(" fuse.stratafs "), "/proc/mounts: {line}");
    check_small_view(&l);
    umount_ends_daemon(&l.mnt, "mount -t fuse.stratafs");
}

#[test]
fn mount_fake_checks_and_mounts_nothing() {
    let bed = helper_bed();
    let l = &bed.l;
    // -f: mount(8) passes -f to the helper, which checks the options against the disk.
    let out = mount_t_stratafs(&["-f"], &l.mnt, &format!("{},volatile", l.opts()));
    out.ok("mount -f");
    assert!(!is_mounted(&l.mnt), "mount -f mounted something");
    assert!(
        daemon_pids(&l.mnt).is_empty(),
        "mount -f left a daemon running"
    );
    assert!(
        names(&l.work).is_empty(),
        "mount -f changed the workdir: {:?}",
        names(&l.work)
    );
    // A bad option string fails under -f too, naming the path.
    let missing = l.root().join("no-such-layer");
    let out = mount_t_stratafs(&["-f"], &l.mnt, &format!("lowerdir={}", missing.display()));
    assert!(
        !out.status.success(),
        "mount -f of a missing lowerdir: exit 0"
    );
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "the error should name {}: {}",
        missing.display(),
        out.text()
    );
    assert!(!is_mounted(&l.mnt));
    // And through an fstab line.
    let fstab = l.root().join("fstab");
    fs::write(
        &fstab,
        format!(
            "stratafs {} stratafs {},nofail 0 0\n",
            l.mnt.display(),
            l.opts()
        ),
    )
    .unwrap();
    run(tool("mount")
        .arg("-f")
        .arg("--fstab")
        .arg(&fstab)
        .arg(&l.mnt))
    .ok("mount -f --fstab");
    assert!(!is_mounted(&l.mnt), "mount -f --fstab mounted something");
}

#[test]
fn mount_verbose_reports_and_mounts() {
    let bed = helper_bed();
    let l = &bed.l;
    let out = mount_t_stratafs(&["-v"], &l.mnt, &l.opts()).ok("mount -v");
    assert!(
        out.text().contains(&l.mnt.display().to_string()),
        "mount -v should say what it mounts where: {}",
        out.text()
    );
    assert!(is_mounted(&l.mnt));
    check_small_view(l);
    umount_ends_daemon(&l.mnt, "mount -v");
}

#[test]
fn mount_helper_failure_exits_1_with_the_reason() {
    let bed = helper_bed();
    let l = &bed.l;
    let out = mount_t_stratafs(&[], &l.mnt, &format!("{},bogus_option", l.opts()));
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("unknown option 'bogus_option'"),
        "{}",
        out.text()
    );
    assert!(!is_mounted(&l.mnt));
    // mount -s (sloppy): the unknown option is ignored with a warning and the mount works.
    let out =
        mount_t_stratafs(&["-s"], &l.mnt, &format!("{},bogus_option", l.opts())).ok("mount -s");
    assert!(out.stderr.contains("bogus_option"), "{}", out.text());
    assert!(is_mounted(&l.mnt));
    umount_ends_daemon(&l.mnt, "mount -s");
}

// ---------------------------------------------------------------------------------------
// fstab, through temporary files only.
// ---------------------------------------------------------------------------------------

#[test]
fn fstab_line_mounts_by_mountpoint() {
    let bed = helper_bed();
    let l = &bed.l;
    let fstab = l.root().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a test fstab\nstratafs {} stratafs {},nofail,x-systemd.requires-mounts-for={} 0 0\n",
            l.mnt.display(),
            l.opts(),
            l.root().display()
        ),
    )
    .unwrap();
    run(tool("mount").arg("--fstab").arg(&fstab).arg(&l.mnt)).ok("mount --fstab FILE MNT");
    assert!(mount_line(&l.mnt).unwrap().contains(" fuse.stratafs "));
    check_small_view(l);
    umount_ends_daemon(&l.mnt, "fstab mount");
}

#[test]
fn fstab_mount_all() {
    become_subreaper();
    let _h = helper_link();
    let _b = bin_link();
    // a: type stratafs (mount.stratafs), nofail and a systemd dependency option;
    // b: type fuse.stratafs (mount.fuse3); c: noauto, so `mount -a` leaves it alone.
    let (a, b, c) = (small_image(), small_image(), small_image());
    let (_ga, _gb, _gc) = (guard(&a.mnt), guard(&b.mnt), guard(&c.mnt));
    let fstab = a.root().join("fstab");
    fs::write(
        &fstab,
        format!(
            "stratafs {} stratafs {},nofail,x-systemd.requires-mounts-for={} 0 0\n\
             stratafs {} fuse.stratafs {},nofail 0 0\n\
             stratafs {} stratafs {},noauto 0 0\n",
            a.mnt.display(),
            a.opts(),
            a.root().display(),
            b.mnt.display(),
            b.opts(),
            c.mnt.display(),
            c.opts()
        ),
    )
    .unwrap();
    run(tool("mount").arg("-a").arg("--fstab").arg(&fstab)).ok("mount -a --fstab");
    assert!(
        is_mounted(&a.mnt),
        "mount -a: type stratafs entry not mounted"
    );
    assert!(
        is_mounted(&b.mnt),
        "mount -a: fuse.stratafs entry not mounted"
    );
    assert!(!is_mounted(&c.mnt), "mount -a mounted a noauto entry");
    check_small_view(&a);
    check_small_view(&b);
    // Again: mount(8) sees both as mounted (source, target and type match) and stacks nothing.
    run(tool("mount").arg("-a").arg("--fstab").arg(&fstab)).ok("second mount -a");
    assert_eq!(mount_count(&a.mnt), 1, "second mount -a stacked a mount");
    assert_eq!(mount_count(&b.mnt), 1, "second mount -a stacked a mount");
    umount_ends_daemon(&a.mnt, "mount -a, stratafs entry");
    umount_ends_daemon(&b.mnt, "mount -a, fuse.stratafs entry");
    // The noauto entry still mounts by name.
    run(tool("mount").arg("--fstab").arg(&fstab).arg(&c.mnt)).ok("mount noauto entry");
    check_small_view(&c);
    umount_ends_daemon(&c.mnt, "noauto entry");
}

// ---------------------------------------------------------------------------------------
// umount and signals.
// ---------------------------------------------------------------------------------------

#[test]
fn umount_ends_a_foreground_daemon_with_exit_0() {
    let l = small_image();
    let mut fg = Fg::start(&l.opts(), &l.mnt);
    check_small_view(&l);
    run(tool("umount").arg(&l.mnt)).ok("umount");
    let st = fg.wait("stratafs -f after umount");
    assert_eq!(st.code(), Some(0), "exit after umount: {st}: {}", fg.err());
    assert!(!is_mounted(&l.mnt));
}

fn signal_unmounts_cleanly(sig: libc::c_int, name: &str) {
    let l = small_image();
    let mut fg = Fg::start(&l.opts(), &l.mnt);
    check_small_view(&l);
    fg.signal(sig);
    let st = fg.wait(name);
    assert_eq!(st.code(), Some(0), "exit after {name}: {st}: {}", fg.err());
    assert!(!is_mounted(&l.mnt), "{name}: still mounted");
    // The data written before the signal is in the upper.
    assert_eq!(fs::read_to_string(l.up("new")).unwrap(), "new\n");
}

#[test]
fn sigterm_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGINT, "SIGINT");
}

#[test]
fn sighup_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGHUP, "SIGHUP");
}

#[test]
fn sigterm_to_a_detached_daemon_unmounts_cleanly() {
    let bed = helper_bed();
    let l = &bed.l;
    mount_t_stratafs(&[], &l.mnt, &l.opts()).ok("mount -t stratafs");
    let pid = the_daemon(&l.mnt);
    kill(pid as u32, libc::SIGTERM).expect("kill");
    assert_eq!(wait_gone(pid, "SIGTERM"), Ended::Exited(0));
    assert!(!is_mounted(&l.mnt), "SIGTERM: still mounted");
}

#[test]
fn sigterm_while_a_file_is_open_detaches_then_exits_0() {
    let l = small_image();
    let mut fg = Fg::start(&l.opts(), &l.mnt);
    let mut f = fs::File::open(l.m("both")).unwrap();
    fg.signal(libc::SIGTERM);
    // The mount leaves the namespace at once (a lazy unmount when it is busy) ...
    wait_unmounted(&l.mnt, "SIGTERM with an open file");
    // ... and the open file stays readable until it is closed.
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "from l0\n");
    drop(f);
    let st = fg.wait("SIGTERM with an open file, after close");
    assert_eq!(st.code(), Some(0), "{st}: {}", fg.err());
}

// ---------------------------------------------------------------------------------------
// Container engines: 200 lowers, whiteout forms, options.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Wh {
    /// `.wh.NAME` next to where NAME would be (aufs/OCI).
    Aufs,
    /// A character device 0/0 named NAME (overlayfs).
    Char,
}

#[derive(Clone, Copy, Debug)]
enum Opq {
    /// xattr trusted.overlay.opaque="y" on the dir (overlayfs).
    Xattr,
    /// `.wh..wh..opq` inside the dir (aufs/OCI).
    Aufs,
}

#[derive(Clone, Debug)]
enum Node {
    File(String),
    Dir(Option<Opq>),
    Whiteout(Wh),
}

/// One layer: relative path -> what is there. Parent dirs are listed as `Dir`.
type Spec = BTreeMap<String, Node>;

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    File(String),
    Dir,
}

fn write_layer(root: &Path, spec: &Spec) {
    for (rel, node) in spec {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match node {
            Node::File(s) => fs::write(&p, s).unwrap(),
            Node::Dir(opq) => {
                fs::create_dir_all(&p).unwrap();
                match opq {
                    Some(Opq::Xattr) => set_xattr(&p, "trusted.overlay.opaque", b"y").unwrap(),
                    Some(Opq::Aufs) => fs::write(p.join(".wh..wh..opq"), "").unwrap(),
                    None => {}
                }
            }
            Node::Whiteout(Wh::Aufs) => {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                fs::write(p.with_file_name(format!(".wh.{name}")), "").unwrap();
            }
            Node::Whiteout(Wh::Char) => mknod(&p, libc::S_IFCHR | 0o600, 0, 0).unwrap(),
        }
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The merged view the rules S4-S6 give for `layers` (top first): path -> what is seen.
/// `contrib` are the layers whose directory `dir` merges, top first.
fn expect_dir(layers: &[Spec], dir: &str, contrib: &[usize], out: &mut BTreeMap<String, Seen>) {
    let mut children = BTreeSet::new();
    for &l in contrib {
        for k in layers[l].keys() {
            let (parent, name) = k.rsplit_once('/').unwrap_or(("", k));
            if parent == dir {
                children.insert(name.to_string());
            }
        }
    }
    for name in children {
        let path = child_path(dir, &name);
        let mut found: Option<(Seen, Vec<usize>)> = None;
        for &l in contrib {
            match layers[l].get(&path) {
                None => continue,
                // A whiteout hides the name in this layer and every layer below (S5).
                Some(Node::Whiteout(_)) => break,
                // A non-directory hides everything below; below a dir it ends the merge (S4).
                Some(Node::File(s)) => {
                    if found.is_none() {
                        found = Some((Seen::File(s.clone()), Vec::new()));
                    }
                    break;
                }
                Some(Node::Dir(opq)) => {
                    match &mut found {
                        None => found = Some((Seen::Dir, vec![l])),
                        Some((_, ls)) => ls.push(l),
                    }
                    // An opaque dir hides the same dir in every layer below (S6).
                    if opq.is_some() {
                        break;
                    }
                }
            }
        }
        if let Some((seen, ls)) = found {
            let is_dir = seen == Seen::Dir;
            out.insert(path.clone(), seen);
            if is_dir {
                expect_dir(layers, &path, &ls, out);
            }
        }
    }
}

fn expected_view(layers: &[Spec]) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let all: Vec<usize> = (0..layers.len()).collect();
    expect_dir(layers, "", &all, &mut out);
    out
}

/// What the mount shows: a readdir walk, reading every file.
fn actual_view(root: &Path, rel: &str, out: &mut BTreeMap<String, Seen>) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let path = child_path(rel, &name);
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.insert(path.clone(), Seen::Dir);
            actual_view(root, &path, out);
        } else {
            let s = fs::read_to_string(root.join(&path))
                .unwrap_or_else(|err| panic!("read {path}: {err}"));
            out.insert(path, Seen::File(s));
        }
    }
}

/// Checks the mount at `mnt` against the expectation from `layers`: first a lookup of
/// every path any layer mentions (visible ones with the right type, hidden ones ENOENT or
/// ENOTDIR, `.wh.` names never), then a full readdir walk reading every file.
#[track_caller]
fn check_view(mnt: &Path, layers: &[Spec], what: &str) {
    let want = expected_view(layers);
    let mut mentioned = BTreeSet::new();
    for spec in layers {
        for (k, node) in spec {
            mentioned.insert(k.clone());
            if let Node::Whiteout(Wh::Aufs) = node {
                let (parent, name) = k.rsplit_once('/').unwrap_or(("", k));
                mentioned.insert(child_path(parent, &format!(".wh.{name}")));
            }
            if let Node::Dir(Some(Opq::Aufs)) = node {
                mentioned.insert(child_path(k, ".wh..wh..opq"));
            }
        }
    }
    let mut wrong = Vec::new();
    for p in &mentioned {
        let r = fs::symlink_metadata(mnt.join(p));
        match (want.get(p), r) {
            (Some(Seen::Dir), Ok(md)) if md.is_dir() => {}
            (Some(Seen::File(_)), Ok(md)) if md.is_file() => {}
            (None, Err(e)) if [libc::ENOENT, libc::ENOTDIR].contains(&errno(&e)) => {}
            (w, r) => wrong.push(format!("  lookup {p}: expected {w:?}, got {r:?}")),
        }
    }
    let mut got = BTreeMap::new();
    actual_view(mnt, "", &mut got);
    for (k, v) in &want {
        match got.get(k) {
            Some(g) if g == v => {}
            g => wrong.push(format!("  readdir {k}: expected {v:?}, got {g:?}")),
        }
    }
    for (k, g) in &got {
        if !want.contains_key(k) {
            wrong.push(format!("  readdir {k}: unexpected {g:?}"));
        }
    }
    let n = wrong.len();
    wrong.truncate(40);
    assert!(
        n == 0,
        "{what}: {n} differences from the expected merged view ({} paths):\n{}",
        want.len(),
        wrong.join("\n")
    );
}

/// Layer `i` of the 200-layer image: a few files and dirs, a whiteout in each form, and
/// here and there an opaque dir (both forms), a whiteout of a whole dir (both forms) and
/// a file over a dir.
fn big_layer(i: usize) -> Spec {
    let mut s = Spec::new();
    let f = |s: &mut Spec, p: String, c: String| {
        s.insert(p, Node::File(c));
    };
    f(&mut s, format!("own{i}"), format!("own {i}\n"));
    f(&mut s, "common".into(), format!("common from {i}\n"));
    s.insert(
        "d".into(),
        Node::Dir(if i == 150 { Some(Opq::Xattr) } else { None }),
    );
    f(&mut s, format!("d/x{i}"), format!("x {i}\n"));
    if i.is_multiple_of(20) {
        s.insert("d/sub".into(), Node::Dir(None));
        f(&mut s, format!("d/sub/z{i}"), format!("z {i}\n"));
    }
    let e = format!("e{}", i % 10);
    s.insert(
        e.clone(),
        Node::Dir(if i == 82 { Some(Opq::Aufs) } else { None }),
    );
    f(&mut s, format!("{e}/y{i}"), format!("y {i}\n"));
    // One whiteout in each form, of names in the few layers below.
    let ta = i + 1 + (i * 7) % 5;
    let mut tc = i + 1 + (i * 11) % 7;
    let dir_a = if i.is_multiple_of(3) { "d/x" } else { "own" };
    let dir_c = if i % 3 == 1 { "d/x" } else { "own" };
    if dir_a == dir_c && ta == tc {
        tc += 1;
    }
    s.insert(format!("{dir_a}{ta}"), Node::Whiteout(Wh::Aufs));
    s.insert(format!("{dir_c}{tc}"), Node::Whiteout(Wh::Char));
    match i {
        30 => f(
            &mut s,
            "e5".into(),
            "a file over the dirs e5 below\n".into(),
        ),
        50 => {
            s.insert("e3".into(), Node::Whiteout(Wh::Char));
        }
        120 => {
            s.insert("e7".into(), Node::Whiteout(Wh::Aufs));
        }
        _ => {}
    }
    s
}

#[test]
fn two_hundred_lowers_with_a_16k_option_string() {
    become_subreaper();
    let _link = helper_link();
    const N: usize = 200;
    let tmp = tempfile::Builder::new()
        .prefix("stratafs-mounting.")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    // containers-storage style: .../overlay/<64 hex digits>/diff per layer.
    let specs: Vec<Spec> = (0..N).map(big_layer).collect();
    let mut lowers = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let id = (i as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        let dir = root.join("overlay").join(format!("{id:064x}")).join("diff");
        fs::create_dir_all(&dir).unwrap();
        write_layer(&dir, spec);
        lowers.push(dir.display().to_string());
    }
    let (upper, work, merged) = (root.join("upper"), root.join("work"), root.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    assert!(
        opts.len() > 16 * 1024,
        "option string only {} bytes",
        opts.len()
    );
    let _g = guard(&merged);

    // As containers-storage runs its mount_program: PROGRAM -o OPTIONS MERGED.
    let t0 = Instant::now();
    let out = run(Command::new(bin()).arg("-o").arg(&opts).arg(&merged));
    let mount_time = t0.elapsed();
    out.ok("stratafs -o <200 lowers> MERGED");
    assert!(is_mounted(&merged));
    let t1 = Instant::now();
    check_view(&merged, &specs, "200 lowers");
    let check_time = t1.elapsed();
    eprintln!(
        "200 lowers, option string {} bytes: mount {:.1} ms (command start to mount live), \
         lookups of every named path + full readdir walk {:.1} ms",
        opts.len(),
        mount_time.as_secs_f64() * 1e3,
        check_time.as_secs_f64() * 1e3
    );
    // Writes go to the upper; a lower file copied up keeps the merged view's content.
    fs::write(merged.join("common"), "changed\n").unwrap();
    assert_eq!(
        fs::read_to_string(upper.join("common")).unwrap(),
        "changed\n"
    );
    fs::remove_file(merged.join("own0")).unwrap();
    assert!(fs::symlink_metadata(merged.join("own0")).is_err());
    umount_ends_daemon(&merged, "200 lowers");

    // The same option string through mount(8) and the helper (libmount passes it whole).
    fs::remove_dir_all(&upper).unwrap();
    fs::remove_dir_all(&work).unwrap();
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let t0 = Instant::now();
    mount_t_stratafs(&[], &merged, &opts).ok("mount -t stratafs <200 lowers>");
    eprintln!(
        "200 lowers through mount -t stratafs: mount {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    check_view(&merged, &specs, "200 lowers via mount(8)");
    umount_ends_daemon(&merged, "200 lowers via mount(8)");
}

#[test]
fn expected_view_model_follows_the_rules() {
    // The oracle of the 200-layer test, on a case worked out by hand.
    let mut top = Spec::new();
    top.insert("a".into(), Node::Whiteout(Wh::Aufs));
    top.insert("d".into(), Node::Dir(Some(Opq::Xattr)));
    top.insert("d/t".into(), Node::File("t0".into()));
    top.insert("e".into(), Node::Dir(None));
    let mut mid = Spec::new();
    mid.insert("b".into(), Node::Whiteout(Wh::Char));
    mid.insert("e".into(), Node::File("e file".into()));
    mid.insert("c".into(), Node::File("c1".into()));
    let mut bot = Spec::new();
    for n in ["a", "b", "c"] {
        bot.insert(n.into(), Node::File(format!("{n}2")));
    }
    bot.insert("d".into(), Node::Dir(None));
    bot.insert("d/u".into(), Node::File("u2".into()));
    bot.insert("e".into(), Node::Dir(None));
    bot.insert("e/v".into(), Node::File("v2".into()));
    let got = expected_view(&[top, mid, bot]);
    let want: BTreeMap<String, Seen> = [
        ("c", Seen::File("c1".into())),
        ("d", Seen::Dir),
        ("d/t", Seen::File("t0".into())),
        ("e", Seen::Dir),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn mixed_whiteout_forms_across_layers() {
    become_subreaper();
    // l2 (bottom) has everything; l1 hides with overlayfs forms, l0 with aufs/OCI forms,
    // and each form also hides things the other form's layer has.
    let l = Layers::new(3);
    for f in ["a", "b", "c", "g", "D/p", "E/q", "F/r"] {
        l.put(2, f, &format!("{f} from l2\n"));
    }
    // l1: overlayfs forms.
    mknod(&l.lower(1, "a"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    l.put(1, "D/p2", "p2 from l1\n");
    set_xattr(&l.lower(1, "D"), "trusted.overlay.opaque", b"y").unwrap();
    l.put(1, "E/q2", "q2 from l1\n");
    l.put(1, "E/.wh..wh..opq", "");
    l.put(1, ".wh.F", "");
    l.put(1, "c", "c from l1\n");
    // l0: aufs forms over l1's entries, a char whiteout over an l1 file.
    l.put(0, ".wh.b", "");
    l.put(0, ".wh.c", "");
    l.put(0, "D/p3", "p3 from l0\n");
    l.put(0, "D/.wh.p2", "");
    l.mkdir(0, "E");
    mknod(&l.lower(0, "E/q2"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    let m = l.mount("");
    assert_eq!(names(&m.mnt), ["D", "E", "g"]);
    assert_eq!(names(&l.m("D")), ["p3"]);
    assert!(names(&l.m("E")).is_empty(), "E: {:?}", names(&l.m("E")));
    for hidden in [
        "a", "b", "c", "F", "F/r", "D/p", "D/p2", "E/q", "E/q2", ".wh.b",
    ] {
        let e = fs::symlink_metadata(l.m(hidden)).expect_err(hidden);
        assert!(
            [libc::ENOENT, libc::ENOTDIR].contains(&errno(&e)),
            "{hidden}: {e}"
        );
    }
    assert_eq!(fs::read_to_string(l.m("g")).unwrap(), "g from l2\n");
    // A name hidden below can be created again.
    fs::write(l.m("a"), "new a\n").unwrap();
    assert_eq!(fs::read_to_string(l.m("a")).unwrap(), "new a\n");
    assert_eq!(names(&m.mnt), ["D", "E", "a", "g"]);
    umount_ends_daemon(&m.mnt, "mixed whiteout forms");
}

#[test]
fn selinux_context_option_is_accepted() {
    become_subreaper();
    let _link = helper_link();
    let ctx = r#"context="system_u:object_r:container_file_t:s0:c1,c2""#;
    // As a container engine passes it to its mount program ...
    let l = small_image();
    let _g = guard(&l.mnt);
    let out = run(Command::new(bin())
        .arg("-o")
        .arg(format!("{},{ctx}", l.opts()))
        .arg(&l.mnt));
    out.ok("stratafs -o ...,context=...");
    check_small_view(&l);
    umount_ends_daemon(&l.mnt, "context=");
    // ... and through mount(8).
    let l = small_image();
    let _g = guard(&l.mnt);
    mount_t_stratafs(&[], &l.mnt, &format!("{},{ctx}", l.opts()))
        .ok("mount -t stratafs -o ...,context=...");
    check_small_view(&l);
    umount_ends_daemon(&l.mnt, "context= via mount(8)");
}

/// A detached daemon logs to syslog (/dev/log) when there is one, else to
/// `-o logfile=PATH`; the default level is warn, `-o debug` or RUST_LOG raise it.
#[test]
fn detached_daemon_logs_to_the_logfile_without_syslog() {
    become_subreaper();
    let syslog = Path::new("/dev/log").exists();
    let ctx = r#"context="system_u:object_r:container_file_t:s0:c1,c2""#;
    // (extra options, RUST_LOG, whether info lines such as "layer ..." are expected)
    let cases = [
        ("", None, false),
        (",debug", None, true),
        ("", Some("info"), true),
    ];
    for (extra, rust_log, info) in cases {
        let l = small_image();
        let log = l.root().join("stratafs.log");
        let _g = guard(&l.mnt);
        let mut cmd = Command::new(bin());
        cmd.env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let opts = format!("{},{ctx},logfile={}{extra}", l.opts(), log.display());
        let out = run(cmd.arg("-o").arg(&opts).arg(&l.mnt)).ok("mount with logfile=");
        assert!(
            out.stderr.is_empty(),
            "a detached mount that works says nothing on stderr: {}",
            out.stderr
        );
        check_small_view(&l);
        umount_ends_daemon(&l.mnt, "logfile=");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let what = format!("logfile= with{extra} RUST_LOG={rust_log:?}");
        if syslog {
            // Syslog wins: the file is only the fallback.
            assert!(
                text.is_empty(),
                "{what}: /dev/log exists, yet the daemon wrote {}:\n{text}",
                log.display()
            );
            continue;
        }
        assert!(
            text.contains("context=") && text.contains("WARN"),
            "{what}: the context= warning is not in {}:\n{text}",
            log.display()
        );
        assert_eq!(
            text.contains(&l.lowers[1].display().to_string()),
            info,
            "{what}: info lines (the layers) expected: {info}:\n{text}"
        );
    }
}

#[test]
fn volatile_marker_lifecycle() {
    become_subreaper();
    let l = small_image();
    let marker = l.work.join(VOLATILE_MARKER);
    let _g = guard(&l.mnt);
    let mount = || {
        run(Command::new(bin())
            .arg("-o")
            .arg(format!("{},volatile", l.opts()))
            .arg(&l.mnt))
    };

    // While mounted the marker exists; fsync works; a clean umount removes it.
    mount().ok("volatile mount");
    assert!(marker.exists(), "no {} while mounted", marker.display());
    let mut f = fs::File::create(l.m("synced")).unwrap();
    f.write_all(b"data\n").unwrap();
    f.sync_all().expect("fsync on a volatile mount");
    f.sync_data().expect("fdatasync on a volatile mount");
    drop(f);
    fs::File::open(&l.mnt)
        .unwrap()
        .sync_all()
        .expect("fsync of a dir");
    umount_ends_daemon(&l.mnt, "volatile");
    assert!(!marker.exists(), "clean umount left {}", marker.display());
    assert_eq!(fs::read_to_string(l.up("synced")).unwrap(), "data\n");

    // SIGKILL: the marker stays and the next mount is refused, naming it.
    mount().ok("volatile mount again");
    let pid = the_daemon(&l.mnt);
    kill(pid as u32, libc::SIGKILL).expect("kill");
    assert_eq!(wait_gone(pid, "SIGKILL"), Ended::Signaled(libc::SIGKILL));
    umount_retry(&l.mnt); // the dead FUSE mount (ENOTCONN) stays until unmounted
    assert!(!is_mounted(&l.mnt));
    assert!(marker.exists(), "SIGKILL removed {}", marker.display());
    for extra in [",volatile", ""] {
        let out = run(Command::new(bin())
            .arg("-o")
            .arg(format!("{}{extra}", l.opts()))
            .arg(&l.mnt));
        assert_eq!(
            out.status.code(),
            Some(1),
            "mount{extra} after an unclean volatile stop: {}",
            out.text()
        );
        assert!(
            out.stderr.contains(&marker.display().to_string()),
            "the refusal should name {}: {}",
            marker.display(),
            out.stderr
        );
        assert!(!is_mounted(&l.mnt));
    }
    // Removing the marker allows the mount.
    fs::remove_file(&marker).unwrap();
    mount().ok("volatile mount after removing the marker");
    assert_eq!(names(&l.mnt), ["both", "bottom", "synced", "top"]);
    assert_eq!(fs::read_to_string(l.m("synced")).unwrap(), "data\n");
    umount_ends_daemon(&l.mnt, "volatile after removing the marker");
    assert!(!marker.exists());
}

#[test]
fn podman_style_empty_option_element() {
    become_subreaper();
    let l = small_image();
    let _g = guard(&l.mnt);
    // podman builds "lowerdir=..,upperdir=..,workdir=..," + ",volatile" and the like.
    let opts = format!("{},,volatile", l.opts());
    run(Command::new(bin()).arg("-o").arg(&opts).arg(&l.mnt)).ok("mount with ',,volatile'");
    assert!(
        l.work.join(VOLATILE_MARKER).exists(),
        "volatile was not applied"
    );
    check_small_view(&l);
    umount_ends_daemon(&l.mnt, ",,volatile");
    assert!(!l.work.join(VOLATILE_MARKER).exists());
}

#[test]
fn symlinked_lowers_are_resolved_at_mount_time() {
    become_subreaper();
    let l = small_image();
    let root = l.root();
    let other = root.join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("elsewhere"), "x\n").unwrap();
    let (s0, s1) = (root.join("link0"), root.join("link1"));
    std::os::unix::fs::symlink(&l.lowers[0], &s0).unwrap();
    // A relative link, as layer stores make them.
    std::os::unix::fs::symlink("l1", &s1).unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        s0.display(),
        s1.display(),
        l.upper.display(),
        l.work.display()
    );
    let _g = guard(&l.mnt);
    run(Command::new(bin()).arg("-o").arg(&opts).arg(&l.mnt)).ok("mount with symlinked lowers");
    assert_eq!(names(&l.mnt), ["both", "bottom", "top"]);
    // Repointing a link after the mount changes nothing: it was resolved once.
    fs::remove_file(&s0).unwrap();
    std::os::unix::fs::symlink(&other, &s0).unwrap();
    common::drop_caches();
    assert_eq!(names(&l.mnt), ["both", "bottom", "top"]);
    assert_eq!(fs::read_to_string(l.m("top")).unwrap(), "top\n");
    assert!(fs::symlink_metadata(l.m("elsewhere")).is_err());
    umount_ends_daemon(&l.mnt, "symlinked lowers");
}

#[test]
fn mountpoint_overlapping_a_layer_is_refused() {
    let _link = helper_link();
    let l = small_image();
    fs::create_dir(l.lower(0, "sub")).unwrap();
    fs::create_dir(l.up("sub")).unwrap();
    let cases = [
        ("the top lower", l.lowers[0].clone()),
        (
            "the bottom lower, spelled with ..",
            l.lowers[1].join("../l1"),
        ),
        ("a dir inside a lower", l.lower(0, "sub")),
        ("the upper", l.upper.clone()),
        ("a dir inside the upper", l.up("sub")),
        ("the workdir", l.work.clone()),
    ];
    for (what, mnt) in &cases {
        let _g = guard(mnt);
        let out = run(Command::new(bin()).arg("-o").arg(l.opts()).arg(mnt));
        assert_eq!(
            out.status.code(),
            Some(1),
            "mountpoint = {what}: {}",
            out.text()
        );
        assert!(
            out.stderr.contains("overlaps"),
            "mountpoint = {what}: the error should say so: {}",
            out.stderr
        );
        assert!(!is_mounted(mnt), "mountpoint = {what}: mounted");
    }
    // Through mount(8), the helper's status and message reach the caller.
    let mnt = l.lowers[0].clone();
    let _g = guard(&mnt);
    let out = mount_t_stratafs(&[], &mnt, &l.opts());
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.stderr.contains("overlaps"), "{}", out.stderr);
    assert!(!is_mounted(&mnt));
}

#[test]
fn lowers_only_mount_is_read_only() {
    let bed = helper_bed();
    let l = &bed.l;
    mount_t_stratafs(&[], &l.mnt, &l.lowers_only_opts()).ok("mount -o lowerdir=A:B");
    let line = mount_line(&l.mnt).unwrap();
    assert!(line.contains(" fuse.stratafs ro,"), "/proc/mounts: {line}");
    assert_eq!(names(&l.mnt), ["both", "bottom", "top"]);
    assert_eq!(fs::read_to_string(l.m("both")).unwrap(), "from l0\n");
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(errno(&e), libc::EROFS, "{what}: {e}");
    };
    erofs(fs::write(l.m("new"), "x").map(|_| ()), "create");
    erofs(
        fs::OpenOptions::new()
            .write(true)
            .open(l.m("top"))
            .map(|_| ()),
        "open for writing",
    );
    erofs(fs::create_dir(l.m("dir")), "mkdir");
    erofs(fs::remove_file(l.m("top")), "unlink");
    erofs(fs::rename(l.m("top"), l.m("top2")), "rename");
    erofs(
        fs::set_permissions(l.m("top"), fs::Permissions::from_mode(0o600)),
        "chmod",
    );
    assert!(names(&l.upper).is_empty() && names(&l.lowers[0]) == ["both", "top"]);
    umount_ends_daemon(&l.mnt, "lowers only");
}

// ---------------------------------------------------------------------------------------
// systemd: the example unit and fstab in fixtures/.
// ---------------------------------------------------------------------------------------

const UNIT_NAME: &str = r"srv-stratafs\x2ddemo.mount";
const DEMO_WHERE: &str = "/srv/stratafs-demo";
const DEMO_LAYERS: &str = "/var/lib/stratafs-demo";

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Finds a systemd tool or fails, saying why: a missing tool is not a pass.
fn systemd_tool(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} not found: install Debian's systemd package (scripts/deps.sh does); \
                 cannot check the systemd examples without it",
                candidates[0]
            )
        })
}

/// `systemd-analyze verify` of a unit file: exit 0 and no complaint naming the unit.
#[track_caller]
fn verify_unit(unit: &Path) {
    let sa = systemd_tool(&["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]);
    let out = run(Command::new(sa).args(["verify", "--man=no"]).arg(unit));
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.status.success(),
        "systemd-analyze verify {}: {}\n{}",
        unit.display(),
        out.status,
        out.text()
    );
    let text = out.text();
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&name) || l.contains("stratafs"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify {}: {complaints:?}",
        unit.display()
    );
}

/// Key=value settings of a unit file (the last one wins).
fn unit_settings(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_example_verifies() {
    let unit = fixture(&format!("systemd/{UNIT_NAME}"));
    let text = fs::read_to_string(&unit).unwrap();
    let s = unit_settings(&text);
    assert_eq!(s["What"], "stratafs");
    assert_eq!(s["Where"], DEMO_WHERE);
    assert_eq!(s["Type"], "stratafs");
    assert_eq!(s["RequiresMountsFor"], DEMO_LAYERS);
    for k in [
        "lowerdir=",
        "upperdir=",
        "workdir=",
        "x-systemd.requires-mounts-for=",
    ] {
        assert!(s["Options"].contains(k), "Options= lacks {k}");
    }
    verify_unit(&unit);
}

/// Replaces the example's paths by dirs under `root`, created with a small image.
fn localize(text: &str, root: &Path, mnt: &Path) -> String {
    let layers = root.join("layers");
    for d in ["app", "base", "upper", "work"] {
        fs::create_dir_all(layers.join(d)).unwrap();
    }
    fs::write(layers.join("app/hello"), "from app\n").unwrap();
    fs::write(layers.join("base/hello"), "from base\n").unwrap();
    fs::write(layers.join("base/os-release"), "base\n").unwrap();
    text.replace(DEMO_LAYERS, &layers.display().to_string())
        .replace(DEMO_WHERE, &mnt.display().to_string())
}

#[track_caller]
fn check_example_view(mnt: &Path) {
    assert_eq!(names(mnt), ["hello", "os-release"]);
    assert_eq!(fs::read_to_string(mnt.join("hello")).unwrap(), "from app\n");
}

#[test]
fn systemd_unit_example_options_mount() {
    // What systemd would run for the unit, with its paths moved to a temp dir.
    become_subreaper();
    let _link = helper_link();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let unit = fs::read_to_string(fixture(&format!("systemd/{UNIT_NAME}"))).unwrap();
    let s = unit_settings(&localize(&unit, tmp.path(), &mnt));
    let _g = guard(&mnt);
    run(tool("mount")
        .arg("-t")
        .arg(&s["Type"])
        .arg(&s["What"])
        .arg(&s["Where"])
        .arg("-o")
        .arg(&s["Options"]))
    .ok("mount with the unit's settings");
    check_example_view(&mnt);
    umount_ends_daemon(&mnt, "the unit's settings");
}

#[test]
fn fstab_example_through_systemd_fstab_generator() {
    let generator = systemd_tool(&[
        "/usr/lib/systemd/system-generators/systemd-fstab-generator",
        "/lib/systemd/system-generators/systemd-fstab-generator",
    ]);
    let out_dir = tempfile::tempdir().unwrap();
    let d = out_dir.path().display().to_string();
    let out = run(Command::new(generator)
        .env("SYSTEMD_FSTAB", fixture("fstab.example"))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .args([&d, &d, &d]));
    assert!(
        out.status.success(),
        "systemd-fstab-generator: {}",
        out.text()
    );
    let unit = out_dir.path().join(UNIT_NAME);
    let text = fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("the generator wrote no {UNIT_NAME}: {e}; {}", out.text()));
    let s = unit_settings(&text);
    assert_eq!(s["Type"], "stratafs");
    assert_eq!(s["What"], "stratafs");
    assert_eq!(
        s["RequiresMountsFor"], DEMO_LAYERS,
        "x-systemd.requires-mounts-for= did not become RequiresMountsFor=:\n{text}"
    );
    // nofail: wanted by local-fs.target, not required.
    assert!(out_dir
        .path()
        .join("local-fs.target.wants")
        .join(UNIT_NAME)
        .exists());
    verify_unit(&unit);
}

#[test]
fn fstab_example_mounts() {
    become_subreaper();
    let _link = helper_link();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let text = fs::read_to_string(fixture("fstab.example")).unwrap();
    let fstab = tmp.path().join("fstab");
    fs::write(&fstab, localize(&text, tmp.path(), &mnt)).unwrap();
    let _g = guard(&mnt);
    run(tool("mount").arg("--fstab").arg(&fstab).arg(&mnt)).ok("mount the fstab example");
    check_example_view(&mnt);
    umount_ends_daemon(&mnt, "the fstab example");
    // The commented mount.fuse3 variant works as well.
    let _b = bin_link();
    let fuse_line = text
        .lines()
        .find_map(|l| l.strip_prefix("#stratafs"))
        .map(|rest| format!("stratafs{rest}\n"))
        .expect("the example's fuse.stratafs line");
    assert!(fuse_line.contains(" fuse.stratafs "));
    fs::write(&fstab, localize(&fuse_line, tmp.path(), &mnt)).unwrap();
    run(tool("mount").arg("--fstab").arg(&fstab).arg(&mnt)).ok("mount the fuse.stratafs line");
    check_example_view(&mnt);
    umount_ends_daemon(&mnt, "the fstab example, fuse.stratafs");
}
