//! Inode flags (chattr/lsattr): FS_IOC_GETFLAGS/SETFLAGS, FS_IOC_FSGETXATTR/FSSETXATTR
//! and the statx attributes of an entry.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{check, cstr, Errno, SysResult};

// ---- inode flags (chattr/lsattr) and capabilities ----

/// FS_IOC_GETFLAGS bits the union cares about.
pub const FS_SYNC_FL: u32 = 0x0000_0008;
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
pub const FS_APPEND_FL: u32 = 0x0000_0020;
pub const FS_NOATIME_FL: u32 = 0x0000_0080;
/// fsxattr.fsx_xflags bits of the same two protections.
pub const FS_XFLAG_IMMUTABLE: u32 = 0x0000_0008;
pub const FS_XFLAG_APPEND: u32 = 0x0000_0010;

/// The ioctl numbers as the kernel sends them in FUSE_IOCTL (64-bit encodings).
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// `struct fsxattr` of FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

impl FsXattr {
    pub const SIZE: usize = 28;

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        for (i, v) in [
            self.xflags,
            self.extsize,
            self.nextents,
            self.projid,
            self.cowextsize,
        ]
        .iter()
        .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b[20..].copy_from_slice(&self.pad);
        b
    }

    pub fn from_bytes(b: &[u8]) -> SysResult<FsXattr> {
        if b.len() < Self::SIZE {
            return Err(Errno::EINVAL);
        }
        let w = |i: usize| u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let mut pad = [0u8; 8];
        pad.copy_from_slice(&b[20..28]);
        Ok(FsXattr {
            xflags: w(0),
            extsize: w(1),
            nextents: w(2),
            projid: w(3),
            cowextsize: w(4),
            pad,
        })
    }
}

/// What statx(2) tells beyond stat: birth time and the STATX_ATTR_* flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatxExtra {
    /// (seconds, nanoseconds), where the filesystem keeps it.
    pub btime: Option<(i64, u32)>,
    /// The attributes set, limited to those the filesystem reports.
    pub attributes: u64,
    /// The attributes the filesystem reports.
    pub attributes_mask: u64,
}

/// The statx attributes (STATX_ATTR_IMMUTABLE, STATX_ATTR_APPEND, ...) of an entry of
/// `dir` ("" for `dir` itself), limited to those its filesystem reports. Never follows a
/// final symlink and needs no open descriptor of the object.
pub fn attributes_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<u64> {
    statx_at(dir, name, 0).map(|x| x.attributes)
}

/// Birth time (asked for when `btime`) and attributes of an entry of `dir` ("" for `dir`
/// itself), without following a final symlink.
pub fn statx_extra_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<StatxExtra> {
    statx_at(dir, name, libc::STATX_BTIME)
}

fn statx_at(dir: BorrowedFd<'_>, name: &OsStr, mask: u32) -> SysResult<StatxExtra> {
    let (c, flags) = if name.is_empty() {
        (
            CString::default(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    } else {
        (cstr(name)?, libc::AT_SYMLINK_NOFOLLOW)
    };
    // SAFETY: an all-zero statx is a valid out-parameter.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::AT_STATX_DONT_SYNC,
            mask,
            &mut stx,
        )
    })?;
    let btime = (stx.stx_mask & libc::STATX_BTIME != 0)
        .then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec));
    Ok(StatxExtra {
        btime,
        attributes: stx.stx_attributes & stx.stx_attributes_mask,
        attributes_mask: stx.stx_attributes_mask,
    })
}

/// FS_IOC_GETFLAGS on an open (not O_PATH) descriptor.
pub fn get_flags(fd: BorrowedFd<'_>) -> SysResult<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the kernel writes one int.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) })?;
    Ok(v as u32)
}

/// FS_IOC_SETFLAGS on an open (not O_PATH) descriptor.
pub fn set_flags(fd: BorrowedFd<'_>, flags: u32) -> SysResult<()> {
    let v = flags as libc::c_int;
    // SAFETY: the kernel reads one int.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &v) })?;
    Ok(())
}

/// FS_IOC_FSGETXATTR on an open descriptor.
pub fn fs_get_xattr(fd: BorrowedFd<'_>) -> SysResult<FsXattr> {
    let mut v = FsXattr::default();
    // SAFETY: FsXattr has the layout of struct fsxattr; the kernel writes it.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_FSGETXATTR as libc::Ioctl,
            &mut v as *mut FsXattr,
        )
    })?;
    Ok(v)
}

/// FS_IOC_FSSETXATTR on an open descriptor.
pub fn fs_set_xattr(fd: BorrowedFd<'_>, v: &FsXattr) -> SysResult<()> {
    // SAFETY: FsXattr has the layout of struct fsxattr; the kernel reads it.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_FSSETXATTR as libc::Ioctl,
            v as *const FsXattr,
        )
    })?;
    Ok(())
}
