//! Directory listings for the kernel: READDIR and READDIRPLUS replies from the union's
//! merged listings, with a lookup reference counted for every entry READDIRPLUS enters.

use super::*;

impl StrataFs {
    pub(super) fn do_readdir(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectory) {
        let _timing = self.stats.time(Op::Readdir);
        let r = self.union.readdir(self.num(ino), offset, |next, e| {
            reply.add(
                INodeNo(self.shown_ino(e.ino)),
                next,
                file_type(e.kind),
                &e.name,
            )
        });
        answer(reply, r, |reply, ()| reply.ok())
    }

    pub(super) fn do_readdirplus(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectoryPlus) {
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
        answer(reply, r, |reply, ()| reply.ok())
    }
}
