//! Per-directory lookup index: the visible names of a merged directory, each with the
//! top-most layer holding it. Built for free from a readdir snapshot, or on the first
//! lookup in a directory merged from many layers, so that a miss costs no syscall and a
//! hit starts at the right layer: lookup cost stops growing with the number of lowers.
//! Every change to a directory's names drops its index in the same critical section; a
//! generation counter keeps an index built before a change from being stored after it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// Name -> top-most layer showing it.
pub type NameIndex = HashMap<OsString, usize>;

/// Bound on the names held over all directories; past it every index is dropped.
const MAX_NAMES: usize = 1 << 20;

#[derive(Default)]
pub struct LookupIndex {
    map: DashMap<u64, Arc<NameIndex>>,
    generation: AtomicU64,
    names: AtomicUsize,
}

impl LookupIndex {
    pub fn get(&self, dir: u64) -> Option<Arc<NameIndex>> {
        self.map.get(&dir).map(|i| i.clone())
    }

    /// The generation to pass to `store` for an index about to be built.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps an index built from a listing taken at `generation`, unless a change came
    /// in between.
    pub fn store(&self, dir: u64, generation: u64, index: NameIndex) -> Arc<NameIndex> {
        let index = Arc::new(index);
        if self.names.fetch_add(index.len(), Ordering::Relaxed) > MAX_NAMES {
            self.map.clear();
            self.names.store(index.len(), Ordering::Relaxed);
        }
        if self.generation.load(Ordering::Acquire) == generation {
            self.map.insert(dir, index.clone());
        }
        index
    }

    /// The names of `dir` changed.
    pub fn invalidate(&self, dir: u64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some((_, old)) = self.map.remove(&dir) {
            self.names.fetch_sub(
                old.len().min(self.names.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
    }
}
