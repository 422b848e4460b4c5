//! File data and sync: truncate, fsync, syncfs, pread/pwrite, fallocate, lseek,
//! copy_file_range, FICLONE, statvfs.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::*;

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    retry(|| {
        // SAFETY: plain syscall.
        check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })
    })?;
    Ok(())
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: plain syscalls.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })?;
    Ok(())
}

pub fn syncfs(fd: BorrowedFd<'_>) -> SysResult<()> {
    let f = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::syncfs(f.as_raw_fd()) })?;
    Ok(())
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: buffer valid for its length.
        check_isize(unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                off as libc::off_t,
            )
        })
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> SysResult<usize> {
    retry(|| {
        // SAFETY: buffer valid for its length.
        check_isize(unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                off as libc::off_t,
            )
        })
    })
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> SysResult<()> {
    retry(|| {
        // SAFETY: plain syscall.
        check(unsafe {
            libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t)
        })
    })?;
    Ok(())
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as i64)
    }
}

pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> SysResult<usize> {
    let mut so = src_off as libc::loff_t;
    let mut d = dst_off as libc::loff_t;
    retry(|| {
        // SAFETY: offsets are valid pointers to loff_t.
        check_isize(unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0)
        } as isize)
    })
}

/// FICLONE: share all extents of `src` with `dst` (reflink), where the filesystem can.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> SysResult<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its argument.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) })?;
    Ok(())
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs> {
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut s) })?;
    Ok(s)
}
