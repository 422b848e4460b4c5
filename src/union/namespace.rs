//! Changes to the namespace: create, mknod, mkdir, symlink, O_TMPFILE, link (S15, S17),
//! unlink and rmdir with whiteouts (S14); rename is in rename.rs.
//!
//! Ordering keeps every step crash-consistent: a whiteout is written before the upper
//! object it stands in for is removed (in the aufs form both live in one layer and the
//! real entry wins, S5), and new directories over a whiteout are built opaque in the
//! workdir and renamed into place.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::overrides;
use super::protect::Change;
use super::{check_name, Attr, Caller, DirView, Union};
use crate::acl::{self, Acl};
use crate::override_stat::OverrideStat;
use crate::sys::{self, Errno, SysResult, XTarget};
use crate::whiteout;
use crate::whiteout::WhiteoutForm;

/// What a new object is.
pub enum NewKind<'a> {
    /// A regular file, created and opened with these open(2) flags.
    File(i32),
    Dir,
    /// A fifo, socket or device node: `file_type` is the S_IF* bits of mknod's mode.
    Node {
        file_type: u32,
        rdev: u64,
    },
    Symlink(&'a OsStr),
}

/// A new entry that could not be finished (given its owner, ACL and mode) goes again: a
/// failed create leaves nothing.
fn undo_on_error(
    r: SysResult<()>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    is_dir: bool,
) -> SysResult<()> {
    if r.is_err() {
        let _ = sys::unlinkat(dir, name, is_dir);
    }
    r
}

/// The upper directory a new entry goes into, and whether a whiteout sits at the name.
struct Target {
    udir: std::sync::Arc<OwnedFd>,
    whiteout: bool,
    /// The whiteout sits at the name itself (overlay form, or a long name's xattr form).
    at_name: bool,
    setgid_gid: Option<u32>,
    /// The parent's default ACL, which a new object inherits.
    default_acl: Option<Acl>,
}

impl Target {
    /// Before creating `name`: a whiteout at the name itself must go first.
    fn clear_whiteout_at_name(&self, name: &OsStr) -> SysResult<()> {
        if self.whiteout && self.at_name {
            sys::unlinkat(self.udir.as_fd(), name, false)?;
        }
        Ok(())
    }

    /// After creating `name`: its `.wh.` whiteout goes (S15); the new entry hid it anyway.
    fn clear_aufs_whiteout(&self, name: &OsStr) -> SysResult<()> {
        if self.whiteout && !self.at_name {
            whiteout::remove_aufs_whiteout(self.udir.as_fd(), name)?;
        }
        Ok(())
    }
}

impl Union {
    /// Checks that `name` can be created in `parent` and brings the parent into the upper.
    fn prepare_create(&self, parent: u64, name: &OsStr) -> SysResult<Target> {
        check_name(name)?;
        if whiteout::is_reserved_name(name) && !self.read_only() {
            return Err(Errno::EPERM);
        }
        let mut t = self.prepare_parent(parent, |dir| {
            if self.resolve_child(dir, name)?.is_some() {
                return Err(Errno::EEXIST);
            }
            Ok(())
        })?;
        let d = t.udir.as_fd();
        t.at_name = whiteout::whiteout_at_name(self.layers.whiteout, name);
        t.whiteout = if t.at_name {
            sys::fstatat(d, name).is_ok()
        } else {
            whiteout::has_aufs_whiteout(d, name)
        };
        Ok(t)
    }

    /// Brings the directory `parent` into the upper for a new object in it, once `check`
    /// (on its merged view) and the directory's protections allow it.
    fn prepare_parent(
        &self,
        parent: u64,
        check: impl FnOnce(&DirView) -> SysResult<()>,
    ) -> SysResult<Target> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        let pnode = self.node(parent)?;
        let dir = self.dir_view(&pnode)?;
        check(&dir)?;
        self.check_dir(&dir, Change::CreateIn)?;
        self.copy_up(&pnode, true)?;
        let udir = self.dir_fd(0, &dir.path)?;
        let d = udir.as_fd();
        let mut pst = sys::fstat(d)?;
        // Where owners and modes live in overrides, the parent's setgid bit and group too.
        self.show_override(XTarget::Fd(d), &mut pst);
        let setgid_gid = (pst.st_mode & libc::S_ISGID != 0).then_some(pst.st_gid);
        let default_acl = if self.behaviour.acls {
            sys::getxattr(XTarget::Fd(d), OsStr::new(acl::DEFAULT_XATTR))
                .ok()
                .and_then(|v| Acl::parse(&v))
                // An empty default ACL is no default ACL (the umask applies).
                .filter(|a| !a.0.is_empty())
        } else {
            None
        };
        Ok(Target {
            udir,
            whiteout: false,
            at_name: false,
            setgid_gid,
            default_acl,
        })
    }

    /// The permission bits, access ACL and group of a new object (S15): the parent's
    /// default ACL instead of the umask where it has one, its group where it is setgid.
    fn new_object_mode(
        &self,
        t: &Target,
        caller: Caller,
        is_dir: bool,
        mode: u32,
        umask: u32,
    ) -> (u32, Option<Acl>, u32) {
        let (mut perm, access_acl) = match &t.default_acl {
            Some(default) => {
                let (access, m) = default.inherit(mode & 0o7777);
                (m, access)
            }
            None => (mode & 0o7777 & !umask, None),
        };
        let gid = t.setgid_gid.unwrap_or(caller.gid);
        if is_dir && t.setgid_gid.is_some() {
            perm |= libc::S_ISGID;
        }
        (perm, access_acl, gid)
    }

    /// Gives a new object (a regular file or directory, `fmt`) its owner, inherited ACLs and
    /// mode. A mount that may not give objects other owners keeps the owner (and the mode)
    /// in an override, where it writes them (xattr_permissions).
    #[allow(clippy::too_many_arguments)]
    fn finish_new_object(
        &self,
        target: XTarget<'_>,
        fmt: u32,
        caller: Caller,
        gid: u32,
        perm: u32,
        access_acl: Option<&Acl>,
        default_acl: Option<&Acl>,
    ) -> SysResult<()> {
        let in_override = match sys::chown_target(target, caller.uid, gid) {
            Ok(()) => false,
            Err(Errno::EPERM) => {
                let shown = OverrideStat {
                    uid: caller.uid,
                    gid,
                    perm,
                    kind: None,
                };
                self.owner_into_override(target, fmt, shown)?;
                true
            }
            Err(e) => return Err(e),
        };
        if let Some(a) = access_acl {
            sys::setxattr(target, OsStr::new(acl::ACCESS_XATTR), &a.to_bytes(), 0)?;
        }
        if let (libc::S_IFDIR, Some(default)) = (fmt, default_acl) {
            sys::setxattr(
                target,
                OsStr::new(acl::DEFAULT_XATTR),
                &default.to_bytes(),
                0,
            )?;
        }
        sys::chmod_target(
            target,
            if in_override {
                overrides::real_perm(fmt, perm)
            } else {
                perm
            },
        )
    }

    /// A new regular file with no name (O_TMPFILE) in the directory `parent`, open with
    /// `flags`; it lives in the upper dir of `parent` (copied up for it, as overlayfs
    /// does) until its last descriptor closes, or takes a name through `link`.
    pub fn tmpfile(
        &self,
        caller: Caller,
        parent: u64,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> SysResult<(Attr, OwnedFd)> {
        let _ns = self.namespace_lock.read();
        let t = self.prepare_parent(parent, |_| Ok(()))?;
        let (perm, access_acl, gid) = self.new_object_mode(&t, caller, false, mode, umask);
        let keep = libc::O_ACCMODE | libc::O_EXCL | libc::O_APPEND | libc::O_NOATIME;
        let fd = sys::openat(
            t.udir.as_fd(),
            OsStr::new("."),
            (flags & keep) | libc::O_TMPFILE,
            0o600,
        )?;
        self.finish_new_object(
            XTarget::Fd(fd.as_fd()),
            libc::S_IFREG,
            caller,
            gid,
            perm,
            access_acl.as_ref(),
            None,
        )?;
        let st = sys::fstat(fd.as_fd())?;
        self.inodes.drop_identity(st.st_dev, st.st_ino);
        let number = self.inodes.claim(st.st_dev, st.st_ino, None);
        let nodeid = self.inodes.insert_unnamed(number, libc::S_IFREG);
        let mut shown = st;
        self.show_override(XTarget::Fd(fd.as_fd()), &mut shown);
        Ok((
            Attr {
                nodeid,
                ..self.attr_from(number, shown, &[])
            },
            fd,
        ))
    }

    /// Creates a new object in the merged view. For files, also returns the open fd.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        kind: NewKind<'_>,
        mode: u32,
        umask: u32,
    ) -> SysResult<(Attr, Option<OwnedFd>)> {
        if let NewKind::Node { file_type, rdev: 0 } = kind {
            // Under the overlay form a char 0/0 is a whiteout: refused, as overlayfs does.
            if file_type == libc::S_IFCHR && self.layers.whiteout == WhiteoutForm::Overlay {
                return Err(Errno::EPERM);
            }
        }
        let _ns = self.namespace_lock.read();
        let t = self.prepare_create(parent, name)?;
        let d = t.udir.as_fd();
        let is_dir = matches!(kind, NewKind::Dir);
        // A default ACL of the parent replaces the umask (the kernel leaves both to us).
        let (perm, access_acl, gid) = self.new_object_mode(&t, caller, is_dir, mode, umask);
        t.clear_whiteout_at_name(name)?;
        let mut file = None;
        let fmt = match kind {
            NewKind::Dir => libc::S_IFDIR,
            NewKind::File(_) => libc::S_IFREG,
            NewKind::Node { file_type, .. } => file_type,
            NewKind::Symlink(_) => libc::S_IFLNK,
        };
        let finish = |target: XTarget<'_>, is_link: bool| -> SysResult<()> {
            if is_link {
                return sys::chown_target(target, caller.uid, gid);
            }
            self.finish_new_object(
                target,
                fmt,
                caller,
                gid,
                perm,
                access_acl.as_ref(),
                t.default_acl.as_ref(),
            )
        };
        match kind {
            NewKind::File(flags) => {
                let f = sys::openat(
                    d,
                    name,
                    (flags & !(libc::O_NOCTTY | libc::O_DIRECT)) | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )?;
                // Through the new file's descriptor: no second walk to its name.
                if let Err(e) = finish(XTarget::Fd(f.as_fd()), false) {
                    let _ = sys::unlinkat(d, name, false);
                    return Err(e);
                }
                file = Some(f);
            }
            NewKind::Node { file_type, rdev } => {
                sys::mknodat(d, name, file_type | 0o600, rdev)?;
                undo_on_error(finish(XTarget::At(d, name), false), d, name, false)?;
            }
            NewKind::Symlink(target) => {
                sys::symlinkat(target, d, name)?;
                undo_on_error(finish(XTarget::At(d, name), true), d, name, false)?;
            }
            NewKind::Dir if t.whiteout => {
                // mkdir over a whiteout: an opaque dir, so the old contents stay gone (S15).
                let work = self.layers.work.as_ref().ok_or(Errno::EROFS)?.as_fd();
                // Unique per call: concurrent mkdirs must never share a scratch dir.
                let tmp = super::copyup::tmp_name();
                sys::mkdirat(work, &tmp, 0o700)?;
                let built = (|| {
                    let fd = sys::openat(work, &tmp, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                    whiteout::mark_opaque(fd.as_fd(), self.layers.whiteout)?;
                    finish(XTarget::At(work, &tmp), false)?;
                    sys::renameat2(work, &tmp, d, name, sys::RENAME_NOREPLACE)
                })();
                if let Err(e) = built {
                    let _ = crate::layers::remove_tree(work, &tmp);
                    return Err(e);
                }
            }
            NewKind::Dir => {
                sys::mkdirat(d, name, 0o700)?;
                undo_on_error(finish(XTarget::At(d, name), false), d, name, true)?;
            }
        }
        t.clear_aufs_whiteout(name)?;
        // After the creation: an opener that saw the path absent before now retries.
        self.dircache.note_dir_created();
        self.index.invalidate(parent);
        Ok((self.register_new(parent, name)?, file))
    }

    /// Enters the object just created as `name` in `parent` in the inode table: whatever
    /// number its disk inode had (an object removed a moment ago, whose remover has not
    /// dropped it yet) is not its own, and it carries no recorded one.
    fn register_new(&self, parent: u64, name: &OsStr) -> SysResult<Attr> {
        let pnode = self.node(parent)?;
        let dir = self.dir_view(&pnode)?;
        let r = self.resolve_child(&dir, name)?.ok_or(Errno::ENOENT)?;
        self.inodes.drop_identity(r.st.st_dev, r.st.st_ino);
        self.inodes.claim(r.st.st_dev, r.st.st_ino, None);
        Ok(self.register(parent, &dir.path, name, r))
    }

    /// A hard link `newname` in `newparent` to the object `ino` (its source is copied up).
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> SysResult<Attr> {
        let _ns = self.namespace_lock.read();
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EPERM);
        }
        let unnamed = node.state.lock().unlinked;
        if !unnamed {
            self.check_node(ino, Change::Name)?;
        }
        let t = self.prepare_create(newparent, newname)?;
        let d = t.udir.as_fd();
        if unnamed {
            // An O_TMPFILE file (or one unlinked while open) gets a name through one of
            // its open descriptors, as linkat(AT_EMPTY_PATH) gives it one.
            let f = self.files.any_for(ino).ok_or(Errno::ENOENT)?;
            t.clear_whiteout_at_name(newname)?;
            sys::link_fd(f.fd().as_fd(), d, newname)?;
            t.clear_aufs_whiteout(newname)?;
            self.index.invalidate(newparent);
            return self.lookup_locked(newparent, newname);
        }
        self.copy_up(&node, true)?;
        let (_, path, _) = self.locate(&node)?;
        let (sdir, sname) = self.parent_fd(0, &path)?;
        t.clear_whiteout_at_name(newname)?;
        sys::linkat(sdir.as_fd(), sname, d, newname)?;
        t.clear_aufs_whiteout(newname)?;
        self.index.invalidate(newparent);
        self.lookup_locked(newparent, newname)
    }

    /// Whether some layer below the upper still shows `name` in the dir `dir`.
    pub(super) fn shown_below(&self, dir: &DirView, name: &OsStr) -> SysResult<bool> {
        let below = DirView {
            layers: dir.layers.iter().copied().filter(|l| *l != 0).collect(),
            ..dir.clone()
        };
        Ok(!below.layers.is_empty() && self.resolve_child(&below, name)?.is_some())
    }

    /// unlink(2) of a non-directory (S14).
    pub fn unlink(&self, parent: u64, name: &OsStr) -> SysResult<()> {
        self.remove(parent, name, false)
    }

    /// rmdir(2) of an empty merged directory (S14).
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> SysResult<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        if whiteout::is_reserved_name(name) {
            return Err(Errno::ENOENT);
        }
        let _ns = self.namespace_lock.read();
        let pnode = self.node(parent)?;
        let pdir = self.dir_view(&pnode)?;
        let ppath = pdir.path.clone();
        let r = self.resolve_child(&pdir, name)?.ok_or(Errno::ENOENT)?;
        // Protections come before the type checks, as in the VFS's may_delete.
        self.check_dir(&pdir, Change::RemoveFrom)?;
        self.check_entry(&pdir, name, &r, Change::Name)?;
        let is_dir = r.kind() == libc::S_IFDIR;
        if dir && !is_dir {
            return Err(Errno::ENOTDIR);
        }
        if !dir && is_dir {
            return Err(Errno::EISDIR);
        }
        let cpath = super::join(&ppath, name);
        if dir && !self.merged_is_empty(&pdir.child(name, &r))? {
            return Err(Errno::ENOTEMPTY);
        }
        self.copy_up(&pnode, true)?;
        let udir = self.dir_fd(0, &ppath)?;
        let d = udir.as_fd();
        let in_upper = r.layer == 0;
        // An object of a layer below is shown there by definition.
        let need_whiteout = !in_upper || self.shown_below(&self.dir_view(&pnode)?, name)?;
        let number = self.number_of(&r, &ppath, name);
        self.keep_removed_dir(number, &cpath, &r);
        self.remove_entry(d, name, in_upper, is_dir, need_whiteout)?;
        self.index.invalidate(parent);
        if is_dir {
            self.dircache.invalidate(0, &cpath);
        }
        if in_upper && (is_dir || r.st.st_nlink <= 1) {
            self.inodes
                .drop_identity_of(r.st.st_dev, r.st.st_ino, number);
        }
        self.inodes
            .remove_name(number, parent, &name.to_os_string());
        Ok(())
    }

    /// Takes `name` out of the upper dir `d`, leaving a whiteout where a lower shows it.
    fn remove_entry(
        &self,
        d: BorrowedFd<'_>,
        name: &OsStr,
        in_upper: bool,
        is_dir: bool,
        need_whiteout: bool,
    ) -> SysResult<()> {
        let form = self.layers.whiteout;
        let at_name = whiteout::whiteout_at_name(form, name);
        if need_whiteout && !at_name {
            whiteout::write_whiteout(d, name, form, self.workdir())?;
        }
        if in_upper {
            if is_dir {
                let sub = sys::openat(d, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                crate::layers::remove_contents(sub.as_fd())?;
            }
            sys::unlinkat(d, name, is_dir)?;
        }
        if need_whiteout && at_name {
            whiteout::write_whiteout(d, name, form, self.workdir())?;
        }
        Ok(())
    }

    /// The node of a resolved entry, entering it in the table if the kernel never looked
    /// it up (renames can name entries the kernel has not cached). Holds no extra reference.
    pub(super) fn node_or_register(
        &self,
        parent: u64,
        name: &OsStr,
        number: u64,
    ) -> SysResult<std::sync::Arc<super::inodes::Node>> {
        if let Some(n) = self.inodes.get(number) {
            // A hard link known by several names: the one being renamed is the one used.
            n.promote_name(parent, name);
            return Ok(n);
        }
        let a = self.lookup_locked(parent, name)?;
        let n = self.node(number)?;
        self.inodes.forget(a.nodeid, 1);
        Ok(n)
    }
}
