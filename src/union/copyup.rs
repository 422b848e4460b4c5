//! Copy-up (S10-S12): the first change to an object of a lower layer copies it into the
//! upper. The copy is built in the workdir and renamed into place, so a crash leaves the
//! old view or the whole new object. Data is reflinked where the filesystem can, else
//! copied extent by extent so holes stay holes; an O_TRUNC open copies no data. The copy
//! records the object's inode number (`Private::Ino`), which it keeps for good.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::datacopy::{copy_data, copy_xattrs, CopyMode};
use super::inodes::Node;
use super::protect::{self, Protection};
use super::{DirView, Resolved, Union};
use crate::override_stat::OverrideStat;
use crate::private_xattrs::Private;
use crate::sys::{self, Errno, Stat, SysResult, XTarget};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A scratch name in the workdir, unique for the life of the process.
pub(super) fn tmp_name() -> OsString {
    OsString::from(format!(
        "cu.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The inode flags a copy carries, as overlayfs carries them: sync and noatime on the
/// copy itself (immutable and append-only go to the copy's protection xattr instead).
fn copy_carried_flags(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) {
    let carried = sys::get_flags(src).unwrap_or(0) & (sys::FS_SYNC_FL | sys::FS_NOATIME_FL);
    if carried != 0 {
        let have = sys::get_flags(dst).unwrap_or(0);
        let _ = sys::set_flags(dst, have | carried);
    }
}

/// Records on a copy being built the inode number of the object it copies, so that a later
/// mount gives the copy its origin's number (see `inodes`). A number that would not mean
/// the same at the next mount is not recorded. Best effort: a copy the upper refuses the
/// xattr (no trusted.* names, no room) is still a good copy, it only gets a number of its
/// own after a remount.
fn record_number(t: XTarget<'_>, number: u64) {
    if super::inodes::is_stable_number(number) {
        let v = number.to_string();
        let _ = sys::setxattr(t, Private::Ino.name(), v.as_bytes(), 0);
    }
}

/// The inode number recorded on the upper object `name` in `dir` by its copy-up.
pub(super) fn recorded_number(dir: BorrowedFd<'_>, name: &OsStr) -> Option<u64> {
    let v = sys::getxattr(XTarget::At(dir, name), Private::Ino.name()).ok()?;
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(&v).ok()?.parse().ok()?;
    super::inodes::is_stable_number(n).then_some(n)
}

fn time_of(sec: i64, nsec: i64) -> sys::TimeSpec {
    sys::TimeSpec::At(sec, nsec)
}

impl Union {
    /// Makes sure `node` has its own copy in the upper (S10). Callers hold `namespace_lock` shared.
    pub(super) fn copy_up(&self, node: &Node, with_data: bool) -> SysResult<()> {
        self.copy_up_as(
            node,
            if with_data {
                CopyMode::Data
            } else {
                CopyMode::NoData
            },
        )
    }

    pub(super) fn copy_up_as(&self, node: &Node, mode: CopyMode) -> SysResult<()> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        {
            let st = node.state.lock();
            if st.layer == 0 && (st.data.is_none() || mode == CopyMode::Meta) {
                return Ok(());
            }
        }
        let _one = node.copyup.lock();
        let s = node.snapshot();
        if s.layer == 0 {
            return match (&s.data, mode) {
                (Some(origin), CopyMode::Data | CopyMode::NoData) => {
                    self.complete_metacopy(node, origin, mode == CopyMode::Data)
                }
                _ => Ok(()),
            };
        }
        let (parent, _) = s.names.first().cloned().ok_or(Errno::ENOENT)?;
        let pnode = self.node(parent)?;
        self.copy_up(&pnode, true)?;
        let path = self.path_of(node)?;
        let mode =
            if mode == CopyMode::Meta && !(self.behaviour.metacopy && s.kind == libc::S_IFREG) {
                CopyMode::Data
            } else {
                mode
            };
        let (src_st, upper_st) =
            self.copy_up_path(&path, s.layer, &s.lower_path, mode, node.ino)?;
        // Layer and data are published together: an open in between must not find the
        // node in the upper without knowing its data is still the lower's.
        let origin = self.metacopy_origin_of(&upper_st, &path);
        let metadata_only = origin.is_some();
        self.adopt_copy(node.ino, &upper_st, origin);
        if metadata_only {
            return Ok(());
        }
        if s.kind == libc::S_IFREG {
            self.files.retarget(node.ino, || {
                let (udir, name) = self.parent_fd(0, &path)?;
                sys::openat(udir.as_fd(), name, libc::O_RDONLY, 0)
            })?;
        }
        if src_st.st_mode & libc::S_IFMT == libc::S_IFREG && src_st.st_nlink > 1 {
            self.keep_hard_link(node, &path, &src_st)?;
        }
        Ok(())
    }

    /// A lower hard link was copied up through one name: its other names must keep
    /// showing the same object (a write through any name changes all). Known names are
    /// linked to the upper copy now, the others when they are looked up (`link_up`).
    fn keep_hard_link(&self, node: &Node, path: &OsStr, src_st: &Stat) -> SysResult<()> {
        let (udir, name) = self.parent_fd(0, path)?;
        let copy = Arc::new(sys::openat(udir.as_fd(), name, libc::O_PATH, 0)?);
        self.linkups
            .insert((src_st.st_dev, src_st.st_ino), copy.clone());
        let others: Vec<(u64, OsString)> = node.snapshot().names.into_iter().skip(1).collect();
        for (parent, other) in others {
            let pnode = self.node(parent)?;
            self.copy_up(&pnode, true)?;
            let ppath = self.path_of(&pnode)?;
            let pdir = self.dir_fd(0, &ppath)?;
            match sys::link_fd(copy.as_fd(), pdir.as_fd(), &other) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Looking up a name of a lower hard link whose object was already copied up through
    /// another name: link this name to the upper copy. Returns whether it did.
    pub(super) fn link_up(
        &self,
        pnode: &Node,
        ppath: &OsStr,
        name: &OsStr,
        r: &Resolved,
    ) -> SysResult<bool> {
        if self.read_only() || r.layer == 0 || r.kind() != libc::S_IFREG || r.st.st_nlink <= 1 {
            return Ok(false);
        }
        let Some(copy) = self
            .linkups
            .get(&(r.st.st_dev, r.st.st_ino))
            .map(|c| c.clone())
        else {
            return Ok(false);
        };
        self.copy_up(pnode, true)?;
        let pdir = self.dir_fd(0, ppath)?;
        match sys::link_fd(copy.as_fd(), pdir.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => Ok(true),
            // The upper copy is gone (every name of it removed): this name stays lower.
            Err(Errno::ENOENT) => {
                self.linkups.remove(&(r.st.st_dev, r.st.st_ino));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes `node` writable where it is: init-layer files are changed in place (S18),
    /// everything else is copied up.
    pub(super) fn make_writable(&self, node: &Node, mode: CopyMode) -> SysResult<()> {
        let s = node.snapshot();
        if self.is_init(s.layer) && s.kind != libc::S_IFDIR {
            return Ok(());
        }
        self.copy_up_as(node, mode)
    }

    /// Records a new upper copy of the object `number` (identity, layer, and where its data
    /// is: `data` for a metadata-only copy), and tells the kernel its attributes changed (a
    /// copy has its own ctime and blocks).
    pub(super) fn adopt_copy(
        &self,
        number: u64,
        upper_st: &Stat,
        data: Option<(usize, std::ffi::OsString)>,
    ) {
        self.inodes
            .alias_identity(upper_st.st_dev, upper_st.st_ino, number);
        if let Some(n) = self.inodes.get(number) {
            let mut st = n.state.lock();
            st.layer = 0;
            st.data = data;
            if st.kind == libc::S_IFDIR && st.dir_layers.first() != Some(&0) {
                st.dir_layers.insert(0, 0);
            }
        }
        // After the node points at the copy: a getattr the notice triggers reads the copy.
        self.attributes_changed(number);
    }

    /// Copies the object at `path` from layer `src` into the upper, whose parent dir must
    /// exist; the copy records the object's inode `number`. Returns the stat of the source
    /// and of the new upper object.
    pub(super) fn copy_up_path(
        &self,
        path: &OsStr,
        src: usize,
        src_path: &OsStr,
        mode: CopyMode,
        number: u64,
    ) -> SysResult<(Stat, Stat)> {
        let work = self.layers.work.as_ref().ok_or(Errno::EROFS)?.as_fd();
        let (sdir, sname) = self.parent_fd(src, src_path)?;
        let sdir = sdir.as_fd();
        let st = sys::fstatat(sdir, sname)?;
        let protection = Protection::from_statx(sys::attributes_at(sdir, sname)?);
        let (udir, name) = self.parent_fd(0, path)?;
        let udir = udir.as_fd();
        let parent_times = sys::fstat(udir)?;
        let tmp = tmp_name();
        let kind = st.st_mode & libc::S_IFMT;
        let perm = st.st_mode & 0o7777;
        let copied = std::cell::Cell::new(0);
        let build = || -> SysResult<()> {
            match kind {
                libc::S_IFREG => {
                    let sfd = sys::openat(sdir, sname, libc::O_RDONLY, 0)?;
                    let dfd = sys::openat(
                        work,
                        &tmp,
                        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                        0o600,
                    )?;
                    // A hard link stays whole: its names share one copy.
                    let meta = mode == CopyMode::Meta && st.st_nlink <= 1 && st.st_size > 0;
                    if meta {
                        self.note_metacopy()?;
                        sys::ftruncate(dfd.as_fd(), st.st_size as u64)?;
                        sys::setxattr(
                            XTarget::Fd(dfd.as_fd()),
                            Private::Metacopy.name(),
                            &super::metacopy::encode_origin(src, src_path),
                            0,
                        )?;
                    } else if mode != CopyMode::NoData {
                        copy_data(sfd.as_fd(), dfd.as_fd(), st.st_size as u64)?;
                        copied.set(st.st_size as u64);
                        // The rename must never publish data that is not on disk yet
                        // (S12 across a power cut), as overlayfs fsyncs its copy-ups.
                        if self.behaviour.syncs() {
                            sys::fsync(dfd.as_fd(), false)?;
                        }
                    }
                    copy_carried_flags(sfd.as_fd(), dfd.as_fd());
                }
                libc::S_IFDIR => sys::mkdirat(work, &tmp, 0o700)?,
                libc::S_IFLNK => {
                    let target = sys::readlinkat(sdir, sname)?;
                    sys::symlinkat(&target, work, &tmp)?;
                }
                _ => sys::mknodat(work, &tmp, kind | 0o600, st.st_rdev)?,
            }
            // Without the privilege to chown, the owner goes into an override where the
            // mount writes them (after the source's xattrs, which may hold one already).
            let owner_in_override = match sys::fchownat(work, &tmp, st.st_uid, st.st_gid) {
                Ok(()) => false,
                Err(Errno::EPERM) => true,
                Err(e) => return Err(e),
            };
            copy_xattrs(XTarget::At(sdir, sname), XTarget::At(work, &tmp))?;
            if owner_in_override {
                let shown = OverrideStat::of(&st);
                self.owner_into_override(XTarget::At(work, &tmp), kind, shown)?;
            }
            record_number(XTarget::At(work, &tmp), number);
            if protection.any() {
                protect::record(XTarget::At(work, &tmp), protection)?;
            }
            if kind != libc::S_IFLNK {
                let real = if owner_in_override {
                    super::overrides::real_perm(kind, perm)
                } else {
                    perm
                };
                sys::fchmodat(work, &tmp, real)?;
            }
            sys::utimensat(
                work,
                &tmp,
                time_of(st.st_atime, st.st_atime_nsec),
                time_of(st.st_mtime, st.st_mtime_nsec),
            )?;
            // The copy is the object's before anyone can look it up: a lookup racing with
            // the rename must not number it on its own.
            let built = sys::fstatat(work, &tmp)?;
            self.inodes
                .alias_identity(built.st_dev, built.st_ino, number);
            sys::renameat2(work, &tmp, udir, name, sys::RENAME_NOREPLACE)
        };
        if let Err(e) = build() {
            if let Ok(st) = sys::fstatat(work, &tmp) {
                self.inodes.drop_identity_of(st.st_dev, st.st_ino, number);
            }
            let _ = sys::unlinkat(work, &tmp, kind == libc::S_IFDIR);
            return Err(e);
        }
        self.count_copyup(copied.get());
        if kind == libc::S_IFDIR {
            // After the rename: an opener that saw it absent before now retries.
            self.dircache.note_dir_created();
        }
        // Copy-up is invisible: the parent keeps its times.
        self.restore_dir_times(udir, &parent_times);
        Ok((st, sys::fstatat(udir, name)?))
    }

    pub(super) fn restore_dir_times(&self, dir: BorrowedFd<'_>, st: &Stat) {
        let _ = sys::utimens_fd(
            dir,
            time_of(st.st_atime, st.st_atime_nsec),
            time_of(st.st_mtime, st.st_mtime_nsec),
        );
    }

    /// Copies a whole merged directory tree into the upper and marks its top opaque, so
    /// that it no longer depends on the lowers (used by directory rename, S16).
    pub(super) fn copy_up_tree(&self, node: &Node) -> SysResult<()> {
        if node.snapshot().dir_layers.iter().all(|l| *l == 0) {
            return Ok(());
        }
        self.copy_up(node, true)?;
        let dir = self.dir_view(node)?;
        self.copy_tree_below(&dir)?;
        let dfd = self.dir_fd(0, &dir.path)?;
        crate::whiteout::mark_opaque(
            sys::reopen(dfd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?.as_fd(),
            self.layers.whiteout,
        )?;
        if let Some(n) = self.inodes.get(node.ino) {
            n.state.lock().dir_layers = vec![0];
        }
        Ok(())
    }

    fn copy_tree_below(&self, dir: &DirView) -> SysResult<()> {
        if dir.layers.iter().all(|l| *l == 0) {
            return Ok(());
        }
        for (name, r) in self.merged_entries(dir)? {
            if r.layer != 0 {
                self.copy_tree_entry(dir, &name, &r)?;
            }
            if r.kind() == libc::S_IFDIR {
                let mut child = dir.child(&name, &r);
                if child.layers.first() != Some(&0) {
                    child.layers.insert(0, 0);
                }
                self.copy_tree_below(&child)?;
            }
        }
        Ok(())
    }

    /// Copies one entry of a tree copy; a name of a lower hard link already copied up is
    /// linked to that copy instead, so the link survives.
    fn copy_tree_entry(&self, dir: &DirView, name: &OsStr, r: &Resolved) -> SysResult<()> {
        let child = super::join(&dir.path, name);
        let hard_link = r.kind() == libc::S_IFREG && r.st.st_nlink > 1;
        let key = (r.st.st_dev, r.st.st_ino);
        if hard_link {
            if let Some(copy) = self.linkups.get(&key).map(|c| c.clone()) {
                let udir = self.dir_fd(0, &dir.path)?;
                match sys::link_fd(copy.as_fd(), udir.as_fd(), name) {
                    Ok(()) | Err(Errno::EEXIST) => return Ok(()),
                    Err(Errno::ENOENT) => {
                        self.linkups.remove(&key);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let number = self.number_of(r, &dir.path, name);
        let (_, ust) = self.copy_up_path(&child, r.layer, &r.lower_path, CopyMode::Data, number)?;
        self.adopt_copy(number, &ust, None);
        if hard_link {
            let udir = self.dir_fd(0, &dir.path)?;
            let copy = sys::openat(udir.as_fd(), name, libc::O_PATH, 0)?;
            self.linkups.insert(key, Arc::new(copy));
        }
        Ok(())
    }
}
