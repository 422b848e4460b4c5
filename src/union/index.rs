//! Per-directory lookup index and listing cache: the visible entries of a directory, each
//! with the top-most layer holding it, kept until the directory's names change. Built for free from a readdir snapshot, or on the first
//! lookup in a directory merged from many layers, so that a miss costs no syscall and a
//! hit starts at the right layer: lookup cost stops growing with the number of lowers.
//! Every change to a directory's names drops its index in the same critical section; a
//! generation counter keeps an index built before a change from being stored after it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::listing::ListEntry;

/// Name -> top-most layer showing it.
pub type NameIndex = HashMap<OsString, usize>;

/// A directory's merged listing (without "." and "..") and its name index.
pub struct Listing {
    pub entries: Arc<Vec<ListEntry>>,
    pub names: NameIndex,
}

/// Bound on the names held over all directories; past it every index is dropped.
const MAX_NAMES: usize = 1 << 20;

#[derive(Default)]
pub struct LookupIndex {
    map: DashMap<u64, Arc<Listing>>,
    generation: AtomicU64,
    names: AtomicUsize,
}

impl LookupIndex {
    pub fn get(&self, dir: u64) -> Option<Arc<Listing>> {
        self.map.get(&dir).map(|i| i.clone())
    }

    /// The generation to pass to `store` for an index about to be built.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps an index built from a listing taken at `generation`, unless a change came
    /// in between.
    pub fn store(&self, dir: u64, generation: u64, entries: Vec<ListEntry>) -> Arc<Listing> {
        let names = entries.iter().map(|e| (e.name.clone(), e.layer)).collect();
        let index = Arc::new(Listing {
            entries: Arc::new(entries),
            names,
        });
        if self.names.fetch_add(index.names.len(), Ordering::Relaxed) > MAX_NAMES {
            self.map.clear();
            self.names.store(index.names.len(), Ordering::Relaxed);
        }
        if self.generation.load(Ordering::Acquire) == generation {
            self.map.insert(dir, index.clone());
        }
        index
    }

    /// The names of `dir` changed.
    pub fn invalidate(&self, dir: u64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.forget(dir);
    }

    /// The kernel forgot `dir`: its listing goes with the kernel's copy (nothing changed).
    pub fn forget(&self, dir: u64) {
        if let Some((_, old)) = self.map.remove(&dir) {
            self.names.fetch_sub(
                old.names.len().min(self.names.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
    }
}
