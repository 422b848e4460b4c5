//! The FUSE adapter: decodes each request, calls the union core, encodes the reply (TTLs,
//! attributes, errnos). No union logic lives here.

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
use crate::union::files::SetAttr;
use crate::union::namespace::NewKind;
use crate::union::{Attr, Caller, KernelCache, Union};

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
    pub ids: IdMaps,
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

fn errno(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    let st = &a.st;
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: systime(st.st_atime, st.st_atime_nsec),
        mtime: systime(st.st_mtime, st.st_mtime_nsec),
        ctime: systime(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// Attributes that carry only an inode number and a file type (a negative entry, a name
/// listed without an entry).
fn blank_attr(ino: u64, mode: u32) -> FileAttr {
    let mut st = crate::sys::zero_stat();
    st.st_ino = ino;
    st.st_mode = mode;
    file_attr(&Attr { st, nodeid: 0 })
}

fn timespec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => None,
        Some(TimeOrNow::Now) => Some(None),
        Some(TimeOrNow::SpecificTime(s)) => Some(Some(match s.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = -(d.subsec_nanos() as i64);
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                (sec, nsec)
            }
        })),
    }
}

/// Replies with an xattr value or name list, honouring the size probe protocol.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(FErrno::from_i32(libc::ERANGE));
    } else {
        reply.data(data);
    }
}

impl StrataFs {
    /// The attributes the kernel gets: the merged view's, with the owner squashed or
    /// mapped and the inode number folded as the options ask.
    fn fattr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        f.uid = (self.cfg.squash_uid).unwrap_or_else(|| self.cfg.ids.uids.to_shown(f.uid));
        f.gid = (self.cfg.squash_gid).unwrap_or_else(|| self.cfg.ids.gids.to_shown(f.gid));
        f.ino = INodeNo(self.shown_ino(f.ino.0));
        f
    }

    /// An inode number as shown in st_ino and d_ino (`ino32_t`: its low 32 bits).
    fn shown_ino(&self, ino: u64) -> u64 {
        if self.cfg.ino32 {
            ino & 0xffff_ffff
        } else {
            ino
        }
    }

    /// Who asks, with the ids the layers store for them.
    fn caller(&self, req: &Request) -> Caller {
        Caller {
            uid: self.cfg.ids.uids.to_stored(req.uid()),
            gid: self.cfg.ids.gids.to_stored(req.gid()),
            pid: req.pid(),
        }
    }

    /// EOPNOTSUPP under `noxattrs=1`.
    fn xattrs_on(&self) -> Result<(), Errno> {
        if self.cfg.xattrs {
            Ok(())
        } else {
            Err(Errno::ENOTSUP)
        }
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Attr, Errno>) {
        match r {
            Ok(a) => reply.entry_for_node(
                INodeNo(a.nodeid),
                &self.cfg.ttl,
                &self.cfg.ttl,
                &self.fattr(&a),
                Generation(0),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Answers a create (or O_TMPFILE) with the new object and its open file, in
    /// passthrough where the kernel allows it.
    fn created(&self, reply: ReplyCreate, a: Attr, fd: std::os::fd::OwnedFd) {
        let fh = self.union.adopt_open(a.ino(), fd);
        let file = match self.union.files.get(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        let attr = self.fattr(&a);
        let backing = match self
            .io
            .open(a.nodeid, fh, true, true, file.fd().as_fd(), |fd| {
                reply.open_backing(fd)
            }) {
            OpenMode::Passthrough(b) => Some(b),
            OpenMode::Cached { .. } => None,
            OpenMode::Stale => {
                // A new object's kernel inode has no open files, so this cannot happen;
                // answered as a failed open all the same (and the entry's lookup is not
                // the kernel's then).
                self.union.release(fh);
                self.union.forget(a.nodeid, 1);
                return reply.error(FErrno::from_i32(libc::EIO));
            }
        };
        reply.created_for_node(
            INodeNo(a.nodeid),
            &self.cfg.ttl,
            &attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
            backing.as_deref(),
        );
    }

    /// The object number of the kernel's node id (see union::inodes).
    fn num(&self, id: INodeNo) -> u64 {
        self.union.number_of_node(id.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: NewKind<'_>,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .union
            .create(self.caller(req), self.num(parent), name, kind, mode, umask)
            .map(|(a, _)| a);
        self.entry(reply, r);
    }
}

fn cache_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
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
        match self.union.getattr(self.num(ino)) {
            Ok(a) => reply.attr(&self.cfg.ttl, &self.fattr(&a)),
            Err(e) => reply.error(errno(e)),
        }
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
        match self
            .union
            .setattr(self.caller(req), self.num(ino), fh.map(|f| f.0), ch)
        {
            Ok(a) => reply.attr(&self.cfg.ttl, &self.fattr(&a)),
            Err(e) => reply.error(errno(e)),
        }
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
        let _timing = self.stats.time(Op::Getattr);
        match self.union.statx(self.num(ino)) {
            Ok((a, extra)) => {
                let (btime, with_btime) = match extra.btime {
                    Some((s, ns)) => (systime(s, ns as i64), libc::STATX_BTIME),
                    None => (UNIX_EPOCH, 0),
                };
                let shown = self.fattr(&a);
                let dev_node = matches!(shown.kind, FileType::CharDevice | FileType::BlockDevice);
                let rdev = if dev_node {
                    (libc::major(a.st.st_rdev), libc::minor(a.st.st_rdev))
                } else {
                    (0, 0)
                };
                reply.statx(
                    &self.cfg.ttl,
                    &StatxAttr {
                        attr: shown,
                        mask: libc::STATX_BASIC_STATS | with_btime,
                        btime,
                        attributes: extra.attributes,
                        attributes_mask: extra.attributes_mask,
                        rdev,
                    },
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timing = self.stats.time(Op::Readlink);
        match self.union.readlink(self.num(ino)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
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
            NewKind::Node(mode, rdev as u64),
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
        empty(reply, self.union.remove(self.num(parent), name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timing = self.stats.time(Op::Rmdir);
        empty(reply, self.union.remove(self.num(parent), name, true));
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
        let _timing = self.stats.time(Op::Open);
        let number = self.num(ino);
        let (fh, mutable) = match self.union.open(self.caller(req), number, flags.0) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        let file = match self.union.files.get(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        let passthrough_ok = mutable || self.cfg.passthrough_lower;
        match self.io.open(
            ino.0,
            fh,
            passthrough_ok,
            mutable,
            file.fd().as_fd(),
            |fd| reply.open_backing(fd),
        ) {
            OpenMode::Passthrough(b) => {
                if !mutable {
                    self.union.files.keep_copy(fh);
                }
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b)
            }
            OpenMode::Cached { keep_cache } => {
                reply.opened(FileHandle(fh), cache_flags(keep_cache))
            }
            OpenMode::Stale => {
                // Copied up while open through its lower copy: the kernel inode keeps that
                // backing for the files already open; lookups answer with a new node id
                // from now on, and ESTALE makes the VFS look the path up again (with
                // LOOKUP_REVAL) and open the new inode.
                self.union.release(fh);
                self.union.supersede(number, ino.0);
                reply.error(FErrno::from_i32(libc::ESTALE))
            }
        }
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
        match self.union.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
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
        match self.union.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
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
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Release);
        self.io.release(fh.0);
        self.union.release(fh.0);
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
        match self.union.check_listable(self.num(ino)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _timing = self.stats.time(Op::Readdir);
        let r = self.union.readdir(self.num(ino), offset, |next, e| {
            reply.add(
                INodeNo(self.shown_ino(e.ino)),
                next,
                file_type(e.kind),
                &e.name,
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _timing = self.stats.time(Op::Readdirplus);
        let dir = self.num(ino);
        let r = self.union.readdir(dir, offset, |next, e| {
            if e.name == "." || e.name == ".." {
                // Not counted as lookups by the kernel: plain attributes only.
                let a = match self.union.getattr(e.ino) {
                    Ok(a) => a,
                    Err(_) => return false,
                };
                return reply.add(
                    INodeNo(e.ino),
                    next,
                    &e.name,
                    &Duration::ZERO,
                    &self.fattr(&a),
                    Generation(0),
                );
            }
            match self.union.lookup(dir, &e.name) {
                Ok(a) => {
                    let full = reply.add(
                        INodeNo(a.nodeid),
                        next,
                        &e.name,
                        &self.cfg.ttl,
                        &self.fattr(&a),
                        Generation(0),
                    );
                    if full {
                        self.union.forget(a.nodeid, 1);
                    }
                    full
                }
                // Listed but not found: the name alone, as READDIR gives it (node id 0:
                // no entry for the kernel to cache). A whiteout of the xattr form in a
                // directory not marked to hold them is listed so (S5), as on overlayfs; so
                // is a name removed since the listing was taken.
                Err(_) => reply.add(
                    INodeNo(0),
                    next,
                    &e.name,
                    &Duration::ZERO,
                    &blank_attr(self.shown_ino(e.ino), e.kind),
                    Generation(0),
                ),
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
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
        match self.union.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Setxattr);
        let stored = name
            .to_str()
            .and_then(|n| self.cfg.ids.stored_xattr(n, value));
        let value = stored.as_deref().unwrap_or(value);
        empty(
            reply,
            self.xattrs_on().and_then(|()| {
                self.union
                    .change_xattr(self.num(ino), name, Some((value, flags)))
            }),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _timing = self.stats.time(Op::Getxattr);
        if self.num(ino) == crate::union::ROOT_INO && name == Private::Stats.name() {
            // `stratafs stats`: a trusted.* name, which the kernel lets only
            // CAP_SYS_ADMIN read (user.* on a plain user's mount, which only that user
            // can reach). The size probe gets room for the report to grow.
            let report = self.stats.report(&self.union.report_lines());
            return if size == 0 {
                reply.size(report.len() as u32 + 4096)
            } else {
                reply_xattr(reply, size, report.as_bytes())
            };
        }
        match self
            .xattrs_on()
            .and_then(|()| self.union.getxattr(self.num(ino), name))
        {
            Ok(v) => {
                let shown = name.to_str().and_then(|n| self.cfg.ids.shown_xattr(n, &v));
                reply_xattr(reply, size, shown.as_deref().unwrap_or(&v))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timing = self.stats.time(Op::Listxattr);
        match self
            .xattrs_on()
            .and_then(|()| self.union.listxattr(self.caller(req), self.num(ino)))
        {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                reply_xattr(reply, size, &buf);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timing = self.stats.time(Op::Removexattr);
        empty(
            reply,
            self.xattrs_on()
                .and_then(|()| self.union.change_xattr(self.num(ino), name, None)),
        );
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
        let _timing = self.stats.time(Op::Create);
        let r = self.union.create(
            self.caller(req),
            self.num(parent),
            name,
            NewKind::File(flags),
            mode,
            umask,
        );
        match r {
            Ok((a, Some(fd))) => self.created(reply, a, fd),
            Ok((_, None)) => reply.error(FErrno::from_i32(libc::EIO)),
            Err(e) => reply.error(errno(e)),
        }
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
        let _timing = self.stats.time(Op::Create);
        match self
            .union
            .tmpfile(self.caller(req), self.num(parent), mode, umask, flags)
        {
            Ok((a, fd)) => self.created(reply, a, fd),
            Err(e) => reply.error(errno(e)),
        }
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
        let _timing = self.stats.time(Op::Fallocate);
        empty(
            reply,
            self.union
                .fallocate(self.caller(req), fh.0, mode, offset, length),
        );
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
        match self.union.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
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
        let _timing = self.stats.time(Op::Ioctl);
        // The inode flags of chattr/lsattr (the kernel's fileattr calls arrive as these);
        // any other ioctl is not one a union of directories answers.
        let r: Result<Vec<u8>, Errno> = match cmd {
            sys::FS_IOC_GETFLAGS => self
                .union
                .get_inode_flags(self.num(ino))
                .map(|f| f.to_ne_bytes().to_vec()),
            sys::FS_IOC_SETFLAGS => match in_data.get(..4) {
                Some(b) => self
                    .union
                    .set_inode_flags(self.num(ino), u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .map(|()| Vec::new()),
                None => Err(Errno::EINVAL),
            },
            sys::FS_IOC_FSGETXATTR => self
                .union
                .get_inode_xflags(self.num(ino))
                .map(|x| x.to_bytes().to_vec()),
            sys::FS_IOC_FSSETXATTR => sys::FsXattr::from_bytes(in_data)
                .and_then(|x| self.union.set_inode_xflags(self.num(ino), x))
                .map(|()| Vec::new()),
            _ => Err(Errno(libc::ENOTTY)),
        };
        match r {
            Ok(data) => reply.ioctl(0, &data),
            Err(e) => reply.error(errno(e)),
        }
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
        let _timing = self.stats.time(Op::CopyFileRange);
        match self
            .union
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }
}
