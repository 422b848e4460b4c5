//! Xattr requests: the union's names and values, ids inside ACLs and capabilities
//! mapped (`idmap`), and the statistics report served on the mount's root.

use super::*;

impl StrataFs {
    pub(super) fn do_setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
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
                    .setxattr(self.caller(req), self.num(ino), name, value, flags)
            }),
        );
    }

    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
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
        let r = self
            .xattrs_on()
            .and_then(|()| self.union.getxattr(self.num(ino), name));
        answer(reply, r, |reply, v| {
            let shown = name.to_str().and_then(|n| self.cfg.ids.shown_xattr(n, &v));
            reply_xattr(reply, size, shown.as_deref().unwrap_or(&v))
        })
    }

    pub(super) fn do_listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timing = self.stats.time(Op::Listxattr);
        let r = self
            .xattrs_on()
            .and_then(|()| self.union.listxattr(self.caller(req), self.num(ino)));
        answer(reply, r, |reply, names| {
            let mut buf = Vec::new();
            for n in names {
                buf.extend_from_slice(n.as_bytes());
                buf.push(0);
            }
            reply_xattr(reply, size, &buf);
        })
    }

    pub(super) fn do_removexattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        reply: ReplyEmpty,
    ) {
        let _timing = self.stats.time(Op::Removexattr);
        empty(
            reply,
            self.xattrs_on().and_then(|()| {
                self.union
                    .removexattr(self.caller(req), self.num(ino), name)
            }),
        );
    }
}
