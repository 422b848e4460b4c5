//! Reading a directory of a layer (getdents64).

use std::ffi::{CStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;

use super::*;

/// One entry of a directory listing of a layer.
pub struct RawDirEntry {
    pub name: OsString,
    pub ino: u64,
    pub dtype: u8,
}

/// Lists a directory (without "." and "..") from an open descriptor of it.
pub fn read_dir(dir: BorrowedFd<'_>) -> SysResult<Vec<RawDirEntry>> {
    // "." of the directory opens it for reading without walking its /proc link; that
    // needs search permission on it, which the /proc link does not (a plain user's
    // daemon listing a directory it may read but not search).
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let fd = match openat(dir, OsStr::new("."), flags, 0) {
        Err(Errno::EACCES) => reopen(dir, flags)?,
        r => r?,
    };
    let raw = fd.as_raw_fd();
    // SAFETY: fdopendir takes ownership of the descriptor on success.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        return Err(Errno::last());
    }
    std::mem::forget(fd);
    let mut out = Vec::new();
    loop {
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dirp is a valid DIR*.
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let e = Errno::last();
            // SAFETY: dirp valid; closes the descriptor too.
            unsafe { libc::closedir(dirp) };
            if e.0 != 0 {
                return Err(e);
            }
            return Ok(out);
        }
        // SAFETY: ent points at a valid dirent64 until the next readdir call.
        let (name, ino, dtype) = unsafe {
            let e = &*ent;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_ino,
                e.d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push(RawDirEntry {
            name: OsString::from_vec(name),
            ino,
            dtype,
        });
    }
}
