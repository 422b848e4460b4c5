//! Opening and creating files (passthrough where the kernel allows it, S28) and the
//! data operations the daemon serves itself: copy_file_range and fallocate.

use super::*;

impl StrataFs {
    pub(super) fn do_open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _timing = self.stats.time(Op::Open);
        let number = self.num(ino);
        let (fh, mutable) = match self.union.open(self.caller(req), number, flags.0) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        let file = match self.union.open_file_fd(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        let passthrough_ok = mutable || self.cfg.passthrough_lower;
        match self
            .io
            .open(ino.0, fh, passthrough_ok, mutable, file.as_fd(), |fd| {
                reply.open_backing(fd)
            }) {
            OpenMode::Passthrough(b) => {
                if !mutable {
                    self.union.keep_copy(fh);
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
                self.union.release(fh, false);
                self.union.supersede(number, ino.0);
                reply.error(FErrno::from_i32(libc::ESTALE))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_create(
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

    pub(super) fn do_tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _timing = self.stats.time(Op::Create);
        let r = self
            .union
            .tmpfile(self.caller(req), self.num(parent), mode, umask, flags);
        answer(reply, r, |reply, (a, fd)| self.created(reply, a, fd))
    }

    pub(super) fn do_copy_file_range(
        &self,
        fh_in: FileHandle,
        offset_in: u64,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        reply: ReplyWrite,
    ) {
        let _timing = self.stats.time(Op::CopyFileRange);
        answer(
            reply,
            self.union
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len),
            |reply, n| reply.written(n),
        )
    }

    pub(super) fn do_fallocate(
        &self,
        req: &Request,
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
}
