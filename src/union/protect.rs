//! Immutable and append-only objects (chattr +i / +a) and the inode flags of the merged
//! view (lsattr/chattr through FS_IOC_GETFLAGS/SETFLAGS and FS_IOC_FSGETXATTR/SETXATTR).
//!
//! The kernel checks these flags on its own inodes only, and a FUSE inode never carries
//! them, so the union enforces them before every change, as the VFS does on ext4 (and as
//! overlayfs does from the flags it copies into its inodes):
//! - immutable: no write-open, truncate, chmod/chown/utimes (even to now), xattr change,
//!   link, unlink or rename of the object; nothing created in or removed from a directory;
//! - append-only: writes only with O_APPEND, no truncate, no chmod/chown/explicit times,
//!   no xattr change, link, unlink or rename; a directory takes new entries but loses none.
//!
//! Where the flags live: on a lower or init object, its real flags. On an upper object,
//! the two protections are kept in the private xattr `Private::Protattr` ("i",
//! "a") and never set on the real file, as overlayfs keeps its `overlay.protattr`: an
//! immutable upper directory must still take the copy-ups of its children, and an upper
//! copy must still take the union's own xattrs and hard links. Copy-up carries both
//! protections into that xattr, and FS_SYNC_FL/FS_NOATIME_FL onto the copy.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};

use super::datacopy::CopyMode;
use super::{Attr, DirView, Resolved, Union};
use crate::private_xattrs::Private;
use crate::sys::{self, Errno, FsXattr, SysResult, XTarget};

/// The immutable and append-only bits of FS_IOC_GETFLAGS, and of fsxattr.fsx_xflags.
const FLAGS: (u32, u32) = (sys::FS_IMMUTABLE_FL, sys::FS_APPEND_FL);
const XFLAGS: (u32, u32) = (sys::FS_XFLAG_IMMUTABLE, sys::FS_XFLAG_APPEND);

/// The protections of one object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protection {
    pub immutable: bool,
    pub append: bool,
}

/// A change the union is about to make, as the protection rules name it.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    /// An open with these open(2) flags that may write.
    WriteOpen(i32),
    /// Truncate, chmod, chown, explicit times, xattr changes: anything but a touch.
    Attributes,
    /// utimes to the current time (allowed on append-only files).
    Touch,
    /// The object loses or gains a name: unlink, rmdir, rename, link source.
    Name,
    /// An entry is created in this directory.
    CreateIn,
    /// An entry is removed from (or renamed out of) this directory.
    RemoveFrom,
}

impl Protection {
    pub fn from_statx(attrs: u64) -> Protection {
        Protection {
            immutable: attrs & libc::STATX_ATTR_IMMUTABLE as u64 != 0,
            append: attrs & libc::STATX_ATTR_APPEND as u64 != 0,
        }
    }

    fn from_xattr(v: &[u8]) -> Protection {
        Protection {
            immutable: v.contains(&b'i'),
            append: v.contains(&b'a'),
        }
    }

    fn to_xattr(self) -> Vec<u8> {
        let mut v = Vec::new();
        if self.immutable {
            v.push(b'i');
        }
        if self.append {
            v.push(b'a');
        }
        v
    }

    fn union(self, o: Protection) -> Protection {
        Protection {
            immutable: self.immutable || o.immutable,
            append: self.append || o.append,
        }
    }

    pub fn any(self) -> bool {
        self.immutable || self.append
    }

    /// These protections as bits of a flag word whose immutable and append bits are these
    /// (FS_IOC_GETFLAGS flags, or fsxattr xflags).
    fn to_bits(self, (immutable, append): (u32, u32)) -> u32 {
        (if self.immutable { immutable } else { 0 }) | (if self.append { append } else { 0 })
    }

    fn from_bits(f: u32, (immutable, append): (u32, u32)) -> Protection {
        Protection {
            immutable: f & immutable != 0,
            append: f & append != 0,
        }
    }

    /// Whether these protections allow `change` (EPERM if not, as the VFS answers).
    pub fn allows(self, change: Change) -> SysResult<()> {
        let refused = match change {
            Change::WriteOpen(flags) => {
                self.immutable
                    || (self.append && (flags & libc::O_TRUNC != 0 || flags & libc::O_APPEND == 0))
            }
            Change::Attributes | Change::Name | Change::RemoveFrom => self.any(),
            Change::Touch | Change::CreateIn => self.immutable,
        };
        if refused {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }
}

/// The protections the private xattr of an upper object records.
fn recorded(t: XTarget<'_>) -> Protection {
    sys::getxattr(t, Private::Protattr.name())
        .map(|v| Protection::from_xattr(&v))
        .unwrap_or_default()
}

/// Records `p` in the private xattr of an upper object (removes it when empty).
pub(super) fn record(t: XTarget<'_>, p: Protection) -> SysResult<()> {
    let name = Private::Protattr.name();
    if p.any() {
        sys::setxattr(t, name, &p.to_xattr(), 0)
    } else {
        match sys::removexattr(t, name) {
            Err(Errno::ENODATA) => Ok(()),
            r => r,
        }
    }
}

impl Union {
    /// The protections of the object at `path` in `layer` ("" for the layer's root).
    pub(super) fn protection_at(&self, layer: usize, path: &OsStr) -> SysResult<Protection> {
        let (dfd, name);
        let (d, n) = if path.is_empty() {
            (self.layers.layers[layer].fd(), OsStr::new(""))
        } else {
            (dfd, name) = self.parent_fd(layer, path)?;
            (dfd.as_fd(), name)
        };
        let real = Protection::from_statx(sys::attributes_at(d, n)?);
        if !self.is_upper(layer) {
            return Ok(real);
        }
        let t = if n.is_empty() {
            XTarget::Fd(d)
        } else {
            XTarget::At(d, n)
        };
        Ok(real.union(recorded(t)))
    }

    /// statx beyond the basic stats: the merged attributes, and the birth time of the
    /// object's current copy. (The kernel takes no STATX_ATTR_* flags from a FUSE
    /// filesystem: lsattr shows the protections, S22.)
    pub fn statx(&self, ino: u64) -> SysResult<(Attr, sys::StatxExtra)> {
        let attr = self.getattr(ino)?;
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        let located = if node.state.lock().unlinked {
            Err(Errno::ENOENT)
        } else {
            self.locate(&node)
        };
        let (layer, path) = match located {
            Ok((layer, path, _)) => (layer, path),
            // Unlinked while open (or O_TMPFILE): through an open descriptor.
            Err(Errno::ENOENT) => {
                let fd = self.open_fd_of(ino).ok_or(Errno::ENOENT)?;
                return Ok((attr, sys::statx_extra_at(fd.as_fd(), OsStr::new(""))?));
            }
            Err(e) => return Err(e),
        };
        let (dfd, name);
        let (d, n) = if path.is_empty() {
            (self.layers.layers[layer].fd(), OsStr::new(""))
        } else {
            (dfd, name) = self.parent_fd(layer, &path)?;
            (dfd.as_fd(), name)
        };
        Ok((attr, sys::statx_extra_at(d, n)?))
    }

    /// Refuses `change` of the object `ino` where its protections forbid it.
    pub(super) fn check_node(&self, ino: u64, change: Change) -> SysResult<()> {
        let node = self.node(ino)?;
        let (layer, path, _) = self.locate(&node)?;
        self.protection_at(layer, &path)?.allows(change)
    }

    /// Refuses `change` of a resolved entry `name` of `dir`.
    pub(super) fn check_entry(
        &self,
        dir: &DirView,
        name: &OsStr,
        r: &Resolved,
        change: Change,
    ) -> SysResult<()> {
        let path = if self.is_upper(r.layer) {
            super::join(&dir.path, name)
        } else {
            r.lower_path.clone()
        };
        self.protection_at(r.layer, &path)?.allows(change)
    }

    /// Refuses `change` inside the merged directory `dir` (its top-most copy decides).
    pub(super) fn check_dir(&self, dir: &DirView, change: Change) -> SysResult<()> {
        let Some(&top) = dir.layers.first() else {
            return Ok(());
        };
        self.protection_at(top, self.dir_path_in(dir, top))?
            .allows(change)
    }

    /// An open descriptor of the node's current copy, for the flag ioctls.
    fn flags_fd(&self, ino: u64) -> SysResult<(OwnedFd, usize)> {
        let node = self.node(ino)?;
        let (layer, path, s) = self.locate(&node)?;
        if s.kind != libc::S_IFREG && s.kind != libc::S_IFDIR {
            return Err(Errno(libc::ENOTTY));
        }
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = if path.is_empty() {
            // Through the fd's magic link, which O_NOFOLLOW would refuse.
            sys::reopen(self.layers.layers[layer].fd(), flags)?
        } else {
            let (dfd, name) = self.parent_fd(layer, &path)?;
            sys::openat(dfd.as_fd(), name, flags | libc::O_NOFOLLOW, 0)?
        };
        Ok((fd, layer))
    }

    /// Brings the node where its flags can be changed (copy-up; init files in place) and
    /// opens that copy.
    fn writable_flags_fd(&self, ino: u64) -> SysResult<(OwnedFd, usize)> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        self.make_writable(&node, CopyMode::Meta)?;
        self.flags_fd(ino)
    }

    /// FS_IOC_GETFLAGS of the merged view.
    pub fn get_inode_flags(&self, ino: u64) -> SysResult<u32> {
        let _ns = self.namespace_lock.read();
        let (fd, layer) = self.flags_fd(ino)?;
        let real = sys::get_flags(fd.as_fd())?;
        Ok(if self.is_upper(layer) {
            real | recorded(XTarget::Fd(fd.as_fd())).to_bits(FLAGS)
        } else {
            real
        })
    }

    /// FS_IOC_SETFLAGS: copies up, then sets the flags; on the upper the protections go
    /// to the private xattr. The kernel has checked ownership and CAP_LINUX_IMMUTABLE.
    pub fn set_inode_flags(&self, ino: u64, flags: u32) -> SysResult<()> {
        let _ns = self.namespace_lock.read();
        let (fd, layer) = self.writable_flags_fd(ino)?;
        let prot_bits = sys::FS_IMMUTABLE_FL | sys::FS_APPEND_FL;
        if !self.is_upper(layer) {
            return sys::set_flags(fd.as_fd(), flags);
        }
        sys::set_flags(fd.as_fd(), flags & !prot_bits)?;
        record(XTarget::Fd(fd.as_fd()), Protection::from_bits(flags, FLAGS))?;
        self.attributes_changed(ino);
        Ok(())
    }

    /// FS_IOC_FSGETXATTR of the merged view.
    pub fn get_inode_xflags(&self, ino: u64) -> SysResult<FsXattr> {
        let _ns = self.namespace_lock.read();
        let (fd, layer) = self.flags_fd(ino)?;
        let mut x = sys::fs_get_xattr(fd.as_fd())?;
        if self.is_upper(layer) {
            x.xflags |= recorded(XTarget::Fd(fd.as_fd())).to_bits(XFLAGS);
        }
        Ok(x)
    }

    /// FS_IOC_FSSETXATTR, as `set_inode_flags`.
    pub fn set_inode_xflags(&self, ino: u64, x: FsXattr) -> SysResult<()> {
        let _ns = self.namespace_lock.read();
        let (fd, layer) = self.writable_flags_fd(ino)?;
        if !self.is_upper(layer) {
            return sys::fs_set_xattr(fd.as_fd(), &x);
        }
        let real = FsXattr {
            xflags: x.xflags & !(sys::FS_XFLAG_IMMUTABLE | sys::FS_XFLAG_APPEND),
            ..x
        };
        sys::fs_set_xattr(fd.as_fd(), &real)?;
        record(
            XTarget::Fd(fd.as_fd()),
            Protection::from_bits(x.xflags, XFLAGS),
        )?;
        self.attributes_changed(ino);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMM: Protection = Protection {
        immutable: true,
        append: false,
    };
    const APP: Protection = Protection {
        immutable: false,
        append: true,
    };

    #[test]
    fn immutable_refuses_every_change() {
        for c in [
            Change::WriteOpen(libc::O_WRONLY | libc::O_APPEND),
            Change::Attributes,
            Change::Touch,
            Change::Name,
            Change::CreateIn,
            Change::RemoveFrom,
        ] {
            assert_eq!(IMM.allows(c), Err(Errno::EPERM), "{c:?}");
        }
    }

    #[test]
    fn append_only_allows_appends_touch_and_new_entries() {
        assert!(APP
            .allows(Change::WriteOpen(libc::O_WRONLY | libc::O_APPEND))
            .is_ok());
        assert!(APP
            .allows(Change::WriteOpen(libc::O_RDWR | libc::O_APPEND))
            .is_ok());
        assert!(APP.allows(Change::Touch).is_ok());
        assert!(APP.allows(Change::CreateIn).is_ok());
        for c in [
            Change::WriteOpen(libc::O_WRONLY),
            Change::WriteOpen(libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC),
            Change::Attributes,
            Change::Name,
            Change::RemoveFrom,
        ] {
            assert_eq!(APP.allows(c), Err(Errno::EPERM), "{c:?}");
        }
    }

    #[test]
    fn unprotected_allows_everything() {
        let p = Protection::default();
        assert!(p
            .allows(Change::WriteOpen(libc::O_RDWR | libc::O_TRUNC))
            .is_ok());
        assert!(p.allows(Change::Name).is_ok());
    }

    #[test]
    fn xattr_and_flag_forms_round_trip() {
        for p in [IMM, APP, Protection::default(), IMM.union(APP)] {
            assert_eq!(Protection::from_xattr(&p.to_xattr()), p);
            assert_eq!(Protection::from_bits(p.to_bits(FLAGS), FLAGS), p);
            assert_eq!(Protection::from_bits(p.to_bits(XFLAGS), XFLAGS), p);
        }
    }
}
