//! Extended attributes of an entry of an open directory or of an open descriptor
//! (getxattrat(2) where the kernel has it), never following a final symlink.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use super::*;

/// Which object an xattr call addresses: an entry of an open dir (never following a final
/// symlink), or an open descriptor.
#[derive(Clone, Copy)]
pub enum XTarget<'a> {
    At(BorrowedFd<'a>, &'a OsStr),
    Fd(BorrowedFd<'a>),
}

impl XTarget<'_> {
    /// Self, unless it names an entry with the empty name (the dir itself).
    fn filter_named(self) -> Self {
        match self {
            XTarget::At(d, n) if n.is_empty() => XTarget::Fd(d),
            t => t,
        }
    }

    fn path(&self) -> CString {
        match *self {
            XTarget::At(d, n) => proc_fd_path(d, Some(n)),
            XTarget::Fd(f) => proc_fd_path(f, None),
        }
    }
}

/// Reads a value into a growing buffer; the closure gets (buf, len) and returns the size.
fn read_sized(mut f: impl FnMut(*mut libc::c_void, usize) -> isize) -> SysResult<Vec<u8>> {
    let mut size = 256usize;
    loop {
        let mut buf = vec![0u8; size];
        let r = f(buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        let e = Errno::last();
        if e != Errno::ERANGE || size >= 1 << 20 {
            return Err(e);
        }
        let need = f(std::ptr::null_mut(), 0);
        size = if need > 0 {
            need as usize + 16
        } else {
            size * 4
        };
    }
}

/// getxattrat(2), Linux 6.13 (the number of the unified syscall table, which x86_64,
/// arm64 and riscv share): an xattr of an entry of a directory fd without walking a
/// /proc/self/fd path, which costs more than the read.
const SYS_GETXATTRAT: libc::c_long = 464;
static HAS_GETXATTRAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// lgetxattr of `name` in `dir` through getxattrat; None where the kernel lacks it.
fn getxattr_at(dir: BorrowedFd<'_>, entry: &CStr, name: &CStr) -> Option<SysResult<Vec<u8>>> {
    use std::sync::atomic::Ordering::Relaxed;
    if !HAS_GETXATTRAT.load(Relaxed) {
        return None;
    }
    let r = read_sized(|buf, len| {
        let mut args = XattrArgs {
            value: buf as u64,
            size: len as u32,
            flags: 0,
        };
        // SAFETY: valid C strings, an args struct of the size passed, and a value buffer
        // valid for `size` bytes (or null with size 0).
        unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                dir.as_raw_fd(),
                entry.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                name.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            ) as isize
        }
    });
    // ENOSYS: an older kernel; EPERM: a seccomp filter that does not know the call.
    if r == Err(Errno::ENOSYS) || r == Err(Errno::EPERM) {
        HAS_GETXATTRAT.store(false, Relaxed);
        return None;
    }
    Some(r)
}

/// fgetxattr (an O_PATH descriptor: EBADF).
fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> SysResult<Vec<u8>> {
    read_sized(|buf, len| {
        // SAFETY: buf is valid for len bytes (or null with len 0).
        unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf, len) }
    })
}

pub fn getxattr(t: XTarget<'_>, name: &OsStr) -> SysResult<Vec<u8>> {
    let n = cstr(name)?;
    match t.filter_named() {
        XTarget::At(dir, entry) => {
            if let Some(r) = getxattr_at(dir, &cstr(entry)?, &n) {
                return r;
            }
        }
        // The union's directory handles are O_PATH descriptors, which fgetxattr refuses:
        // a directory is its own entry ".", read without walking its /proc link. That
        // needs search permission on it, which the link does not (a plain user's daemon
        // on a directory it may read but not search).
        XTarget::Fd(f) => match getxattr_at(f, c".", &n) {
            Some(Err(Errno::ENOTDIR | Errno::EACCES)) | None => match fgetxattr(f, &n) {
                Err(Errno::EBADF) => {}
                r => return r,
            },
            Some(r) => return r,
        },
    }
    let p = t.path();
    let follow = matches!(t, XTarget::Fd(_));
    read_sized(|buf, len| {
        // SAFETY: buf is valid for len bytes (or null with len 0).
        unsafe {
            if follow {
                libc::getxattr(p.as_ptr(), n.as_ptr(), buf, len)
            } else {
                libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf, len)
            }
        }
    })
}

pub fn listxattr(t: XTarget<'_>) -> SysResult<Vec<OsString>> {
    let p = t.path();
    let follow = matches!(t, XTarget::Fd(_));
    let raw = read_sized(|buf, len| {
        // SAFETY: buf is valid for len bytes (or null with len 0).
        unsafe {
            if follow {
                libc::listxattr(p.as_ptr(), buf as *mut libc::c_char, len)
            } else {
                libc::llistxattr(p.as_ptr(), buf as *mut libc::c_char, len)
            }
        }
    })?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsStr::from_bytes(s).to_os_string())
        .collect())
}

pub fn setxattr(t: XTarget<'_>, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
    let p = t.path();
    let n = cstr(name)?;
    // SAFETY: valid strings and value buffer.
    check(unsafe {
        if matches!(t, XTarget::Fd(_)) {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr() as *const libc::c_void,
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr() as *const libc::c_void,
                value.len(),
                flags,
            )
        }
    })?;
    Ok(())
}

pub fn removexattr(t: XTarget<'_>, name: &OsStr) -> SysResult<()> {
    let p = t.path();
    let n = cstr(name)?;
    // SAFETY: valid strings.
    check(unsafe {
        if matches!(t, XTarget::Fd(_)) {
            libc::removexattr(p.as_ptr(), n.as_ptr())
        } else {
            libc::lremovexattr(p.as_ptr(), n.as_ptr())
        }
    })?;
    Ok(())
}
