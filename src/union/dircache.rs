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
}

/// Whether `path` is `prefix` or lies below it.
fn under(path: &OsStr, prefix: &OsStr) -> bool {
    let (p, q) = (path.as_bytes(), prefix.as_bytes());
    q.is_empty() || (p.starts_with(q) && (p.len() == q.len() || p[q.len()] == b'/'))
}

impl DirCache {
    pub fn get_or_open(
        &self,
        layer: usize,
        path: &OsStr,
        open: impl FnOnce() -> SysResult<OwnedFd>,
    ) -> SysResult<Arc<OwnedFd>> {
        if let Some(fd) = self.map.get(&(layer, path.to_os_string())) {
            return Ok(fd.clone());
        }
        let gen = self.generation.load(Ordering::Acquire);
        let fd = Arc::new(open()?);
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        if self.generation.load(Ordering::Acquire) == gen {
            self.map.insert((layer, path.to_os_string()), fd.clone());
        }
        Ok(fd)
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
