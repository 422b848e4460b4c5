//! What copy-up copies, apart from where it puts it: the copy modes, the data (reflink,
//! else copy_file_range over data extents so that holes stay holes) and the user-visible
//! xattrs. Used by copy-up (copyup.rs) and by the completion of metadata-only copies
//! (metacopy.rs).

use std::os::fd::BorrowedFd;

use crate::sys::{self, Errno, SysResult, XTarget};

/// What a copy-up must carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CopyMode {
    /// Data and metadata.
    Data,
    /// Metadata only, the data to be truncated away anyway (O_TRUNC, truncate to 0).
    NoData,
    /// Metadata only, the data still read from the lower (-o metacopy=on): chmod, chown,
    /// utimes and xattr changes of a big lower file cost no data copy.
    Meta,
}

/// Copies the data of `src` into `dst`: reflink, else copy_file_range over data extents.
pub(super) fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    if size == 0 || sys::ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut off: u64 = 0;
    while off < size {
        let data = match sys::lseek(src, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(Errno(libc::ENXIO)) => break,
            Err(_) => off,
        };
        let hole = match sys::lseek(src, data as i64, libc::SEEK_HOLE) {
            Ok(h) => h as u64,
            Err(_) => size,
        }
        .min(size);
        let mut pos = data;
        while pos < hole {
            let want = (hole - pos).min(1 << 30) as usize;
            let n = match sys::copy_file_range(src, pos, dst, pos, want) {
                Ok(0) => break,
                Ok(n) => n,
                Err(Errno(libc::EXDEV)) | Err(Errno(libc::EINVAL)) | Err(Errno(libc::ENOSYS)) => {
                    copy_by_read(src, dst, pos, hole)?;
                    hole as usize - pos as usize
                }
                Err(e) => return Err(e),
            };
            pos += n as u64;
        }
        off = hole.max(data + 1);
    }
    sys::ftruncate(dst, size)
}

fn copy_by_read(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, from: u64, to: u64) -> SysResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < to {
        let want = ((to - pos) as usize).min(buf.len());
        let n = sys::pread(src, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            w += sys::pwrite(dst, &buf[w..n], pos + w as u64)?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// Copies the user-visible xattrs (not the union's private ones) from one object to another.
pub(super) fn copy_xattrs(src: XTarget<'_>, dst: XTarget<'_>) -> SysResult<()> {
    for (n, v) in crate::private_xattrs::public_xattrs(src)? {
        match sys::setxattr(dst, &n, &v, 0) {
            // Symlinks take no user.* xattrs; some filesystems refuse security.* names.
            Ok(()) | Err(Errno::EPERM) | Err(Errno::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
