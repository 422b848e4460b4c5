//! Merged directory listings (S9): every visible name once, reserved names and whiteouts
//! never shown, and directory handles that serve a stable snapshot across readdir calls.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use super::{DirView, Resolved, Union};
use crate::sys::{self, Errno, SysResult};
use crate::whiteout;

/// One visible entry of a merged directory.
#[derive(Clone, Debug)]
pub struct ListEntry {
    pub name: OsString,
    pub ino: u64,
    /// S_IFMT bits.
    pub kind: u32,
    /// The top-most layer showing it.
    pub layer: usize,
}

fn dtype_kind(d: u8) -> Option<u32> {
    Some(match d {
        libc::DT_REG => libc::S_IFREG,
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        _ => return None,
    })
}

struct DirHandle {
    ino: u64,
    /// The directory's top-most copy as it was opened: an open directory keeps answering
    /// fstat after its name is removed or replaced.
    fd: Option<Arc<OwnedFd>>,
    /// "." and "..".
    dots: [ListEntry; 2],
    /// The merged listing, shared with the directory's listing cache.
    entries: Arc<Vec<ListEntry>>,
    served: bool,
}

#[derive(Default)]
pub struct DirHandles {
    map: DashMap<u64, Arc<Mutex<DirHandle>>>,
    next: AtomicU64,
}

impl DirHandles {
    /// The descriptor of some open handle of the directory `ino`.
    pub fn fd_for(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.map.iter().find_map(|h| {
            let h = h.lock();
            if h.ino == ino {
                h.fd.clone()
            } else {
                None
            }
        })
    }
}

impl Union {
    /// The visible entries of the merged dir `dir`, in a stable order.
    pub(super) fn merged_list(&self, dir: &DirView) -> SysResult<Vec<ListEntry>> {
        let mut decided: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for (pos, &l) in dir.layers.iter().enumerate() {
            let dfd = match self.dir_fd(l, self.dir_path_in(dir, l)) {
                Ok(f) => f,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) if pos > 0 => continue,
                Err(e) => return Err(e),
            };
            let d = dfd.as_fd();
            let is_upper = self.is_upper(l);
            let dev = self.layers.layers[l].dev;
            let mut hidden_below = Vec::new();
            for e in sys::read_dir(d)? {
                if whiteout::is_reserved_name(&e.name) {
                    let b = e.name.as_bytes();
                    if b != whiteout::OPAQUE_NAME.as_bytes() {
                        hidden_below.push(
                            OsStr::from_bytes(&b[whiteout::WH_PREFIX.len()..]).to_os_string(),
                        );
                    }
                    continue;
                }
                if decided.contains(&e.name) {
                    continue;
                }
                let needs_stat = matches!(e.dtype, libc::DT_CHR | libc::DT_UNKNOWN)
                    || (e.dtype == libc::DT_REG
                        && (self.may_hold_xattr_whiteouts(l)
                            || (is_upper
                                && whiteout::whiteout_at_name(self.layers.whiteout, &e.name))));
                let mut kind = dtype_kind(e.dtype);
                if needs_stat {
                    let st = match sys::fstatat(d, &e.name) {
                        Ok(st) => st,
                        Err(_) => continue,
                    };
                    if whiteout::entry_is_whiteout(&st, is_upper, self.layers.whiteout, d, &e.name)
                    {
                        decided.insert(e.name);
                        continue;
                    }
                    kind = Some(st.st_mode & libc::S_IFMT);
                }
                // As a lookup numbers it (an upper copy takes its recorded number), so
                // that d_ino is st_ino.
                let ino = self.inodes.known(dev, e.ino).unwrap_or_else(|| {
                    let recorded = if is_upper {
                        super::copyup::recorded_number(d, &e.name)
                    } else {
                        None
                    };
                    self.inodes.claim(dev, e.ino, recorded)
                });
                decided.insert(e.name.clone());
                out.push(ListEntry {
                    name: e.name,
                    ino,
                    kind: kind.unwrap_or(libc::S_IFREG),
                    layer: l,
                });
            }
            decided.extend(hidden_below);
        }
        Ok(out)
    }

    /// The visible entries of a merged dir, each fully resolved.
    pub(super) fn merged_entries(&self, dir: &DirView) -> SysResult<Vec<(OsString, Resolved)>> {
        let mut out = Vec::new();
        for e in self.merged_list(dir)? {
            if let Some(r) = self.resolve_child(dir, &e.name)? {
                out.push((e.name, r));
            }
        }
        Ok(out)
    }

    /// "." and ".." of a dir, and its merged listing: the cached one while the dir's names
    /// have not changed, else a fresh one (then cached).
    fn snapshot_dir(&self, ino: u64) -> SysResult<([ListEntry; 2], Arc<Vec<ListEntry>>)> {
        let node = self.node(ino)?;
        let _ns = self.ns.read();
        let dir = self.dir_view(&node)?;
        let parent = node
            .snapshot()
            .names
            .first()
            .map(|(p, _)| *p)
            .unwrap_or(ino);
        let dot = |name: &str, ino: u64| ListEntry {
            name: name.into(),
            ino,
            kind: libc::S_IFDIR,
            layer: 0,
        };
        let dots = [dot(".", ino), dot("..", parent)];
        if let Some(cached) = self.index.get(ino) {
            // The cached listing stands for the layer dirs: they must still be readable
            // (a lower made unreadable underneath answers EACCES here, as a fresh listing).
            for &l in &dir.layers {
                match self.dir_fd(l, self.dir_path_in(&dir, l)) {
                    Ok(fd) => sys::check_dir_access(fd.as_fd())?,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok((dots, cached.entries.clone()));
        }
        let generation = self.index.generation();
        let list = self.merged_list(&dir)?;
        Ok((
            dots,
            self.index.store(ino, generation, list).entries.clone(),
        ))
    }

    pub fn opendir(&self, ino: u64) -> SysResult<u64> {
        let (dots, entries) = self.snapshot_dir(ino)?;
        let fd = {
            let _ns = self.ns.read();
            let dir = self.dir_view(&*self.node(ino)?)?;
            dir.layers
                .first()
                .and_then(|&l| self.dir_fd(l, self.dir_path_in(&dir, l)).ok())
        };
        let fh = self.dirs.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.dirs.map.insert(
            fh,
            Arc::new(Mutex::new(DirHandle {
                ino,
                fd,
                dots,
                entries,
                served: false,
            })),
        );
        Ok(fh)
    }

    /// Feeds entries from `offset` on to `add` (which gets the next offset and returns
    /// true when its buffer is full); offsets are positions in the handle's snapshot. A read
    /// at offset 0 after the snapshot was served (rewinddir) takes a fresh one.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &ListEntry) -> bool,
    ) -> SysResult<()> {
        let h = self
            .dirs
            .map
            .get(&fh)
            .map(|h| h.clone())
            .ok_or(Errno::EBADF)?;
        let mut h = h.lock();
        if offset == 0 && h.served {
            (h.dots, h.entries) = self.snapshot_dir(h.ino)?;
        }
        h.served = true;
        let all = h.dots.iter().chain(h.entries.iter());
        for (i, e) in all.enumerate().skip(offset as usize) {
            if add(i as u64 + 1, e) {
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.map.remove(&fh);
    }

    /// Whether the merged dir `dir` has no visible entries.
    pub(super) fn merged_is_empty(&self, dir: &DirView) -> SysResult<bool> {
        Ok(self.merged_list(dir)?.is_empty())
    }
}
