//! POSIX ACLs in their xattr form (`system.posix_acl_access`, `system.posix_acl_default`):
//! parsing, writing, and what a new object inherits from its parent's default ACL.
//!
//! With FUSE_POSIX_ACL the kernel checks access against the ACLs it reads through
//! getxattr, and leaves inheritance to the filesystem: a new object in a directory with a
//! default ACL gets that ACL as its access ACL, masked by the mode the creator asked for,
//! with no umask applied (POSIX 1003.1e, the kernel's posix_acl_create). Pure logic.

pub const ACCESS_XATTR: &str = "system.posix_acl_access";
pub const DEFAULT_XATTR: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// An ACL, entries in their on-disk order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(pub Vec<Entry>);

impl Acl {
    /// Reads the xattr form; None for a value that is not a well-formed ACL.
    pub fn parse(b: &[u8]) -> Option<Acl> {
        if b.len() < HEADER || !(b.len() - HEADER).is_multiple_of(ENTRY) {
            return None;
        }
        if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != VERSION {
            return None;
        }
        let entries = b[HEADER..]
            .chunks_exact(ENTRY)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        Some(Acl(entries))
    }

    /// The same ACL with the ids of its named-user and named-group entries mapped.
    pub fn map_ids(&self, uid: impl Fn(u32) -> u32, gid: impl Fn(u32) -> u32) -> Acl {
        let map = |e: &Entry| match e.tag {
            USER => Entry {
                id: uid(e.id),
                ..*e
            },
            GROUP => Entry {
                id: gid(e.id),
                ..*e
            },
            _ => *e,
        };
        Acl(self.0.iter().map(map).collect())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    /// What an object created with `mode` inherits from this default ACL: its access ACL
    /// (None when the mode bits say it all) and its mode. The permission bits of `mode` are
    /// masked by the ACL's owner, mask (else owning group) and other entries, and those
    /// entries by the mode; setuid, setgid and sticky bits pass through.
    pub fn inherit(&self, mode: u32) -> (Option<Acl>, u32) {
        let mut acl = self.clone();
        let mut perm = mode & 0o777;
        let mut extended = false;
        let mut group_obj = None;
        let mut mask = None;
        for (i, e) in acl.0.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((perm >> 6) & 7) as u16;
                    perm &= ((e.perm as u32) << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= (perm & 7) as u16;
                    perm &= e.perm as u32 | !0o007;
                }
                GROUP_OBJ => group_obj = Some(i),
                MASK => {
                    mask = Some(i);
                    extended = true;
                }
                USER | GROUP => extended = true,
                _ => {}
            }
        }
        if let Some(i) = mask.or(group_obj) {
            let e = &mut acl.0[i];
            e.perm &= ((perm >> 3) & 7) as u16;
            perm &= ((e.perm as u32) << 3) | !0o070;
        }
        let mode = (mode & !0o777) | perm;
        (extended.then_some(acl), mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> Entry {
        Entry { tag, perm, id }
    }

    const ANY: u32 = u32::MAX;

    #[test]
    fn round_trips_the_xattr_form() {
        let acl = Acl(vec![
            e(USER_OBJ, 7, ANY),
            e(USER, 5, 65534),
            e(GROUP_OBJ, 5, ANY),
            e(MASK, 7, ANY),
            e(OTHER, 0, ANY),
        ]);
        assert_eq!(Acl::parse(&acl.to_bytes()), Some(acl));
        assert_eq!(Acl::parse(&[2, 0, 0, 0, 1]), None);
        assert_eq!(Acl::parse(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn minimal_default_gives_mode_without_umask() {
        // setfacl -d -m g::rwx,o::rwx on a 755 dir: u::rwx,g::rwx,o::rwx.
        let d = Acl(vec![
            e(USER_OBJ, 7, ANY),
            e(GROUP_OBJ, 7, ANY),
            e(OTHER, 7, ANY),
        ]);
        assert_eq!(d.inherit(0o666), (None, 0o666));
        assert_eq!(d.inherit(0o777), (None, 0o777));
        assert_eq!(d.inherit(0o2755).1, 0o2755);
    }

    #[test]
    fn extended_default_masks_through_the_mask_entry() {
        let d = Acl(vec![
            e(USER_OBJ, 7, ANY),
            e(USER, 7, 65534),
            e(GROUP_OBJ, 5, ANY),
            e(MASK, 7, ANY),
            e(OTHER, 5, ANY),
        ]);
        let (acl, mode) = d.inherit(0o640);
        assert_eq!(mode, 0o640);
        let acl = acl.expect("named entries make an access ACL");
        // The mask takes the group bits of the mode; the named entry stays as it was.
        assert_eq!(acl.0[1], e(USER, 7, 65534));
        assert_eq!(acl.0[3], e(MASK, 4, ANY));
        assert_eq!(acl.0[4], e(OTHER, 0, ANY));
        assert_eq!(acl.0[0], e(USER_OBJ, 6, ANY));
    }

    #[test]
    fn restrictive_default_narrows_the_mode() {
        let d = Acl(vec![
            e(USER_OBJ, 6, ANY),
            e(GROUP_OBJ, 0, ANY),
            e(OTHER, 0, ANY),
        ]);
        assert_eq!(d.inherit(0o777), (None, 0o600));
    }
}
