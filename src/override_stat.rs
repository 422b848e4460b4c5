//! fuse-overlayfs' `xattr_permissions=1|2` (containers-storage's `force_mask`): the owner
//! and permission bits an object shows are kept in an xattr of the object instead of its
//! real owner and mode, so that a mount without the privilege to chown (a plain user
//! without subordinate ids) still stores every owner and mode an image has. The value is
//! `UID:GID:MODE[:TYPE]`, MODE in octal; TYPE (`dir`, `file`, `symlink`, `pipe`, `socket`,
//! `block-MAJ-MIN`, `char-MAJ-MIN`) shows a directory or regular file as another kind, as
//! containers-storage stores device nodes it cannot create. Pure logic.

use crate::sys::Stat;

/// `xattr_permissions=1`.
pub const SECURITY: &str = "security.fuseoverlayfs.override_stat";
/// `xattr_permissions=2`: the name containers-storage writes and fuse-overlayfs 1.11+.
pub const CONTAINERS: &str = "user.containers.override_stat";
/// `xattr_permissions=2` of fuse-overlayfs up to 1.10.
pub const FUSE_OVERLAYFS: &str = "user.fuseoverlayfs.override_stat";
/// The order in which a layer's objects are searched for one (fuse-overlayfs' order).
pub const NAMES: [&str; 3] = [SECURITY, CONTAINERS, FUSE_OVERLAYFS];

/// The attributes an object shows in place of its real ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrideStat {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u32,
    /// Another file type (S_IFMT bits) and device number to show.
    pub kind: Option<(u32, u64)>,
}

fn parse_kind(t: &str) -> Option<(u32, u64)> {
    let device = |fmt: u32, rest: &str| {
        let (maj, min) = rest.split_once('-')?;
        Some((fmt, libc::makedev(maj.parse().ok()?, min.parse().ok()?)))
    };
    match t {
        "dir" => Some((libc::S_IFDIR, 0)),
        "file" => Some((libc::S_IFREG, 0)),
        "symlink" => Some((libc::S_IFLNK, 0)),
        "pipe" => Some((libc::S_IFIFO, 0)),
        "socket" => Some((libc::S_IFSOCK, 0)),
        _ => {
            if let Some(rest) = t.strip_prefix("block-") {
                device(libc::S_IFBLK, rest)
            } else if let Some(rest) = t.strip_prefix("char-") {
                device(libc::S_IFCHR, rest)
            } else {
                None
            }
        }
    }
}

fn kind_name((fmt, rdev): (u32, u64)) -> String {
    let dev = |p: &str| format!("{p}-{}-{}", libc::major(rdev), libc::minor(rdev));
    match fmt {
        libc::S_IFDIR => "dir".into(),
        libc::S_IFLNK => "symlink".into(),
        libc::S_IFIFO => "pipe".into(),
        libc::S_IFSOCK => "socket".into(),
        libc::S_IFBLK => dev("block"),
        libc::S_IFCHR => dev("char"),
        _ => "file".into(),
    }
}

impl OverrideStat {
    /// Reads a value; None for one that is not well formed (the real attributes show).
    pub fn parse(v: &[u8]) -> Option<OverrideStat> {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
        let mut f = s.split(':');
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let mode = u32::from_str_radix(f.next()?, 8).ok()?;
        let kind = match f.next() {
            Some(t) => Some(parse_kind(t)?),
            None => None,
        };
        if f.next().is_some() {
            return None;
        }
        Some(OverrideStat {
            uid,
            gid,
            perm: mode & 0o7777,
            kind,
        })
    }

    /// The value to store; `fmt` is the real file type, written into MODE as
    /// fuse-overlayfs writes it.
    pub fn to_bytes(&self, fmt: u32) -> Vec<u8> {
        let mut s = format!("{}:{}:{:o}", self.uid, self.gid, fmt | self.perm);
        if let Some(k) = self.kind {
            s.push(':');
            s.push_str(&kind_name(k));
        }
        s.into_bytes()
    }

    /// The attributes of a real object as shown: only directories and regular files take
    /// an override (fuse-overlayfs' rule).
    pub fn apply(&self, st: &mut Stat) {
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt != libc::S_IFDIR && fmt != libc::S_IFREG {
            return;
        }
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        let (fmt, rdev) = self.kind.unwrap_or((fmt, st.st_rdev));
        st.st_mode = fmt | self.perm;
        st.st_rdev = rdev;
    }

    /// What a real object shows without an override.
    pub fn of(st: &Stat) -> OverrideStat {
        OverrideStat {
            uid: st.st_uid,
            gid: st.st_gid,
            perm: st.st_mode & 0o7777,
            kind: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_fuse_overlayfs_values() {
        let o = OverrideStat::parse(b"11:12:40755").unwrap();
        assert_eq!((o.uid, o.gid, o.perm, o.kind), (11, 12, 0o755, None));
        assert_eq!(o.to_bytes(libc::S_IFDIR), b"11:12:40755");
        let dev = OverrideStat::parse(b"0:0:620:char-4-1").unwrap();
        assert_eq!(dev.kind, Some((libc::S_IFCHR, libc::makedev(4, 1))));
        assert_eq!(dev.to_bytes(libc::S_IFREG), b"0:0:100620:char-4-1");
        for bad in [
            &b""[..],
            b"1:2",
            b"a:2:644",
            b"1:2:9",
            b"1:2:644:bogus",
            b"1:2:644:dir:x",
        ] {
            assert_eq!(OverrideStat::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn applies_to_files_and_dirs_only() {
        let o = OverrideStat::parse(b"5:6:4750:char-1-3").unwrap();
        let mut st = crate::sys::zero_stat();
        st.st_mode = libc::S_IFREG | 0o644;
        o.apply(&mut st);
        assert_eq!((st.st_uid, st.st_gid), (5, 6));
        assert_eq!(st.st_mode, libc::S_IFCHR | 0o4750);
        assert_eq!(st.st_rdev, libc::makedev(1, 3));
        let mut link = crate::sys::zero_stat();
        link.st_mode = libc::S_IFLNK | 0o777;
        o.apply(&mut link);
        assert_eq!((link.st_uid, link.st_mode), (0, libc::S_IFLNK | 0o777));
    }
}
