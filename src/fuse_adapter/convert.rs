//! Conversions between the union's types and FUSE's (attributes as the kernel sees them,
//! with owners mapped or squashed and inode numbers folded as the options ask; times;
//! errnos), and the reply helpers every handler shares.

use super::*;

pub(super) fn errno(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

pub(super) fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

pub(super) fn file_type(mode: u32) -> FileType {
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

pub(super) fn file_attr(a: &Attr) -> FileAttr {
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
pub(super) fn blank_attr(ino: u64, mode: u32) -> FileAttr {
    let mut st = crate::sys::zero_stat();
    st.st_ino = ino;
    st.st_mode = mode;
    file_attr(&Attr { st, nodeid: 0 })
}

pub(super) fn timespec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::Keep,
        Some(TimeOrNow::Now) => TimeSpec::Now,
        Some(TimeOrNow::SpecificTime(s)) => {
            let (sec, nsec) = match s.duration_since(UNIX_EPOCH) {
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
            };
            TimeSpec::At(sec, nsec)
        }
    }
}

/// Replies with an xattr value or name list, honouring the size probe protocol.
pub(super) fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
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
    pub(super) fn fattr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        f.uid = (self.cfg.squash_uid).unwrap_or_else(|| self.cfg.ids.uids.to_shown(f.uid));
        f.gid = (self.cfg.squash_gid).unwrap_or_else(|| self.cfg.ids.gids.to_shown(f.gid));
        f.ino = INodeNo(self.shown_ino(f.ino.0));
        f
    }

    /// An inode number as shown in st_ino and d_ino (`ino32_t`: its low 32 bits).
    pub(super) fn shown_ino(&self, ino: u64) -> u64 {
        if self.cfg.ino32 {
            ino & 0xffff_ffff
        } else {
            ino
        }
    }

    /// Who asks, with the ids the layers store for them.
    pub(super) fn caller(&self, req: &Request) -> Caller {
        Caller {
            uid: self.cfg.ids.uids.to_stored(req.uid()),
            gid: self.cfg.ids.gids.to_stored(req.gid()),
            pid: req.pid(),
            root: req.uid() == 0,
            gids: &self.cfg.ids.gids,
        }
    }

    /// EOPNOTSUPP under `noxattrs=1`.
    pub(super) fn xattrs_on(&self) -> Result<(), Errno> {
        if self.cfg.xattrs {
            Ok(())
        } else {
            Err(Errno::ENOTSUP)
        }
    }

    pub(super) fn entry(&self, reply: ReplyEntry, r: Result<Attr, Errno>) {
        answer(reply, r, |reply, a| {
            reply.entry_for_node(
                INodeNo(a.nodeid),
                &self.cfg.ttl,
                &self.cfg.ttl,
                &self.fattr(&a),
                Generation(0),
            )
        })
    }

    /// Answers a create (or O_TMPFILE) with the new object and its open file, in
    /// passthrough where the kernel allows it.
    pub(super) fn created(&self, reply: ReplyCreate, a: Attr, fd: std::os::fd::OwnedFd) {
        let fh = self.union.adopt_open(a.ino(), fd);
        let file = match self.union.open_file_fd(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        let attr = self.fattr(&a);
        let backing = match self.io.open(a.nodeid, fh, true, true, file.as_fd(), |fd| {
            reply.open_backing(fd)
        }) {
            OpenMode::Passthrough(b) => Some(b),
            OpenMode::Cached { .. } => None,
            OpenMode::Stale => {
                // A new object's kernel inode has no open files, so this cannot happen;
                // answered as a failed open all the same (and the entry's lookup is not
                // the kernel's then).
                self.union.release(fh, false);
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
    pub(super) fn num(&self, id: INodeNo) -> u64 {
        self.union.number_of_node(id.0)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn make(
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

pub(super) fn cache_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

/// A FUSE reply that can carry an errno. Each of fuser's reply types has its own `error`
/// method; `answer` needs them under one name.
pub(super) trait ErrorReply {
    fn fail(self, e: FErrno);
}

macro_rules! error_replies {
    ($($reply:ty),*) => {
        $(impl ErrorReply for $reply {
            fn fail(self, e: FErrno) {
                self.error(e)
            }
        })*
    };
}

error_replies!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyIoctl,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyStatx,
    ReplyWrite,
    ReplyXattr
);

/// Answers a request from the union's result: `ok` sends the reply of a success, a
/// failure goes back as its errno.
pub(super) fn answer<R: ErrorReply, T>(reply: R, r: Result<T, Errno>, ok: impl FnOnce(R, T)) {
    match r {
        Ok(v) => ok(reply, v),
        Err(e) => reply.fail(errno(e)),
    }
}

pub(super) fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    answer(reply, r, |reply, ()| reply.ok())
}
