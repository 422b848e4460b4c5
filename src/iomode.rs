//! The kernel I/O mode of each open inode (FUSE passthrough). The kernel demands that all
//! concurrent opens of one FUSE inode share one backing file, and that passthrough and
//! cached (daemon-served) opens of an inode never mix. The rule kept here:
//!
//! - a file whose copy is in the upper is opened in passthrough, sharing one `BackingId`
//!   per inode (held by every handle, dropped with the last one), unless cached opens of
//!   that inode are live, or a non-root caller writes a setuid/setgid file (its writes
//!   must pass the kernel's privilege dropping);
//! - a file still in a lower is opened cached (served by the daemon, with the page cache
//!   kept across opens since a lower copy never changes). So a later write-open copies up
//!   and, while those read-only opens live, is served cached too: no write can reach the
//!   lower through an old backing file (S2).

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use fuser::BackingId;
use parking_lot::Mutex;

#[derive(Default)]
struct InodeIo {
    cached_opens: u32,
    backing: Weak<BackingId>,
}

/// How one open was answered.
pub enum OpenMode {
    Passthrough(Arc<BackingId>),
    Cached { keep_cache: bool },
}

pub struct IoModes {
    enabled: AtomicBool,
    inodes: DashMap<u64, Arc<Mutex<InodeIo>>>,
    /// Open handle -> (inode, its backing id when in passthrough).
    fhs: DashMap<u64, (u64, Option<Arc<BackingId>>)>,
}

impl IoModes {
    pub fn new(enabled: bool) -> IoModes {
        IoModes {
            enabled: AtomicBool::new(enabled),
            inodes: DashMap::new(),
            fhs: DashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    fn inode(&self, ino: u64) -> Arc<Mutex<InodeIo>> {
        self.inodes.entry(ino).or_default().clone()
    }

    /// Decides the mode of a new open of `ino` (handle `fh`, fd `fd`); `register` turns an
    /// fd into a backing id (the kernel ioctl). Falls back to cached on any failure, and
    /// turns passthrough off for good when the kernel refuses it (EPERM: no CAP_SYS_ADMIN).
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        passthrough_ok: bool,
        in_upper: bool,
        fd: BorrowedFd<'_>,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> OpenMode {
        let io = self.inode(ino);
        let mut io = io.lock();
        if self.enabled() && passthrough_ok && io.cached_opens == 0 {
            let backing = match io.backing.upgrade() {
                Some(b) => Some(b),
                None => match register(fd) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        io.backing = Arc::downgrade(&b);
                        Some(b)
                    }
                    Err(e) => {
                        if e.raw_os_error() == Some(libc::EPERM) {
                            tracing::warn!(
                                "passthrough refused by the kernel: serving I/O ourselves"
                            );
                            self.disable();
                        }
                        None
                    }
                },
            };
            if let Some(b) = backing {
                self.fhs.insert(fh, (ino, Some(b.clone())));
                return OpenMode::Passthrough(b);
            }
        }
        if let Some(b) = io.backing.upgrade() {
            // Live passthrough opens: this one must share their backing file, which is the
            // upper copy (passthrough is never set up on a lower copy).
            self.fhs.insert(fh, (ino, Some(b.clone())));
            return OpenMode::Passthrough(b);
        }
        io.cached_opens += 1;
        self.fhs.insert(fh, (ino, None));
        OpenMode::Cached {
            keep_cache: !in_upper,
        }
    }

    /// The handle `fh` is closed; an inode with no opens left is forgotten.
    pub fn release(&self, fh: u64) {
        let Some((_, (ino, backing))) = self.fhs.remove(&fh) else {
            return;
        };
        let io = self.inode(ino);
        let mut g = io.lock();
        if backing.is_none() {
            g.cached_opens = g.cached_opens.saturating_sub(1);
        }
        drop(backing);
        let idle = g.cached_opens == 0 && g.backing.upgrade().is_none();
        drop(g);
        if idle {
            self.inodes
                .remove_if(&ino, |_, v| Arc::strong_count(v) == 2);
        }
    }
}
