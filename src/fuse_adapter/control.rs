//! statx beyond the basic stats (birth time) and the inode-flag ioctls (lsattr/chattr).

use super::*;

impl StrataFs {
    pub(super) fn do_statx(&self, ino: INodeNo, reply: ReplyStatx) {
        let _timing = self.stats.time(Op::Getattr);
        answer(
            reply,
            self.union.statx(self.num(ino)),
            |reply, (a, extra)| {
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
            },
        )
    }

    pub(super) fn do_ioctl(&self, ino: INodeNo, cmd: u32, in_data: &[u8], reply: ReplyIoctl) {
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
        answer(reply, r, |reply, data| reply.ioctl(0, &data))
    }
}
