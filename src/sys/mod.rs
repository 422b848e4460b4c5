//! The only module with `unsafe`: thin, safe wrappers over the raw syscalls the union
//! needs. Every wrapper returns `Result<_, Errno>`; nothing here knows about layers or
//! FUSE. This file holds Errno and the path calls (openat2 beneath a root, the *at family,
//! renameat2, times); the rest by concern: data.rs (I/O and sync), dir.rs (listing),
//! xattr.rs, flags.rs (inode flags, statx), mount.rs, process.rs.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// A positive errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENOTSUP: Errno = Errno(libc::EOPNOTSUPP);
    pub const ELOOP: Errno = Errno(libc::ELOOP);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const EMLINK: Errno = Errno(libc::EMLINK);

    pub fn last() -> Errno {
        Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // strerror's text alone, without std's " (os error N)".
        let text = io::Error::from_raw_os_error(self.0).to_string();
        let text = text.split(" (os error").next().unwrap_or(&text);
        write!(f, "{text}")
    }
}

pub type SysResult<T> = Result<T, Errno>;

fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_isize(ret: isize) -> SysResult<usize> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// Retries a syscall that returned EINTR.
fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    loop {
        match f() {
            Err(Errno(libc::EINTR)) => continue,
            other => return other,
        }
    }
}

pub fn cstr(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `stat` of the kernel, as returned by fstatat.
pub type Stat = libc::stat;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Opens `rel` (a relative path of plain directory components, "" for the root itself)
/// beneath `root`, refusing every symlink on the way and any escape (S19).
pub fn open_beneath(root: BorrowedFd<'_>, rel: &OsStr, flags: i32) -> SysResult<OwnedFd> {
    let path = if rel.is_empty() {
        CString::new(".").expect("static")
    } else {
        cstr(rel)?
    };
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    let fd = retry(|| {
        // SAFETY: path and how are valid for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        check_isize(r as isize)
    })?;
    // SAFETY: the kernel returned a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a directory by ordinary path (used only for layer roots at mount time).
pub fn open_dir_path(path: &std::path::Path) -> SysResult<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat(dir, name) for a single component; never follows a final symlink.
pub fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cstr(name)?;
    let fd = retry(|| {
        // SAFETY: valid C string and fd.
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode as libc::c_uint,
            )
        })
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Re-opens an O_PATH descriptor with real access flags through /proc (the magic link
/// points at an object we already resolved safely).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> SysResult<OwnedFd> {
    let p = proc_fd_path(fd, None);
    let fd = retry(|| {
        // SAFETY: valid C string.
        check(unsafe { libc::open(p.as_ptr(), (flags | libc::O_CLOEXEC) & !libc::O_CREAT) })
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// "/proc/self/fd/N[/name]": a path whose only followed link is the magic link of an
/// already-open descriptor, so a final component is resolved inside that directory.
fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&OsStr>) -> CString {
    let mut v = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        v.push(b'/');
        v.extend_from_slice(n.as_bytes());
    }
    CString::new(v).unwrap_or_default()
}

pub fn fstatat(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Stat> {
    let c = if name.is_empty() {
        CString::default()
    } else {
        cstr(name)?
    };
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

pub fn zero_stat() -> Stat {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    unsafe { std::mem::zeroed() }
}

pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    fstatat(fd, OsStr::new(""))
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })?;
    Ok(())
}

pub fn symlinkat(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OsString> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buffer is valid for buf.len() bytes.
    let n = check_isize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
) -> SysResult<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// A new name `newname` in `newdir` for the object an O_PATH descriptor refers to.
pub fn link_fd(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, newname: &OsStr) -> SysResult<()> {
    let p = proc_fd_path(fd, None);
    let n = cstr(newname)?;
    // SAFETY: valid C strings; the magic link is followed to the object itself.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    Ok(())
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;

pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
    flags: u32,
) -> SysResult<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// fchmodat2(2), Linux 6.6 (the number of the unified syscall table, which x86_64,
/// arm64 and riscv share): the first chmod that can refuse to follow a final symlink.
const SYS_FCHMODAT2: libc::c_long = 452;
static HAS_FCHMODAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// chmod of an entry of an open dir (an empty name: the dir itself) without following a
/// final symlink (a symlink's mode cannot change: EOPNOTSUPP).
pub fn fchmodat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    use std::sync::atomic::Ordering::Relaxed;
    // Through the dir's /proc link, which O_PATH descriptors of the dir itself allow.
    let through_proc = || {
        let p = proc_fd_path(dir, (!name.is_empty()).then_some(name));
        // SAFETY: valid C string; the path ends in a single component of an open dir.
        check(unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode as libc::mode_t, 0) })
            .map(|_| ())
    };
    if name.is_empty() || !HAS_FCHMODAT2.load(Relaxed) {
        return through_proc();
    }
    let c = cstr(name)?;
    // SAFETY: valid C string; plain syscall.
    let r = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(r as libc::c_int) {
        // An older kernel.
        Err(Errno::ENOSYS) => {
            HAS_FCHMODAT2.store(false, Relaxed);
            through_proc()
        }
        // A real refusal, or a seccomp filter that does not know the call: the latter
        // where the /proc path then succeeds.
        Err(Errno::EPERM) => {
            let r = through_proc();
            if r.is_ok() {
                HAS_FCHMODAT2.store(false, Relaxed);
            }
            r
        }
        r => r.map(|_| ()),
    }
}

/// chown without following a final symlink; an empty name means `dir` itself.
pub fn fchownat(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        // `dir` itself (O_PATH descriptors included).
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // SAFETY: plain syscall.
    match check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }) {
        // An O_PATH descriptor, which fchmod refuses: through its /proc link.
        Err(Errno::EBADF) => {}
        r => return r.map(|_| ()),
    }
    let p = proc_fd_path(fd, None);
    // SAFETY: valid C string (works for O_PATH descriptors too).
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// fstatat or fstat of the object `t` addresses (an entry of a dir, or a descriptor).
pub fn stat_target(t: XTarget<'_>) -> SysResult<Stat> {
    match t {
        XTarget::At(d, n) => fstatat(d, n),
        XTarget::Fd(f) => fstat(f),
    }
}

/// fchownat or fchown of the object `t` addresses.
pub fn chown_target(t: XTarget<'_>, uid: u32, gid: u32) -> SysResult<()> {
    match t {
        XTarget::At(d, n) => fchownat(d, n, uid, gid),
        XTarget::Fd(f) => fchown(f, uid, gid),
    }
}

/// fchmodat or fchmod of the object `t` addresses.
pub fn chmod_target(t: XTarget<'_>, mode: u32) -> SysResult<()> {
    match t {
        XTarget::At(d, n) => fchmodat(d, n, mode),
        XTarget::Fd(f) => fchmod(f, mode),
    }
}

/// One timestamp of a utimensat call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeSpec {
    /// Left as it is (UTIME_OMIT).
    #[default]
    Keep,
    /// The current time (UTIME_NOW).
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, i64),
}

impl TimeSpec {
    /// Whether a call with this timestamp sets it.
    pub fn changes(self) -> bool {
        self != TimeSpec::Keep
    }
}

fn to_timespec(t: TimeSpec) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        TimeSpec::Keep => (0, libc::UTIME_OMIT),
        TimeSpec::Now => (0, libc::UTIME_NOW),
        TimeSpec::At(s, ns) => (s, ns),
    };
    libc::timespec { tv_sec, tv_nsec }
}

pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: TimeSpec,
    mtime: TimeSpec,
) -> SysResult<()> {
    if name.is_empty() {
        return utimens_fd(dir, atime, mtime);
    }
    let c = cstr(name)?;
    let ts = [to_timespec(atime), to_timespec(mtime)];
    // SAFETY: valid C string and array of two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Sets the times of the object an fd (O_PATH ones too) refers to.
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> SysResult<()> {
    let p = proc_fd_path(fd, None);
    let ts = [to_timespec(atime), to_timespec(mtime)];
    // SAFETY: valid C string and array of two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) })?;
    Ok(())
}

/// Whether the daemon may read and search the directory an O_PATH fd refers to.
pub fn check_dir_access(fd: BorrowedFd<'_>) -> SysResult<()> {
    let empty = CString::default();
    // SAFETY: valid fd and empty C string with AT_EMPTY_PATH.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::R_OK | libc::X_OK,
            libc::AT_EMPTY_PATH | libc::AT_EACCESS,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

mod data;
mod dir;
mod flags;
mod mount;
mod process;
mod xattr;
pub use data::*;
pub use dir::*;
pub use flags::*;
pub use mount::*;
pub use process::*;
pub use xattr::*;
