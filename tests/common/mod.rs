//! Shared test harness: builds layer dirs in a temp dir, mounts stratafs (the real binary,
//! a real FUSE mount) and unmounts it on Drop, even when the test fails.
#![allow(dead_code)]

pub mod side;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stratafs"))
}

/// A set of layer directories under one temp dir: lowers l0 (top) .. lN, upper, work, mnt.
pub struct Layers {
    pub tmp: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Layers {
    pub fn new(n_lowers: usize) -> Layers {
        let tmp = tempfile::Builder::new()
            .prefix("stratafs-test.")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        let lowers: Vec<PathBuf> = (0..n_lowers).map(|i| root.join(format!("l{i}"))).collect();
        for l in &lowers {
            fs::create_dir(l).unwrap();
        }
        let upper = root.join("upper");
        let work = root.join("work");
        let mnt = root.join("mnt");
        for d in [&upper, &work, &mnt] {
            fs::create_dir(d).unwrap();
        }
        Layers {
            tmp,
            lowers,
            upper,
            work,
            mnt,
        }
    }

    /// Path inside lower `i`.
    pub fn lower(&self, i: usize, rel: &str) -> PathBuf {
        self.lowers[i].join(rel)
    }

    /// Writes a file into lower `i`, creating parent dirs.
    pub fn put(&self, i: usize, rel: &str, data: &str) {
        let p = self.lower(i, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    pub fn mkdir(&self, i: usize, rel: &str) {
        fs::create_dir_all(self.lower(i, rel)).unwrap();
    }

    /// The standard read-write option string for these layers.
    pub fn opts(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mounts with the standard options plus `extra` (comma-separated, may be empty).
    pub fn mount(&self, extra: &str) -> Mount {
        let mut o = self.opts();
        if !extra.is_empty() {
            o.push(',');
            o.push_str(extra);
        }
        Mount::new(&o, &self.mnt)
    }

    /// Path inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

/// Runs the stratafs binary with these arguments.
pub fn run_stratafs(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run stratafs")
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let mut f = l.split(' ');
        let _src = f.next();
        f.next().map(|m| Path::new(m) == want).unwrap_or(false)
    })
}

/// The count of requests of opcode `op` (e.g. "READ") in a `stratafs stats` report.
pub fn report_count(report: &str, op: &str) -> u64 {
    report
        .lines()
        .find(|line| line.split_whitespace().next() == Some(op))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A live stratafs mount; unmounted (and its daemon gone) when dropped.
pub struct Mount {
    pub mnt: PathBuf,
}

impl Mount {
    pub fn new(opts: &str, mnt: &Path) -> Mount {
        let out = Command::new(bin())
            .arg("-o")
            .arg(opts)
            .arg(mnt)
            .output()
            .expect("run stratafs");
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(mnt),
            "stratafs returned 0 but nothing is mounted"
        );
        Mount {
            mnt: mnt.to_path_buf(),
        }
    }

    /// Unmounts now and waits until the mount and its daemon are gone.
    pub fn unmount(&mut self) {
        if !is_mounted(&self.mnt) {
            return;
        }
        let _ = Command::new("umount").arg(&self.mnt).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.mnt) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // The daemon still holds the upper and work dirs until it has exited: a mount of
        // the same layers right after must not find them in use. (Not forever: a lazily
        // detached mount's daemon lives on while a test still holds files of it open.)
        daemons_gone_within(&self.mnt, Duration::from_secs(5));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// errno of an io::Error (0 when it has none).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Sorted names of a directory.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A live kernel overlayfs mount (the oracle of the model test); unmounted when dropped.
pub struct OverlayMount {
    pub mnt: PathBuf,
}

impl OverlayMount {
    /// `mount -t overlay overlay -o OPTS MNT`, done with mount(2).
    pub fn new(opts: &str, mnt: &Path) -> OverlayMount {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let src = CString::new("overlay").unwrap();
        let target = CString::new(mnt.as_os_str().as_bytes()).unwrap();
        let data = CString::new(opts).unwrap();
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                data.as_ptr() as *const libc::c_void,
            )
        };
        assert!(
            r == 0,
            "overlay mount ({opts}) failed: {}",
            std::io::Error::last_os_error()
        );
        OverlayMount {
            mnt: mnt.to_path_buf(),
        }
    }

    /// Unmounts now (lazily if still busy after a few tries).
    pub fn unmount(&mut self) {
        umount_retry(&self.mnt);
    }
}

/// umount(2) of whatever is mounted at `mnt`, retried while it is busy (a process another
/// test thread is forking may hold a reference for a moment), lazily after 5 s.
pub fn umount_retry(mnt: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let target = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    for _ in 0..250 {
        if !is_mounted(mnt) {
            return;
        }
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

impl Layers {
    /// Mounts kernel overlayfs on these layers with the standard options plus `extra`.
    pub fn mount_overlay(&self, extra: &str) -> OverlayMount {
        let mut o = self.opts();
        if !extra.is_empty() {
            o.push(',');
            o.push_str(extra);
        }
        OverlayMount::new(&o, &self.mnt)
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the rule tests (tests/rules.rs): tree snapshots, xattrs, raw syscalls, extra
// mounts (tmpfs, a foreground daemon).
// ---------------------------------------------------------------------------------------

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// lsetxattr(2): does not follow a symlink.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings and a valid buffer of the given length.
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// lgetxattr(2).
pub fn get_xattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// llistxattr(2), sorted.
pub fn list_xattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: a valid C string and a buffer of buf.len() bytes.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut v: Vec<String> = buf[..r as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    Ok(v)
}

/// lremovexattr(2).
pub fn remove_xattr(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    cvt(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
}

/// mknod(2) of a device or fifo; `mode` includes the S_IF* type bits.
pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid C string.
    cvt(unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) })
}

/// utimensat(2) with AT_SYMLINK_NOFOLLOW: sets atime and mtime (seconds, nanoseconds).
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as libc::c_long,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as libc::c_long,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// renameat2(2) with `flags` (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE).
pub fn rename2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: valid C strings.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

/// truncate(2).
pub fn truncate(p: &Path, len: i64) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid C string.
    cvt(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })
}

/// statvfs(3).
pub fn statvfs(p: &Path) -> libc::statvfs {
    let c = cpath(p);
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and out-parameter.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(
        r,
        0,
        "statvfs {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    s
}

/// Asks the kernel to drop clean dentries and inodes, so FUSE forgets what it can.
pub fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "2");
}

/// A directory stream through libc (opendir/readdir/telldir/seekdir), `.` and `..` included.
pub struct RawDir(*mut libc::DIR);

impl RawDir {
    pub fn open(p: &Path) -> RawDir {
        let c = cpath(p);
        // SAFETY: a valid C string.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(
            !d.is_null(),
            "opendir {}: {}",
            p.display(),
            io::Error::last_os_error()
        );
        RawDir(d)
    }

    /// The next name, None at the end (a readdir error panics).
    pub fn read_name(&mut self) -> Option<String> {
        // SAFETY: errno is thread-local; the stream is open.
        let e = unsafe {
            *libc::__errno_location() = 0;
            libc::readdir(self.0)
        };
        if e.is_null() {
            let err = io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(0), "readdir: {err}");
            return None;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
        Some(name.to_string_lossy().into_owned())
    }

    /// Every name left in the stream.
    pub fn read_rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(n) = self.read_name() {
            v.push(n);
        }
        v
    }

    pub fn tell(&mut self) -> libc::c_long {
        // SAFETY: the stream is open.
        unsafe { libc::telldir(self.0) }
    }

    pub fn seek(&mut self, pos: libc::c_long) {
        // SAFETY: the stream is open; pos came from telldir on it.
        unsafe { libc::seekdir(self.0, pos) }
    }

    pub fn rewind(&mut self) {
        // SAFETY: the stream is open.
        unsafe { libc::rewinddir(self.0) }
    }
}

impl Drop for RawDir {
    fn drop(&mut self) {
        // SAFETY: opened by opendir, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// All names of a directory via libc readdir, `.` and `..` included, in stream order.
pub fn raw_names(dir: &Path) -> Vec<String> {
    RawDir::open(dir).read_rest()
}

/// What a snapshot records of one object: everything but atime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// (length, hash) of a regular file's data.
    pub data: Option<(u64, u64)>,
    pub target: Option<PathBuf>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Relative path ("" for the root) -> object.
pub type Tree = BTreeMap<String, Obj>;

/// (length, hash) of a file's data, read with O_NOATIME so that the reading changes nothing.
pub fn file_digest(p: &Path) -> (u64, u64) {
    use std::hash::Hasher;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
        .or_else(|_| fs::File::open(p))
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
        len += n as u64;
    }
    (len, h.finish())
}

/// Records a whole tree: names, types, modes, owners, inode numbers, link counts, sizes,
/// mtimes, ctimes, file data, symlink targets and xattrs. Does not follow symlinks.
pub fn snapshot(root: &Path) -> Tree {
    let mut t = Tree::new();
    snap_walk(root, "", &mut t);
    t
}

fn snap_walk(root: &Path, rel: &str, t: &mut Tree) {
    let p = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = md.file_type();
    let mut xattrs = Vec::new();
    for n in list_xattr(&p).unwrap_or_default() {
        let v = get_xattr(&p, &n).unwrap_or_default();
        xattrs.push((n, v));
    }
    t.insert(
        rel.to_string(),
        Obj {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            ino: md.ino(),
            nlink: md.nlink(),
            size: md.size(),
            rdev: md.rdev(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            data: ft.is_file().then(|| file_digest(&p)),
            target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
            xattrs,
        },
    );
    if ft.is_dir() {
        let mut kids: Vec<String> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kids.sort();
        for k in kids {
            let r = if rel.is_empty() {
                k
            } else {
                format!("{rel}/{k}")
            };
            snap_walk(root, &r, t);
        }
    }
}

/// Panics with the differences when two snapshots differ.
#[track_caller]
pub fn assert_same_tree(label: &str, before: &Tree, after: &Tree) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    for (k, b) in before {
        match after.get(k) {
            None => diffs.push(format!("  removed: '{k}' {b:?}")),
            Some(a) if a != b => {
                diffs.push(format!("  changed: '{k}'\n    was {b:?}\n    now {a:?}"))
            }
            _ => {}
        }
    }
    for (k, a) in after {
        if !before.contains_key(k) {
            diffs.push(format!("  added: '{k}' {a:?}"));
        }
    }
    diffs.truncate(30);
    panic!("{label} changed:\n{}", diffs.join("\n"));
}

/// A human-readable type letter of a metadata's file type.
pub fn type_char(md: &fs::Metadata) -> char {
    let ft = md.file_type();
    if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else {
        '-'
    }
}

impl Layers {
    /// The temp dir holding all layers (for extra dirs a test needs).
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Path inside the upper.
    pub fn up(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    /// Writes a file into the upper, creating parent dirs (before mounting).
    pub fn put_upper(&self, rel: &str, data: &str) {
        let p = self.up(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// Creates a symlink `rel` -> `target` in lower `i`, creating parent dirs.
    pub fn symlink(&self, i: usize, rel: &str, target: impl AsRef<Path>) {
        let p = self.lower(i, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// The daemon's copy-up scratch dir inside the workdir.
    pub fn scratch(&self) -> PathBuf {
        self.work.join("stratafs.work")
    }

    /// `lowerdir=...` alone: a mount without an upper.
    pub fn lowers_only_opts(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("lowerdir={}", lowers.join(":"))
    }

    /// Snapshots of every lower, to compare after the test.
    pub fn snap_lowers(&self) -> Vec<Tree> {
        self.lowers.iter().map(|p| snapshot(p)).collect()
    }

    /// Every lower is exactly as `before` recorded it (S2: the daemon never writes there).
    #[track_caller]
    pub fn assert_lowers_unchanged(&self, before: &[Tree]) {
        for (i, (p, b)) in self.lowers.iter().zip(before).enumerate() {
            assert_same_tree(&format!("lower {i} ({})", p.display()), b, &snapshot(p));
        }
    }
}

/// Mounts a tmpfs of `size` (e.g. "37m") at `dir` (created); unmounted when the guard drops.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Mount {
    fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(st.success(), "mount tmpfs at {}", dir.display());
    assert!(is_mounted(dir));
    Mount {
        mnt: dir.to_path_buf(),
    }
}

/// Starts the daemon in the foreground (`-f`) and waits until the mount is live.
pub fn spawn_foreground(opts: &str, mnt: &Path) -> std::process::Child {
    spawn_foreground_logged(opts, mnt, std::process::Stdio::null())
}

/// `spawn_foreground` with the daemon's stderr going to `stderr`. A daemon that does not
/// mount within 20 s is killed and whatever it left at `mnt` detached.
pub fn spawn_foreground_logged(
    opts: &str,
    mnt: &Path,
    stderr: std::process::Stdio,
) -> std::process::Child {
    let mut child = Command::new(bin())
        .arg("-f")
        .arg("-o")
        .arg(opts)
        .arg(mnt)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn stratafs -f");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(mnt) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("stratafs -f exited before mounting: {st}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
            panic!("stratafs -f did not mount within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Pids of live stratafs daemons whose command line ends with the mountpoint `mnt`.
pub fn daemons_for(mnt: &Path) -> Vec<u32> {
    daemons_of(&bin(), mnt)
}

/// Pids of live processes of the program `bin` whose command line ends with `mnt`.
pub fn daemons_of(bin: &Path, mnt: &Path) -> Vec<u32> {
    let (bin, want) = (bin.as_os_str().as_bytes(), mnt.as_os_str().as_bytes());
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.first() == Some(&bin) && args.last() == Some(&want) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until no daemon serves `mnt` any more (after an unmount, the old daemon's exit
/// path still touches the mountpoint; a new mount there must not race with it).
pub fn wait_daemons_gone(mnt: &Path) {
    assert!(
        daemons_gone_within(mnt, Duration::from_secs(10)),
        "stratafs daemons {:?} still running 10s after {} was unmounted",
        daemons_for(mnt),
        mnt.display()
    );
}

/// Whether the daemons serving `mnt` are gone within `limit` (waits for them until then).
pub fn daemons_gone_within(mnt: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !daemons_for(mnt).is_empty() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// splitmix64: small, fast, and the same sequence everywhere for a seed. Test files add the
/// draws they need (below, chance, pick, ...) in impl blocks of their own.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A draw in 0..n (0 when n is 0), as u64 or usize.
    pub fn below<N: Bound>(&mut self, n: N) -> N {
        let n = n.to_u64();
        N::from_u64(if n == 0 { 0 } else { self.next() % n })
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100u64) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// The integer types a draw can be asked in.
pub trait Bound: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
}

impl Bound for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(v: u64) -> u64 {
        v
    }
}

/// Plain integer literals (non-negative ones).
impl Bound for i32 {
    fn to_u64(self) -> u64 {
        self.max(0) as u64
    }
    fn from_u64(v: u64) -> i32 {
        v as i32
    }
}

impl Bound for usize {
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(v: u64) -> usize {
        v as usize
    }
}
