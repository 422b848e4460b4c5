//! rename(2) of files and merged directories, with RENAME_NOREPLACE and RENAME_EXCHANGE
//! (S16), in four named steps: resolve and check both ends (`plan`), bring everything
//! involved into the upper (`copy_ups`), then either swap the two (`exchange`) or move the
//! source over the target (`replace`), hiding what the lowers still show at either name.
//!
//! Ordering keeps every step crash-consistent, as in namespace.rs: a whiteout is written
//! before the upper object it stands in for moves away.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::inodes::Node;
use super::protect::Change;
use super::{check_name, DirView, Resolved, Union};
use crate::sys::{self, Errno, SysResult};
use crate::whiteout;
use crate::whiteout::WhiteoutForm;

/// Both ends of a rename, resolved and checked.
struct Plan<'a> {
    parent: u64,
    name: &'a OsStr,
    newparent: u64,
    newname: &'a OsStr,
    exchange: bool,
    pnode: Arc<Node>,
    npnode: Arc<Node>,
    pdir: DirView,
    npdir: DirView,
    src: Resolved,
    dst: Option<Resolved>,
    src_no: u64,
    dst_no: Option<u64>,
}

impl Plan<'_> {
    fn src_dir(&self) -> bool {
        self.src.kind() == libc::S_IFDIR
    }

    fn dst_dir(&self) -> bool {
        self.dst.as_ref().is_some_and(|d| d.kind() == libc::S_IFDIR)
    }
}

/// The upper dirs of both ends once everything is in the upper, with their merged views.
struct Placed<'f> {
    od: BorrowedFd<'f>,
    nd: BorrowedFd<'f>,
    /// The merged views of the old and new parent after the copy-ups.
    pl: DirView,
    npl: DirView,
}

impl Union {
    /// rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE (S16).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        if flags & !(sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE) != 0
            || flags == sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
        }
        if whiteout::is_reserved_name(name) {
            return Err(Errno::ENOENT);
        }
        check_name(newname)?;
        if whiteout::is_reserved_name(newname) {
            return Err(Errno::EPERM);
        }
        // Renames change paths of whole subtrees: nothing else computes a path meanwhile.
        let _ns = self.namespace_lock.write();
        let Some(plan) = self.plan(parent, name, newparent, newname, flags)? else {
            return Ok(());
        };
        let redirected = self.copy_ups(&plan)?;
        let od = self.dir_fd(0, &plan.pdir.path)?;
        let nd = self.dir_fd(0, &plan.npdir.path)?;
        let placed = Placed {
            od: od.as_fd(),
            nd: nd.as_fd(),
            pl: self.dir_view(&plan.pnode)?,
            npl: self.dir_view(&plan.npnode)?,
        };
        self.index.invalidate(parent);
        self.index.invalidate(newparent);
        if plan.exchange {
            self.exchange(&plan, &placed)
        } else {
            self.replace(&plan, &placed, redirected)
        }
    }

    /// Resolves both ends and checks the rename as the VFS and the filesystem would:
    /// None when it is a no-op (a name renamed onto itself).
    fn plan<'a>(
        &self,
        parent: u64,
        name: &'a OsStr,
        newparent: u64,
        newname: &'a OsStr,
        flags: u32,
    ) -> SysResult<Option<Plan<'a>>> {
        let pnode = self.node(parent)?;
        let npnode = self.node(newparent)?;
        let pdir = self.dir_view(&pnode)?;
        let npdir = self.dir_view(&npnode)?;
        let src = self.resolve_child(&pdir, name)?.ok_or(Errno::ENOENT)?;
        let dst = self.resolve_child(&npdir, newname)?;
        let src_no = self.number_of(&src, &pdir.path, name);
        let exchange = flags & sys::RENAME_EXCHANGE != 0;
        if parent == newparent && name == newname {
            return if dst.is_some() || !exchange {
                Ok(None)
            } else {
                Err(Errno::ENOENT)
            };
        }
        let dst_no = dst
            .as_ref()
            .map(|d| self.number_of(d, &npdir.path, newname));
        let plan = Plan {
            parent,
            name,
            newparent,
            newname,
            exchange,
            pnode,
            npnode,
            pdir,
            npdir,
            src,
            dst,
            src_no,
            dst_no,
        };
        if plan.src_dir() {
            self.check_not_into_itself(&plan)?;
        }
        match &plan.dst {
            Some(_) if flags & sys::RENAME_NOREPLACE != 0 => return Err(Errno::EEXIST),
            None if exchange => return Err(Errno::ENOENT),
            _ => {}
        }
        self.check_rename_protections(&plan)?;
        if let (Some(d), false) = (&plan.dst, exchange) {
            let (src_dir, dst_dir) = (plan.src_dir(), plan.dst_dir());
            if src_dir && !dst_dir {
                return Err(Errno::ENOTDIR);
            }
            if !src_dir && dst_dir {
                return Err(Errno::EISDIR);
            }
            if dst_dir && !self.merged_is_empty(&plan.npdir.child(newname, d))? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        Ok(Some(plan))
    }

    /// A directory cannot move into itself.
    fn check_not_into_itself(&self, plan: &Plan<'_>) -> SysResult<()> {
        let mut cur = plan.newparent;
        while cur != super::inodes::ROOT_INO {
            if cur == plan.src_no {
                return Err(Errno::EINVAL);
            }
            cur = self
                .node(cur)?
                .snapshot()
                .names
                .first()
                .map(|(p, _)| *p)
                .ok_or(Errno::ENOENT)?;
        }
        Ok(())
    }

    /// Protections come before the type checks, as in the VFS's may_delete.
    fn check_rename_protections(&self, plan: &Plan<'_>) -> SysResult<()> {
        self.check_dir(&plan.pdir, Change::RemoveFrom)?;
        self.check_entry(&plan.pdir, plan.name, &plan.src, Change::Name)?;
        self.check_dir(&plan.npdir, Change::CreateIn)?;
        if let Some(d) = &plan.dst {
            self.check_dir(&plan.npdir, Change::RemoveFrom)?;
            self.check_entry(&plan.npdir, plan.newname, d, Change::Name)?;
            if plan.exchange {
                self.check_dir(&plan.pdir, Change::CreateIn)?;
            }
        }
        Ok(())
    }

    /// Brings both parents, the source and (for an exchange) the target into the upper.
    /// Returns whether the source is a merged directory that moves with a redirect
    /// (redirect_dir=on: O(1) whatever its size) instead of being copied up whole.
    fn copy_ups(&self, plan: &Plan<'_>) -> SysResult<bool> {
        self.copy_up(&plan.pnode, true)?;
        self.copy_up(&plan.npnode, true)?;
        let src_node = self.node_or_register(plan.parent, plan.name, plan.src_no)?;
        let redirected = plan.src_dir()
            && !plan.exchange
            && self.behaviour.redirect_dir
            && plan.src.dir_layers.iter().any(|l| *l != 0);
        if redirected {
            self.copy_up(&src_node, true)?;
            let s = src_node.snapshot();
            let od = self.dir_fd(0, &plan.pdir.path)?;
            whiteout::set_redirect(od.as_fd(), plan.name, &s.lower_path)?;
        } else if plan.src_dir() {
            self.copy_up_tree(&src_node)?;
        } else {
            self.copy_up(&src_node, true)?;
        }
        if let (true, Some(no)) = (plan.exchange, plan.dst_no) {
            let dn = self.node_or_register(plan.newparent, plan.newname, no)?;
            if dn.is_dir() {
                self.copy_up_tree(&dn)?;
            } else {
                self.copy_up(&dn, true)?;
            }
        }
        Ok(redirected)
    }

    /// RENAME_EXCHANGE: both are complete in the upper by now; each directory lands where
    /// a lower may show a directory of the same name, which it must hide.
    fn exchange(&self, plan: &Plan<'_>, at: &Placed<'_>) -> SysResult<()> {
        let form = self.layers.whiteout;
        let (name, newname) = (plan.name, plan.newname);
        if plan.src_dir() && self.shown_below(&at.npl, newname)? {
            let f = sys::openat(at.od, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            whiteout::mark_opaque(f.as_fd(), form)?;
        }
        if plan.dst_dir() && self.shown_below(&at.pl, name)? {
            let f = sys::openat(at.nd, newname, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            whiteout::mark_opaque(f.as_fd(), form)?;
        }
        sys::renameat2(at.od, name, at.nd, newname, sys::RENAME_EXCHANGE)?;
        self.dircache.note_dir_created();
        self.dircache
            .invalidate(0, &super::join(&plan.pdir.path, name));
        self.dircache
            .invalidate(0, &super::join(&plan.npdir.path, newname));
        if let Some(dn) = plan.dst_no {
            self.inodes.rename_name(
                dn,
                (plan.newparent, &newname.to_os_string()),
                (plan.parent, name.into()),
            );
        }
        self.inodes.rename_name(
            plan.src_no,
            (plan.parent, &name.to_os_string()),
            (plan.newparent, newname.into()),
        );
        Ok(())
    }

    /// A plain rename: the source leaves its name (a whiteout where a lower shows it there)
    /// and replaces whatever is at the new name, hiding what the lowers show there.
    fn replace(&self, plan: &Plan<'_>, at: &Placed<'_>, redirected: bool) -> SysResult<()> {
        let form = self.layers.whiteout;
        let (od, nd) = (at.od, at.nd);
        let (name, newname) = (plan.name, plan.newname);
        let old_path = super::join(&plan.pdir.path, name);
        let new_path = super::join(&plan.npdir.path, newname);
        let src_dir = plan.src_dir();
        let old_needs_wh = self.shown_below(&at.pl, name)?;
        let dst_in_upper = sys::fstatat(nd, newname)
            .map(|st| !whiteout::entry_is_whiteout(&st, true, form, nd, newname))
            .unwrap_or(false);
        if let (true, Some(d)) = (src_dir, &plan.dst) {
            // Replacing an (empty) merged dir: its lower contents must not show through.
            if !redirected
                && (d.dir_layers.iter().any(|l| *l != 0) || self.shown_below(&at.npl, newname)?)
            {
                let sfd = sys::openat(od, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                whiteout::mark_opaque(sfd.as_fd(), form)?;
            }
            if dst_in_upper {
                let sub = sys::openat(nd, newname, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                crate::layers::remove_contents(sub.as_fd())?;
            }
        } else if src_dir && !redirected && self.shown_below(&at.npl, newname)? {
            let sfd = sys::openat(od, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            whiteout::mark_opaque(sfd.as_fd(), form)?;
        }
        let old_at_name = whiteout::whiteout_at_name(form, name);
        if old_needs_wh && !old_at_name {
            whiteout::write_whiteout(od, name, form, self.workdir())?;
        }
        if !dst_in_upper
            && whiteout::whiteout_at_name(form, newname)
            && sys::fstatat(nd, newname).is_ok()
        {
            // An overlay whiteout at the target: a directory cannot replace it in one step.
            sys::unlinkat(nd, newname, false)?;
        }
        if let (Some(dn), Some(d)) = (plan.dst_no, &plan.dst) {
            self.keep_removed_dir(dn, &new_path, d);
        }
        sys::renameat2(od, name, nd, newname, 0)?;
        self.dircache.note_dir_created();
        if form == WhiteoutForm::Aufs {
            // The new entry hides the lowers itself (a dir was made opaque above): a
            // whiteout left beside it would only be noise in diff and commit (S15).
            whiteout::remove_aufs_whiteout(nd, newname)?;
        }
        if src_dir {
            self.dircache.invalidate(0, &old_path);
            self.dircache.invalidate(0, &new_path);
        }
        if old_needs_wh && old_at_name {
            whiteout::write_whiteout(od, name, form, self.workdir())?;
        }
        if let (Some(dn), Some(d)) = (plan.dst_no, &plan.dst) {
            // The replaced object is gone from the upper (a directory always is): a new
            // object reusing its disk inode must not inherit its number.
            if d.layer == 0 && (d.kind() == libc::S_IFDIR || d.st.st_nlink <= 1) {
                self.inodes.drop_identity_of(d.st.st_dev, d.st.st_ino, dn);
            }
            self.inodes
                .remove_name(dn, plan.newparent, &newname.to_os_string());
        }
        self.inodes.rename_name(
            plan.src_no,
            (plan.parent, &name.to_os_string()),
            (plan.newparent, newname.into()),
        );
        Ok(())
    }
}
