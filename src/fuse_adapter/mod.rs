//! The FUSE adapter: decodes each request, calls the union core, encodes the reply (TTLs,
//! attributes, errnos). No union logic lives here. This file holds the adapter's state and
//! the `Filesystem` handlers; the longer ones delegate to `do_*` methods by concern:
//! convert.rs (attributes, times, errnos, shared replies), files.rs (open, create, data
//! operations), dir.rs (listings), xattr.rs, control.rs (statx, inode-flag ioctls).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyStatx, ReplyWrite, ReplyXattr, Request,
    StatxAttr, TimeOrNow, WriteFlags,
};

use crate::idmap::IdMaps;
use crate::iomode::{IoModes, OpenMode};
use crate::private_xattrs::Private;
use crate::stats::{Op, Stats};
use crate::sys::{self, Errno, TimeSpec};
use crate::union::{Attr, Caller, KernelCache, NewKind, SetAttr, Union};

mod control;
mod convert;
mod dir;
mod files;
mod xattr;

use convert::*;

/// What the mount options ask of the FUSE side.
pub struct AdapterConfig {
    /// How long the kernel keeps names, misses and attributes: every change goes through
    /// this mount or is pushed to the kernel, so this can be long.
    pub ttl: Duration,
    pub passthrough: bool,
    /// Open lower copies in passthrough too (`passthrough=all`).
    pub passthrough_lower: bool,
    /// Ask the kernel to enforce POSIX ACLs (and to leave umask and inheritance to us).
    pub acls: bool,
    /// fuse-overlayfs' squash_to_uid / squash_to_gid / squash_to_root: the owner every
    /// object is shown with (what is stored is unchanged).
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// fuse-overlayfs' uidmapping=/gidmapping=: owners stored in the layers and shown.
    pub ids: &'static IdMaps,
    /// fuse-overlayfs' `ino32_t`: inode numbers shown with their low 32 bits only.
    pub ino32: bool,
    /// fuse-overlayfs' `noxattrs=1` turns this off: every xattr call is EOPNOTSUPP.
    pub xattrs: bool,
}

pub struct StrataFs {
    union: Arc<Union>,
    cfg: AdapterConfig,
    io: IoModes,
    /// Requests served, for `stratafs stats`.
    stats: Stats,
    /// Let the kernel keep directory listings across opens: with the default cache time.
    /// A shorter `timeout=` asks for layers changed beneath the mount to show, and a
    /// cached listing would not expire: every opendir then comes to the daemon.
    cache_listings: bool,
}

/// The cache time from which directory listings are kept by the kernel.
const LISTING_CACHE_FROM: Duration = Duration::from_secs(3600);

impl StrataFs {
    pub fn new(union: Arc<Union>, cfg: AdapterConfig) -> StrataFs {
        StrataFs {
            union,
            io: IoModes::new(cfg.passthrough),
            cache_listings: cfg.ttl >= LISTING_CACHE_FROM,
            stats: Stats::default(),
            cfg,
        }
    }
}

/// The kernel's caches reached through FUSE notifications.
pub struct NotifyCache(fuser::Notifier);

impl NotifyCache {
    pub fn new(n: fuser::Notifier) -> NotifyCache {
        NotifyCache(n)
    }
}

impl KernelCache for NotifyCache {
    fn attributes_changed(&self, ino: u64) {
        // Attributes only (negative offset: no page-cache range), so it cannot wait on a
        // page lock held by the request being served. ENOENT: the kernel forgot it.
        let _ = self.0.inval_inode(INodeNo(ino), -1, 0);
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_BIG_WRITES,
            // The daemon drops setuid/setgid itself (at an unprivileged write-open, truncate
            // and fallocate; the backing fs drops file capabilities on every write), so the
            // kernel stops asking for security.capability before every write (SB_NOSEC).
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            // Node ids live only as long as the kernel remembers them, so a file handle
            // could not be opened once the inode is forgotten or after a remount: answer
            // name_to_handle_at with EOPNOTSUPP, as overlayfs does without nfs_export
            // (fanotify's FID handles still work).
            InitFlags::FUSE_NO_EXPORT_SUPPORT,
        ] {
            let _ = config.add_capabilities(cap);
        }
        if self.cache_listings {
            let _ = config.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        }
        if self.cfg.acls
            && config
                .add_capabilities(InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK)
                .is_err()
        {
            tracing::warn!("the kernel offers no FUSE_POSIX_ACL: ACLs are not enforced");
        }
        if self.io.enabled()
            && (config
                .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
                .is_err()
                || config.set_max_stack_depth(1).is_err())
        {
            tracing::warn!("the kernel offers no FUSE passthrough: serving I/O ourselves");
            self.io.disable();
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _timing = self.stats.time(Op::Lookup);
        match self.union.lookup(self.num(parent), name) {
            Ok(a) => self.entry(reply, Ok(a)),
            Err(Errno::ENOENT) if !self.cfg.ttl.is_zero() => {
                // A negative entry: names only appear through this mount, which the
                // kernel sees, so the miss can be cached.
                let a = blank_attr(0, 0);
                reply.entry_with_ttls(&self.cfg.ttl, &self.cfg.ttl, &a, Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _timing = self.stats.time(Op::Forget);
        self.union.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _timing = self.stats.time(Op::Getattr);
        answer(reply, self.union.getattr(self.num(ino)), |reply, a| {
            reply.attr(&self.cfg.ttl, &self.fattr(&a))
        })
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _timing = self.stats.time(Op::Setattr);
        let ch = SetAttr {
            mode,
            uid: uid.map(|u| self.cfg.ids.uids.to_stored(u)),
            gid: gid.map(|g| self.cfg.ids.gids.to_stored(g)),
            size,
            atime: timespec(atime),
            mtime: timespec(mtime),
        };
        answer(
            reply,
            self.union
                .setattr(self.caller(req), self.num(ino), fh.map(|f| f.0), ch),
            |reply, a| reply.attr(&self.cfg.ttl, &self.fattr(&a)),
        )
    }

    fn statx(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        _flags: u32,
        _mask: u32,
        reply: ReplyStatx,
    ) {
        self.do_statx(ino, reply)
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timing = self.stats.time(Op::Readlink);
        answer(reply, self.union.readlink(self.num(ino)), |reply, t| {
            reply.data(t.as_bytes())
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _timing = self.stats.time(Op::Mknod);
        self.make(
            req,
            parent,
            name,
            NewKind::Node {
                file_type: mode & libc::S_IFMT,
                rdev: rdev as u64,
            },
            mode,
            umask,
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _timing = self.stats.time(Op::Mkdir);
        self.make(req, parent, name, NewKind::Dir, mode, umask, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timing = self.stats.time(Op::Unlink);
        empty(reply, self.union.unlink(self.num(parent), name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timing = self.stats.time(Op::Rmdir);
        empty(reply, self.union.rmdir(self.num(parent), name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _timing = self.stats.time(Op::Symlink);
        self.make(
            req,
            parent,
            link_name,
            NewKind::Symlink(target.as_os_str()),
            0o777,
            0,
            reply,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Rename);
        empty(
            reply,
            self.union.rename(
                self.num(parent),
                name,
                self.num(newparent),
                newname,
                flags.bits(),
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _timing = self.stats.time(Op::Link);
        self.entry(
            reply,
            self.union.link(self.num(ino), self.num(newparent), newname),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.do_open(req, ino, flags, reply)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _timing = self.stats.time(Op::Read);
        answer(reply, self.union.read(fh.0, offset, size), |reply, d| {
            reply.data(&d)
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _timing = self.stats.time(Op::Write);
        answer(reply, self.union.write(fh.0, offset, data), |reply, n| {
            reply.written(n)
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Flush);
        // Nothing is buffered in the daemon and locks are the kernel's own: ENOSYS tells
        // the kernel (as the FUSE protocol provides) to send no FLUSH on any later close.
        reply.error(FErrno::from_i32(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Release);
        self.io.release(fh.0);
        let writable = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        self.union.release(fh.0, writable);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Fsync);
        empty(reply, self.union.fsync(fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timing = self.stats.time(Op::Opendir);
        // Directory handles are not needed (see Union::readdir). With listings cached,
        // ENOSYS to the first opendir makes the kernel open directories itself from then
        // on, with no request for opendir and releasedir, and keep their listings across
        // opens (FUSE_NO_OPENDIR_SUPPORT: it defaults to FOPEN_CACHE_DIR|KEEP_CACHE).
        if self.cache_listings {
            return reply.error(FErrno::from_i32(libc::ENOSYS));
        }
        answer(
            reply,
            self.union.check_listable(self.num(ino)),
            |reply, ()| reply.opened(FileHandle(0), FopenFlags::empty()),
        )
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.do_readdir(ino, offset, reply)
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.do_readdirplus(ino, offset, reply)
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Fsyncdir);
        empty(reply, self.union.fsyncdir(self.num(ino)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _timing = self.stats.time(Op::Statfs);
        answer(reply, self.union.statfs(), |reply, s| {
            reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            )
        })
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.do_setxattr(req, ino, name, value, flags, reply)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.do_getxattr(ino, name, size, reply)
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.do_listxattr(req, ino, size, reply)
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_removexattr(req, ino, name, reply)
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _timing = self.stats.time(Op::Access);
        empty(
            reply,
            self.union
                .access(self.caller(req), self.num(ino), mask.bits()),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.do_create(req, parent, name, mode, umask, flags, reply)
    }

    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.do_tmpfile(req, parent, mode, umask, flags, reply)
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.do_fallocate(req, fh, offset, length, mode, reply)
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _timing = self.stats.time(Op::Lseek);
        answer(reply, self.union.lseek(fh.0, offset, whence), |reply, o| {
            reply.offset(o)
        })
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.do_ioctl(ino, cmd, in_data, reply)
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.do_copy_file_range(fh_in, offset_in, fh_out, offset_out, len, reply)
    }
}
