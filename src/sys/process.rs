//! The daemon's own process: ids, umask, file limit, fork into the background, the
//! readiness pipe, termination signals and capability checks of callers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{check, SysResult};

pub fn getuid() -> u32 {
    // SAFETY: plain syscall.
    unsafe { libc::getuid() }
}

pub fn getgid() -> u32 {
    // SAFETY: plain syscall.
    unsafe { libc::getgid() }
}

pub fn umask(mask: u32) -> u32 {
    // SAFETY: plain syscall.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Raises RLIMIT_NOFILE to its hard limit.
pub fn raise_nofile() {
    // SAFETY: zeroed rlimit is a valid out-parameter.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur = r.rlim_max;
        // SAFETY: valid pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
}

/// Result of fork(): in the parent, the child's pid.
pub enum Fork {
    Parent,
    Child,
}

pub fn fork() -> SysResult<Fork> {
    // SAFETY: called before any thread is spawned.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 { Fork::Child } else { Fork::Parent })
}

pub fn setsid() {
    // SAFETY: plain syscall.
    unsafe { libc::setsid() };
}

pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Points stdin/stdout/stderr at /dev/null (detached daemon).
pub fn redirect_stdio_to_null() {
    let p = CString::new("/dev/null").expect("static");
    // SAFETY: plain syscalls on fds 0..2.
    unsafe {
        let fd = libc::open(p.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// Blocks the termination signals in this thread (and threads spawned after) and returns
/// a waiter that sleeps until one of them arrives.
pub struct SignalWaiter(libc::sigset_t);

impl SignalWaiter {
    pub fn block_termination() -> SignalWaiter {
        // SAFETY: sigset manipulation on a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            SignalWaiter(set)
        }
    }

    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: valid set and out pointer.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

// SAFETY: sigset_t is plain data.
unsafe impl Send for SignalWaiter {}

pub fn write_all(fd: BorrowedFd<'_>, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: buffer valid for the remaining length.
        let r = unsafe {
            libc::write(
                fd.as_raw_fd(),
                data[off..].as_ptr() as *const libc::c_void,
                data.len() - off,
            )
        };
        if r <= 0 {
            return;
        }
        off += r as usize;
    }
}

pub fn read_to_end(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buffer valid for its length.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if r <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..r as usize]);
    }
}

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_FSETID: u32 = 4;

/// The supplementary groups of process `pid` (none when its /proc entry is gone).
pub fn process_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Whether process `pid` holds capability `cap` in the daemon's user namespace (what
/// `capable()` checks on a filesystem of that namespace). A process that is gone, or
/// whose /proc entry cannot be read, holds nothing.
pub fn process_has_capability(pid: u32, cap: u32) -> bool {
    let ns = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    match (
        ns(&format!("/proc/{pid}/ns/user")),
        ns("/proc/self/ns/user"),
    ) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => return false,
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|caps| caps & (1u64 << cap) != 0)
}

/// Whether this process may write `trusted.*` xattrs: CAP_SYS_ADMIN in the initial user
/// namespace (root of a user namespace has it only in its own, which the kernel's check
/// of trusted.* does not count).
pub fn may_write_trusted_xattrs() -> bool {
    let identity = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
    identity && process_has_capability(std::process::id(), CAP_SYS_ADMIN)
}

/// Gives the heap memory the allocator holds free back to the system (glibc malloc_trim).
pub fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
