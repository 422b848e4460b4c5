//! The kernel I/O mode of each open kernel inode (FUSE passthrough), keyed by node id. The
//! kernel demands that all concurrent opens of one FUSE inode share one backing file, and
//! that passthrough and cached (daemon-served) opens of an inode never mix. The rule kept
//! here:
//!
//! - a file is opened in passthrough on the copy the union opened (the upper copy, or with
//!   `passthrough=all` a lower one too, so that every mount of an image shares the lower's
//!   page cache), sharing one `BackingId` per kernel inode (held by every handle, dropped
//!   with the last one), unless cached opens of that inode are live;
//! - an open whose copy is not the live backing's file (the object was copied up while
//!   opens through its lower copy live) is answered `Stale`: the adapter gives the object
//!   a new node id and answers ESTALE, the kernel looks the name up again and opens the new
//!   inode. No open can share a lower backing once the object has an upper copy, so no
//!   write reaches a lower (S2); the files already open keep reading the lower copy.
//! - otherwise the open is cached (served by the daemon; a lower copy never changes, so its
//!   page cache is kept across opens).

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
    /// (st_dev, st_ino) of the file the live backing id was registered from.
    backing_file: (u64, u64),
}

/// How one open was answered.
pub enum OpenMode {
    Passthrough(Arc<BackingId>),
    Cached {
        keep_cache: bool,
    },
    /// The kernel inode's backing is another copy of the object: open it under a new node.
    Stale,
}

fn file_id(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    crate::sys::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
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

    /// Decides the mode of a new open of kernel inode `nodeid` (handle `fh`, fd `fd`);
    /// `register` turns an fd into a backing id (the kernel ioctl). Falls back to cached on
    /// any failure, and turns passthrough off for good when the kernel refuses it (EPERM:
    /// no CAP_SYS_ADMIN).
    pub fn open(
        &self,
        nodeid: u64,
        fh: u64,
        passthrough_ok: bool,
        mutable: bool,
        fd: BorrowedFd<'_>,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> OpenMode {
        let io = self.inode(nodeid);
        let mut io = io.lock();
        if let Some(b) = io.backing.upgrade() {
            // Live passthrough opens: this one must share their backing file, if it is the
            // copy this open is of.
            if file_id(fd) != Some(io.backing_file) {
                return OpenMode::Stale;
            }
            self.fhs.insert(fh, (nodeid, Some(b.clone())));
            return OpenMode::Passthrough(b);
        }
        if self.enabled() && passthrough_ok && io.cached_opens == 0 {
            let backing = match file_id(fd).map(|id| (id, register(fd))) {
                None => None,
                Some((id, registered)) => match registered {
                    Ok(b) => {
                        let b = Arc::new(b);
                        io.backing = Arc::downgrade(&b);
                        io.backing_file = id;
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
                self.fhs.insert(fh, (nodeid, Some(b.clone())));
                return OpenMode::Passthrough(b);
            }
        }
        io.cached_opens += 1;
        self.fhs.insert(fh, (nodeid, None));
        OpenMode::Cached {
            keep_cache: !mutable,
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
