//! A bounded cache of open directory fds per (layer, path), so that an operation costs
//! one *at call instead of a walk from the layer root. Lower dirs never change; upper
//! entries are invalidated by every change that removes or moves a directory, in the same
//! critical section. A generation counter keeps an fd opened before an invalidation from
//! being cached after it.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::sys::SysResult;

const CAPACITY: usize = 2048;

#[derive(Default)]
pub struct DirCache {
    map: DashMap<(usize, OsString), Arc<OwnedFd>>,
    generation: AtomicU64,
    /// Dirs known absent, with the `created` count when they were seen absent: forever
    /// valid in a lower, until the next directory creation in a writable layer.
    absent: DashMap<(usize, OsString), u64>,
    created: AtomicU64,
}

/// Whether `path` is `prefix` or lies below it.
fn under(path: &OsStr, prefix: &OsStr) -> bool {
    let (p, q) = (path.as_bytes(), prefix.as_bytes());
    q.is_empty() || (p.starts_with(q) && (p.len() == q.len() || p[q.len()] == b'/'))
}

impl DirCache {
    /// The fd of `path` in `layer` (`writable`: the upper or the init layer, whose dirs
    /// come and go), opening and caching it on a miss; absent dirs are remembered too.
    pub fn get_or_open(
        &self,
        layer: usize,
        path: &OsStr,
        writable: bool,
        open: impl FnOnce() -> SysResult<OwnedFd>,
    ) -> SysResult<Arc<OwnedFd>> {
        let key = (layer, path.to_os_string());
        if let Some(fd) = self.map.get(&key) {
            return Ok(fd.clone());
        }
        if let Some(seen) = self.absent.get(&key) {
            if !writable || *seen == self.created.load(Ordering::Acquire) {
                return Err(crate::sys::Errno::ENOENT);
            }
        }
        let gen = self.generation.load(Ordering::Acquire);
        let created = self.created.load(Ordering::Acquire);
        let fd = match open() {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                if e == crate::sys::Errno::ENOENT || e == crate::sys::Errno::ENOTDIR {
                    if self.absent.len() >= CAPACITY * 8 {
                        self.absent.clear();
                    }
                    self.absent.insert(key, created);
                }
                return Err(e);
            }
        };
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        if self.generation.load(Ordering::Acquire) == gen {
            self.map.insert(key, fd.clone());
        }
        Ok(fd)
    }

    /// A directory may have appeared in a writable layer (mkdir, copy-up, rename): no
    /// "absent" entry of those layers holds any more.
    pub fn note_dir_created(&self) {
        self.created.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets every cached dir of `layer` at or below `path` (after it was removed or
    /// moved).
    pub fn invalidate(&self, layer: usize, path: &OsStr) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map
            .retain(|(l, p), _| !(*l == layer && under(p, path)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_is_by_component() {
        assert!(under(OsStr::new("a/b"), OsStr::new("a")));
        assert!(under(OsStr::new("a"), OsStr::new("a")));
        assert!(!under(OsStr::new("ab"), OsStr::new("a")));
        assert!(under(OsStr::new("x"), OsStr::new("")));
    }
}
