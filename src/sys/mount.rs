//! Mounting: mount(2) of a FUSE filesystem on a /dev/fuse descriptor, remount,
//! unmount, and the lock that keeps a dir to one mount.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{check, check_isize, cstr, Errno, SysResult};

/// Mounts a FUSE filesystem: opens /dev/fuse and calls mount(2) with `data(fd)` as the
/// option string. Returns the /dev/fuse descriptor the session serves.
pub fn fuse_mount(
    source: &str,
    target: &std::path::Path,
    fstype: &str,
    flags: u64,
    data: impl FnOnce(RawFd) -> String,
) -> SysResult<OwnedFd> {
    let dev = CString::new("/dev/fuse").expect("static");
    // SAFETY: valid C string.
    let fd = check(unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let src = CString::new(source).map_err(|_| Errno::EINVAL)?;
    let tgt = cstr(target.as_os_str())?;
    let ty = CString::new(fstype).map_err(|_| Errno::EINVAL)?;
    let opts = CString::new(data(fd.as_raw_fd())).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid C strings for the duration of the call.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags as libc::c_ulong,
            opts.as_ptr() as *const libc::c_void,
        )
    })?;
    Ok(fd)
}

/// Whether the caller may write into the directory at `path` (access(2) with W_OK).
pub fn check_writable(path: &std::path::Path) -> SysResult<()> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string.
    check(unsafe { libc::access(c.as_ptr(), libc::W_OK) })?;
    Ok(())
}

/// Whether `path` can be opened read-write (e.g. /dev/fuse), without keeping it open.
pub fn check_rw(path: &str) -> SysResult<()> {
    let c = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid C string; the descriptor is closed at once.
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Unmounts: a plain unmount, or a lazy detach when the mount is busy.
pub fn umount(path: &std::path::Path) -> SysResult<()> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string.
    match check(unsafe { libc::umount2(c.as_ptr(), 0) }) {
        Ok(_) => Ok(()),
        Err(Errno(libc::EBUSY)) => umount_detach(path),
        Err(e) => Err(e),
    }
}

/// Lazy-detaches a mount (fallback when the session's own unmount fails).
pub fn umount_detach(path: &std::path::Path) -> SysResult<()> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

/// flock(LOCK_EX | LOCK_NB): EWOULDBLOCK when another open description holds it.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on a valid descriptor.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
    Ok(())
}

/// mount(2) with MS_REMOUNT: changes the flags (ro/rw, nosuid, nodev, noexec, atime) of
/// the mount at `target`; FUSE ignores the data of a remount.
pub fn remount(target: &std::path::Path, flags: u64) -> SysResult<()> {
    let tgt = cstr(target.as_os_str())?;
    let empty = CString::default();
    // SAFETY: valid C strings; a null source and type are allowed with MS_REMOUNT.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            tgt.as_ptr(),
            std::ptr::null(),
            (libc::MS_REMOUNT | flags) as libc::c_ulong,
            empty.as_ptr() as *const libc::c_void,
        )
    })?;
    Ok(())
}

/// A connected pair of Unix stream sockets for handing a descriptor to a helper program:
/// the first end stays ours (close-on-exec), the second is inherited by a child.
pub fn socketpair_for_child() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid out-array of two descriptors.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: fresh descriptors we own.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fcntl on a valid descriptor: clear FD_CLOEXEC so an exec'd child keeps it.
    check(unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) })?;
    Ok((ours, theirs))
}

/// Receives one descriptor sent with SCM_RIGHTS (as fusermount3 sends /dev/fuse). None
/// when the peer closed the socket without sending one.
pub fn recv_fd(sock: BorrowedFd<'_>) -> SysResult<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // Room for one control message carrying one int, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    let n = super::retry(|| {
        // SAFETY: msg points at valid buffers.
        super::check_isize(unsafe {
            libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC)
        })
    })?;
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR/CMSG_DATA walk inside `control`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Access-time modes of mount_setattr(2) (MOUNT_ATTR_*).
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const OPEN_TREE_CLONE: u32 = 1;

/// A private, detached copy of the mount tree at `path` (its submounts included) with the
/// access-time mode `attr`: descriptors opened beneath it update access times as `attr`
/// says, whatever the original mount says (open_tree + mount_setattr, as overlayfs keeps
/// private clones of its layers). Needs CAP_SYS_ADMIN over the mount.
pub fn clone_tree_with_atime(path: &std::path::Path, attr: u64) -> SysResult<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: valid C string; open_tree returns a new descriptor or -1.
    let fd = check_isize(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_RECURSIVE as u32,
        )
    } as isize)?;
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let ma = MountAttr {
        attr_set: attr,
        attr_clr: MOUNT_ATTR_ATIME_MASK,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = CString::default();
    // SAFETY: valid descriptor, empty path with AT_EMPTY_PATH, and a mount_attr of the size
    // passed.
    check_isize(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &ma as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    } as isize)?;
    Ok(fd)
}
