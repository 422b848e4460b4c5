//! Open files and attributes: open (copy-up on the first write-open, S2/S10), the file
//! handle table, data I/O, setattr, xattrs (private ones hidden, S8) and access checks.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;

use super::datacopy::CopyMode;
use super::protect::Change;
use super::{Attr, Caller, Union};
use crate::sys::{self, Errno, SysResult, TimeSpec, XTarget};

pub struct OpenFile {
    pub ino: u64,
    /// The layer file, and whether it is still a lower copy (a read-only open made
    /// before a copy-up moves to the upper copy then, as overlayfs does).
    target: RwLock<(Arc<OwnedFd>, bool)>,
    /// The kernel opened it to execute it (execve): the running program's text, which no
    /// truncation may reach while it runs.
    exec: bool,
}

impl OpenFile {
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.target.read().0.clone()
    }
}

#[derive(Default)]
pub struct Handles {
    map: DashMap<u64, Arc<OpenFile>>,
    next: AtomicU64,
}

impl Handles {
    pub fn insert(&self, ino: u64, fd: OwnedFd, from_lower: bool, exec: bool) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.insert(
            fh,
            Arc::new(OpenFile {
                ino,
                target: RwLock::new((Arc::new(fd), from_lower)),
                exec,
            }),
        );
        fh
    }

    /// Whether a program is running from the object `ino` (an exec open is live).
    pub fn executing(&self, ino: u64) -> bool {
        self.map.iter().any(|e| e.ino == ino && e.exec)
    }

    /// The object `ino` was copied up: its handles still on the lower copy read the upper
    /// copy from now on (`reopen` opens it read-only).
    pub fn retarget(&self, ino: u64, reopen: impl Fn() -> SysResult<OwnedFd>) -> SysResult<()> {
        let handles: Vec<Arc<OpenFile>> = self
            .map
            .iter()
            .filter(|e| e.ino == ino && e.target.read().1)
            .map(|e| e.value().clone())
            .collect();
        for h in handles {
            *h.target.write() = (Arc::new(reopen()?), false);
        }
        Ok(())
    }
    /// The handle `fh` keeps the copy it was opened on, even across a copy-up: the kernel
    /// reads it in passthrough from that copy (S28), so whatever the daemon serves for it
    /// (lseek SEEK_DATA, copy_file_range) must come from the same copy.
    pub fn keep_copy(&self, fh: u64) {
        if let Some(f) = self.map.get(&fh) {
            f.target.write().1 = false;
        }
    }

    pub fn get(&self, fh: u64) -> SysResult<Arc<OpenFile>> {
        self.map.get(&fh).map(|f| f.clone()).ok_or(Errno::EBADF)
    }
    /// How many files are open.
    pub fn open_count(&self) -> usize {
        self.map.len()
    }

    /// Some open handle of inode `ino` (for objects unlinked while open).
    pub fn any_for(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.map
            .iter()
            .find(|e| e.ino == ino)
            .map(|e| e.value().clone())
    }
    /// Drops a handle; returns its file if it was open.
    pub fn remove(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.map.remove(&fh).map(|(_, f)| f)
    }
}

/// The changes of a setattr call; `None` leaves a field alone.
#[derive(Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl SetAttr {
    /// The change this setattr makes, as the protection rules see it.
    fn change(&self) -> Option<Change> {
        let explicit_time =
            matches!(self.atime, TimeSpec::At(..)) || matches!(self.mtime, TimeSpec::At(..));
        if self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.size.is_some()
            || explicit_time
        {
            Some(Change::Attributes)
        } else if self.atime.changes() || self.mtime.changes() {
            Some(Change::Touch)
        } else {
            None
        }
    }
}

/// open(2) flags a layer file may be opened with: creation is ours, O_DIRECT would demand
/// aligned buffers from the daemon.
fn layer_open_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_DIRECT)
}

/// The mode once an unprivileged caller truncates or writes a file: setuid always goes;
/// setgid goes with group exec, or when the caller is not of the file's group (the
/// kernel's setattr_should_drop_sgid; supplementary groups are not known here).
fn drop_privileges(mode: u32, gid: u32, caller: Caller) -> u32 {
    let mut m = mode & 0o7777 & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 || caller.gid != gid {
        m &= !libc::S_ISGID;
    }
    m
}

/// The bit of an open's flags that says the kernel opens the file to execute it
/// (`__FMODE_EXEC`, which FUSE passes on in OPEN's flags; the libc crate lacks it).
const FMODE_EXEC: i32 = 0o40;

fn is_write_open(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl Union {
    /// Opens a file; a write-open of a lower file copies it up first.
    /// Returns the handle and whether the opened copy can change (upper or init layer); a
    /// lower copy's content never changes while it is open from there.
    pub fn open(&self, caller: Caller, ino: u64, flags: i32) -> SysResult<(u64, bool)> {
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        if is_write_open(flags) {
            if self.read_only() {
                return Err(Errno::EROFS);
            }
            self.check_node(ino, Change::WriteOpen(flags))?;
            // The kernel refuses a write-open of a running program itself (ETXTBSY) before
            // asking us, but checks a read-only O_TRUNC open only after we have opened it,
            // and FUSE_ATOMIC_O_TRUNC has us truncate at the open: that one is refused
            // here, before anything is truncated or copied up.
            let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
            if read_only && flags & libc::O_TRUNC != 0 && self.files.executing(ino) {
                return Err(Errno(libc::ETXTBSY));
            }
            self.make_writable(
                &node,
                if flags & libc::O_TRUNC == 0 {
                    CopyMode::Data
                } else {
                    CopyMode::NoData
                },
            )?;
        }
        let (mut layer, mut path, s) = self.locate(&node)?;
        if let Some((dl, dp)) = s.data {
            // Metadata-only copy: the data is still the lower's.
            (layer, path) = (dl, dp);
        }
        let (dfd, name) = self.parent_fd(layer, &path)?;
        let mut layer_flags = layer_open_flags(flags);
        if self.behaviour.noatime {
            // Reads through this descriptor (ours, or the kernel's in passthrough, exec
            // and mmap included) leave the layer file's atime alone, as the mount asks.
            layer_flags |= libc::O_NOATIME;
        }
        let fd = match sys::openat(dfd.as_fd(), name, layer_flags, 0) {
            // O_NOATIME is the owner's (or CAP_FOWNER's) to ask.
            Err(Errno::EPERM) if layer_flags & libc::O_NOATIME != 0 => {
                sys::openat(dfd.as_fd(), name, layer_flags & !libc::O_NOATIME, 0)?
            }
            r => r?,
        };
        let mutable = self.is_writable_layer(layer);
        if is_write_open(flags) && !caller.root {
            // An unprivileged writer: setuid/setgid go at the open, not at the first write
            // as on ext4, because the writes may never reach the daemon (passthrough, whose
            // backing writes run with the daemon's CAP_FSETID) and the kernel leaves the
            // dropping to us (FUSE_HANDLE_KILLPRIV_V2).
            self.drop_privileges_of(ino, fd.as_fd(), caller)?;
        }
        let exec = flags & FMODE_EXEC != 0;
        Ok((self.files.insert(ino, fd, !mutable, exec), mutable))
    }

    /// Drops setuid/setgid of the open file of `ino` as a write by `caller` does, and
    /// tells the kernel.
    fn drop_privileges_of(&self, ino: u64, fd: BorrowedFd<'_>, caller: Caller) -> SysResult<()> {
        let st = sys::fstat(fd)?;
        let dropped = drop_privileges(st.st_mode, st.st_gid, caller);
        if dropped != st.st_mode & 0o7777 {
            sys::fchmod(fd, dropped)?;
            self.attributes_changed(ino);
        }
        Ok(())
    }

    /// The layer file an open handle reads and writes (the kernel's passthrough backing).
    pub fn open_file_fd(&self, fh: u64) -> SysResult<Arc<OwnedFd>> {
        Ok(self.files.get(fh)?.fd())
    }

    /// The handle `fh` keeps the copy it was opened on across a copy-up (`Handles::keep_copy`).
    pub fn keep_copy(&self, fh: u64) {
        self.files.keep_copy(fh)
    }

    /// Registers the fd of a freshly created file as an open handle.
    pub fn adopt_open(&self, ino: u64, fd: OwnedFd) -> u64 {
        self.files.insert(ino, fd, false, false)
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> SysResult<Vec<u8>> {
        let f = self.files.get(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            let n = sys::pread(f.fd().as_fd(), &mut buf[got..], off + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> SysResult<u32> {
        let f = self.files.get(fh)?;
        let mut done = 0;
        while done < data.len() {
            done += sys::pwrite(f.fd().as_fd(), &data[done..], off + done as u64)?;
        }
        Ok(done as u32)
    }

    /// Closes an open file. One that was open for writing may have changed its data and
    /// times where no request showed it (a shared writable mmap of a passthrough file
    /// writes to the layer file directly): the kernel's cached attributes go (S27).
    pub fn release(&self, fh: u64, was_writable: bool) {
        if let (true, Some(f)) = (was_writable, self.files.remove(fh)) {
            self.attributes_changed(f.ino);
        }
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> SysResult<()> {
        if !self.behaviour.syncs() {
            return Ok(());
        }
        sys::fsync(self.files.get(fh)?.fd().as_fd(), datasync)
    }

    /// fsyncdir: the directory's upper copy, where it has one, reaches the disk.
    pub fn fsyncdir(&self, ino: u64) -> SysResult<()> {
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        let (layer, path, _) = self.locate(&node)?;
        if layer != 0 || self.read_only() || !self.behaviour.syncs() {
            return Ok(());
        }
        let d = self.dir_fd(0, &path)?;
        let f = sys::reopen(d.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        sys::fsync(f.as_fd(), false)
    }

    /// fallocate; punching, zeroing, collapsing or inserting count as a rewrite. An
    /// unprivileged caller loses setuid/setgid as with a write (the kernel's
    /// file_modified, left to us under FUSE_HANDLE_KILLPRIV_V2).
    pub fn fallocate(
        &self,
        caller: Caller,
        fh: u64,
        mode: i32,
        off: u64,
        len: u64,
    ) -> SysResult<()> {
        let f = self.files.get(fh)?;
        let fd = f.fd();
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            let _ns = self.namespace_lock.read();
            self.check_node(f.ino, Change::Attributes)?;
        }
        if !caller.root {
            self.drop_privileges_of(f.ino, fd.as_fd(), caller)?;
        }
        sys::fallocate(fd.as_fd(), mode, off, len)
    }

    pub fn lseek(&self, fh: u64, off: i64, whence: i32) -> SysResult<i64> {
        sys::lseek(self.files.get(fh)?.fd().as_fd(), off, whence)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> SysResult<u32> {
        let a = self.files.get(fh_in)?;
        let b = self.files.get(fh_out)?;
        // The VFS refuses to copy into an immutable file, which it can only know from us
        // (a FUSE inode carries no flags): also when it became immutable while open.
        let protected = {
            let _ns = self.namespace_lock.read();
            self.check_node(b.ino, Change::Attributes) == Err(Errno::EPERM)
        };
        if protected {
            return Err(Errno::EPERM);
        }
        let want = len.min(1 << 30) as usize;
        let n = sys::copy_file_range(a.fd().as_fd(), off_in, b.fd().as_fd(), off_out, want)?;
        Ok(n as u32)
    }

    /// setattr: copy-up (no data when truncating to zero), then each change on the upper.
    /// setattr. A truncate by an unprivileged caller drops setuid/setgid as ext4 does: the
    /// kernel leaves that to us (FUSE_HANDLE_KILLPRIV_V2), and the daemon's own truncate,
    /// made with CAP_FSETID, would keep them.
    pub fn setattr(
        &self,
        caller: Caller,
        ino: u64,
        fh: Option<u64>,
        ch: SetAttr,
    ) -> SysResult<Attr> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        if node.state.lock().unlinked {
            return self.setattr_unlinked(ino, ch);
        }
        match ch.change() {
            Some(change) => self.check_node(ino, change)?,
            None => {
                // A kill-only setattr (see below): nothing to do, and no copy-up, where
                // there is no setuid/setgid bit to drop.
                let now = self.getattr_node(&node)?;
                if now.st.st_mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
                    return Ok(now);
                }
                self.check_node(ino, Change::Attributes)?;
            }
        }
        self.make_writable(
            &node,
            match ch.size {
                Some(0) => CopyMode::NoData,
                Some(_) => CopyMode::Data,
                None => CopyMode::Meta,
            },
        )?;
        let (layer, path, s) = self.locate(&node)?;
        let (dfd, name) = self.parent_fd(layer, &path)?;
        let d = dfd.as_fd();
        if let Some(size) = ch.size {
            if s.kind == libc::S_IFDIR {
                return Err(Errno::EISDIR);
            }
            let f = match fh.and_then(|h| self.files.get(h).ok()) {
                Some(f) if sys::ftruncate(f.fd().as_fd(), size).is_ok() => f.fd(),
                _ => {
                    let f = sys::openat(d, name, libc::O_WRONLY, 0)?;
                    sys::ftruncate(f.as_fd(), size)?;
                    Arc::new(f)
                }
            };
            if !caller.root && ch.mode.is_none() {
                self.drop_privileges_of(ino, f.as_fd(), caller)?;
            }
        }
        if ch.change().is_none() {
            // Nothing to set: the kernel asks for setuid/setgid (and file capabilities)
            // to go, as chown does (chown(-1, -1), or a chown the kernel turned into that
            // under FUSE_HANDLE_KILLPRIV_V2). A chown to the same owner does exactly that.
            sys::fchownat(d, name, u32::MAX, u32::MAX)?;
        }
        let mode = ch.mode.filter(|_| s.kind != libc::S_IFLNK);
        self.set_owner_and_mode(XTarget::At(d, name), ch.uid, ch.gid, mode)?;
        if ch.atime.changes() || ch.mtime.changes() {
            sys::utimensat(d, name, ch.atime, ch.mtime)?;
        }
        self.getattr_node(&node)
    }

    /// setattr of an object unlinked while open: through one of its open descriptors.
    fn setattr_unlinked(&self, ino: u64, ch: SetAttr) -> SysResult<Attr> {
        let f = self.files.any_for(ino).ok_or(Errno::ENOENT)?;
        let fd = f.fd();
        let fd = fd.as_fd();
        if let Some(size) = ch.size {
            sys::ftruncate(fd, size)?;
        }
        self.set_owner_and_mode(XTarget::Fd(fd), ch.uid, ch.gid, ch.mode)?;
        if ch.atime.changes() || ch.mtime.changes() {
            sys::utimens_fd(fd, ch.atime, ch.mtime)?;
        }
        let mut st = sys::fstat(fd)?;
        self.show_override(XTarget::Fd(fd), &mut st);
        Ok(self.attr_from(ino, st, &[]))
    }

    /// Runs `f` on the xattr target of a node's current copy.
    fn with_xtarget<T>(
        &self,
        ino: u64,
        f: impl FnOnce(XTarget<'_>) -> SysResult<T>,
    ) -> SysResult<T> {
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        let (layer, path, _) = self.locate(&node)?;
        self.xtarget_at(layer, &path, f)
    }

    pub(super) fn xtarget_at<T>(
        &self,
        layer: usize,
        path: &OsStr,
        f: impl FnOnce(XTarget<'_>) -> SysResult<T>,
    ) -> SysResult<T> {
        if path.is_empty() {
            return f(XTarget::Fd(self.layers.layers[layer].fd()));
        }
        let (dfd, name) = self.parent_fd(layer, path)?;
        let d: BorrowedFd<'_> = dfd.as_fd();
        f(XTarget::At(d, name))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> SysResult<Vec<u8>> {
        if self.is_hidden_xattr(name) {
            return Err(Errno::ENODATA);
        }
        self.with_xtarget(ino, |t| sys::getxattr(t, name))
    }

    /// listxattr: private names never show (S8), and `trusted.*` names only to a caller
    /// with CAP_SYS_ADMIN, as every kernel filesystem lists them.
    pub fn listxattr(&self, caller: Caller, ino: u64) -> SysResult<Vec<OsString>> {
        let mut names = self.with_xtarget(ino, sys::listxattr)?;
        names.retain(|n| !self.is_hidden_xattr(n));
        let is_trusted = |n: &OsString| n.as_bytes().starts_with(b"trusted.");
        // The capability is looked up only when there is something to hide.
        if names.iter().any(is_trusted) && !caller.is_admin() {
            names.retain(|n| !is_trusted(n));
        }
        Ok(names)
    }

    /// setxattr(2) with XATTR_CREATE / XATTR_REPLACE `flags`; copies up first.
    pub fn setxattr(
        &self,
        caller: Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> SysResult<()> {
        self.change_xattr(caller, ino, name, Some((value, flags)))
    }

    /// removexattr(2); copies up first.
    pub fn removexattr(&self, caller: Caller, ino: u64, name: &OsStr) -> SysResult<()> {
        self.change_xattr(caller, ino, name, None)
    }

    /// Sets (`value` with its flags) or removes (None) the xattr `name`.
    fn change_xattr(
        &self,
        caller: Caller,
        ino: u64,
        name: &OsStr,
        value: Option<(&[u8], i32)>,
    ) -> SysResult<()> {
        if self.is_hidden_xattr(name) {
            return Err(if value.is_some() {
                Errno::EPERM
            } else {
                Errno::ENODATA
            });
        }
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        self.check_node(ino, Change::Attributes)?;
        self.make_writable(&node, CopyMode::Meta)?;
        let (layer, path, _) = self.locate(&node)?;
        self.xtarget_at(layer, &path, |t| match value {
            Some((v, flags)) => sys::setxattr(t, name, v, flags),
            None => sys::removexattr(t, name),
        })?;
        if value.is_some() && name == OsStr::new(crate::acl::ACCESS_XATTR) {
            self.kill_sgid_after_acl(caller, layer, &path)?;
        }
        Ok(())
    }

    /// Setting an access ACL updates the mode (the layer's filesystem does it, as the
    /// daemon); as for chmod, a caller outside the file's group and without CAP_FSETID
    /// loses the setgid bit then (posix_acl_update_mode; the kernel leaves it to FUSE
    /// filesystems).
    fn kill_sgid_after_acl(&self, caller: Caller, layer: usize, path: &OsStr) -> SysResult<()> {
        let st = self.stat_in(layer, path)?;
        if st.st_mode & libc::S_ISGID == 0 || caller.in_group_or_capable(st.st_gid) {
            return Ok(());
        }
        let (dfd, name) = self.parent_fd(layer, path)?;
        sys::fchmodat(dfd.as_fd(), name, st.st_mode & 0o7777 & !libc::S_ISGID)
    }

    /// Xattrs the merged view never shows: the union's own (S8), and the override xattrs
    /// where the mount reads them.
    fn is_hidden_xattr(&self, name: &OsStr) -> bool {
        crate::private_xattrs::is_private(name) || self.is_override_name(name)
    }

    /// access(2) for mounts without default_permissions: the mode bits of the merged view.
    pub fn access(&self, caller: Caller, ino: u64, mask: i32) -> SysResult<()> {
        let a = self.getattr(ino)?;
        if mask & libc::W_OK != 0 && self.read_only() {
            return Err(Errno::EROFS);
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        let m = a.st.st_mode;
        if caller.root {
            let any_x = m & 0o111 != 0 || m & libc::S_IFMT == libc::S_IFDIR;
            return if mask & libc::X_OK != 0 && !any_x {
                Err(Errno::EACCES)
            } else {
                Ok(())
            };
        }
        let bits = if a.st.st_uid == caller.uid {
            (m >> 6) & 7
        } else if a.st.st_gid == caller.gid {
            (m >> 3) & 7
        } else {
            m & 7
        };
        if (mask as u32) & !bits & 7 != 0 {
            return Err(Errno::EACCES);
        }
        Ok(())
    }
}
