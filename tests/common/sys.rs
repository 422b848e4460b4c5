//! Thin wrappers of the syscalls tests make (xattrs, mknod, times, renameat2, libc
//! directory streams), with the errors as io::Error.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
    set_xattr_with(p, name, value, 0, false)
}

/// setxattr(2) (`follow`) or lsetxattr(2), with XATTR_CREATE / XATTR_REPLACE `flags`.
pub fn set_xattr_with(
    p: &Path,
    name: &str,
    value: &[u8],
    flags: i32,
    follow: bool,
) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: valid C strings and a valid buffer of the given length.
    cvt(unsafe {
        if follow {
            libc::setxattr(c.as_ptr(), n.as_ptr(), v, len, flags)
        } else {
            libc::lsetxattr(c.as_ptr(), n.as_ptr(), v, len, flags)
        }
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
    remove_xattr_with(p, name, false)
}

/// removexattr(2) (`follow`) or lremovexattr(2).
pub fn remove_xattr_with(p: &Path, name: &str, follow: bool) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    cvt(unsafe {
        if follow {
            libc::removexattr(c.as_ptr(), n.as_ptr())
        } else {
            libc::lremovexattr(c.as_ptr(), n.as_ptr())
        }
    })
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

/// open(2) with raw `flags` (O_CLOEXEC added) and `mode`, as a program calls it: the
/// access mode, creation and status flags exactly as given.
pub fn open_raw(p: &Path, flags: i32, mode: u32) -> io::Result<fs::File> {
    use std::os::fd::FromRawFd;
    let c = cpath(p);
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a descriptor nobody else owns.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// close(2) of `f` with its error (a FUSE flush reports a write-back failure there; dropping
/// a File hides it).
pub fn close(f: fs::File) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor was owned by `f` and is closed once.
    cvt(unsafe { libc::close(f.into_raw_fd()) })
}

/// The inode flags of chattr/lsattr (FS_IOC_GETFLAGS).
pub fn inode_flags(f: &fs::File) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    // SAFETY: a valid descriptor; the kernel writes one int.
    cvt(unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) })?;
    Ok(v as u32)
}

/// Sets the inode flags of chattr (FS_IOC_SETFLAGS).
pub fn set_inode_flags(f: &fs::File, flags: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = flags as libc::c_int;
    // SAFETY: a valid descriptor; the kernel reads one int.
    cvt(unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &v) })
}

/// umask(2) of the whole test process; the previous mask.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) cannot fail and has no memory arguments.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// kill(2).
pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory arguments.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) })
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
