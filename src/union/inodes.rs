//! The inode table: one `Node` per object the kernel knows, with the names it is known by,
//! the layer holding its current copy and, for directories, the layers that merge into it.
//! Inode numbers are stable for the life of the mount (S13): an identity map from the
//! on-disk (dev, ino) of every copy an object has had to our number outlives `forget`.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

pub const ROOT_INO: u64 = 1;

#[derive(Clone, Debug)]
pub struct NodeState {
    /// S_IFMT bits of the object.
    pub kind: u32,
    /// (parent inode, name) pairs this object is reachable by; the first is used for paths.
    pub names: Vec<(u64, OsString)>,
    /// Index of the top-most layer holding the object (0 is the upper when there is one).
    pub layer: usize,
    /// For directories: every layer whose directory merges into this one, top first.
    pub dir_layers: Vec<usize>,
    /// Removed from the namespace while the kernel still holds it.
    pub unlinked: bool,
    /// A metadata-only upper copy: the data is at (layer, path) in a lower.
    pub data: Option<(usize, OsString)>,
    /// The path in the layers below the upper (the merged path unless a renamed
    /// directory's redirect is on the way).
    pub lower_path: OsString,
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    pub state: Mutex<NodeState>,
    /// Held across a copy-up so that concurrent writers make one copy (S12).
    pub copyup: Mutex<()>,
    lookups: AtomicU64,
}

impl Node {
    pub fn snapshot(&self) -> NodeState {
        self.state.lock().clone()
    }
    /// Makes (parent, name) the name used for this node's path, adding it if new.
    pub fn promote_name(&self, parent: u64, name: &std::ffi::OsStr) {
        let mut s = self.state.lock();
        if let Some(pos) = s.names.iter().position(|(p, n)| *p == parent && n == name) {
            let e = s.names.remove(pos);
            s.names.insert(0, e);
        } else {
            s.names.insert(0, (parent, name.to_os_string()));
        }
    }

    pub fn is_dir(&self) -> bool {
        self.state.lock().kind == libc::S_IFDIR
    }
}

#[derive(Debug, Default)]
pub struct InodeTable {
    nodes: DashMap<u64, Arc<Node>>,
    identity: DashMap<(u64, u64), u64>,
    next: AtomicU64,
}

impl InodeTable {
    pub fn new(root: NodeState) -> InodeTable {
        let t = InodeTable {
            nodes: DashMap::new(),
            identity: DashMap::new(),
            next: AtomicU64::new(ROOT_INO + 1),
        };
        t.nodes.insert(
            ROOT_INO,
            Arc::new(Node {
                ino: ROOT_INO,
                state: Mutex::new(root),
                copyup: Mutex::new(()),
                lookups: AtomicU64::new(1),
            }),
        );
        t
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.nodes.get(&ino).map(|n| n.value().clone())
    }

    /// Our inode number for an on-disk object, allocating one the first time.
    pub fn number_for(&self, dev: u64, ino: u64) -> u64 {
        *self
            .identity
            .entry((dev, ino))
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Records that the on-disk object (dev, ino) is a new copy of our inode `number`.
    pub fn alias_identity(&self, dev: u64, ino: u64, number: u64) {
        self.identity.insert((dev, ino), number);
    }

    /// The on-disk object is gone: a new object there must not inherit the number.
    /// The object `number` at (dev, ino) is gone; a mapping made since for a new object
    /// reusing the disk inode is kept.
    pub fn drop_identity_of(&self, dev: u64, ino: u64, number: u64) {
        self.identity.remove_if(&(dev, ino), |_, n| *n == number);
    }

    pub fn drop_identity(&self, dev: u64, ino: u64) {
        self.identity.remove(&(dev, ino));
    }

    /// Finds or creates the node `number` and counts one kernel lookup of it, updating its
    /// location from a fresh resolution.
    pub fn upsert_lookup(&self, number: u64, fresh: NodeState) -> Arc<Node> {
        let (parent, name) = fresh.names[0].clone();
        let node = {
            // Count the lookup while the shard is locked so a racing forget cannot drop
            // the node between our insert and our increment.
            let entry = self.nodes.entry(number).or_insert_with(|| {
                Arc::new(Node {
                    ino: number,
                    state: Mutex::new(fresh.clone()),
                    copyup: Mutex::new(()),
                    lookups: AtomicU64::new(0),
                })
            });
            entry.lookups.fetch_add(1, Ordering::Relaxed);
            entry.clone()
        };
        {
            let mut s = node.state.lock();
            s.kind = fresh.kind;
            s.layer = fresh.layer;
            s.dir_layers = fresh.dir_layers;
            s.data = fresh.data;
            s.lower_path = fresh.lower_path;
            s.unlinked = false;
        }
        // The name just resolved becomes the one used for paths.
        node.promote_name(parent, &name);
        node
    }

    /// The kernel dropped `n` references; the node goes when none are left.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        self.nodes.remove_if(&ino, |_, node| {
            let left = node.lookups.load(Ordering::Relaxed).saturating_sub(n);
            node.lookups.store(left, Ordering::Relaxed);
            left == 0
        });
    }

    /// Removes one name of a node (unlink, rename source).
    pub fn remove_name(&self, ino: u64, parent: u64, name: &OsString) {
        if let Some(node) = self.get(ino) {
            let mut s = node.state.lock();
            s.names.retain(|(p, n)| !(*p == parent && n == name));
            if s.names.is_empty() {
                s.unlinked = true;
            }
        }
    }

    /// Moves one name of a node (rename).
    pub fn rename_name(&self, ino: u64, from: (u64, &OsString), to: (u64, OsString)) {
        if let Some(node) = self.get(ino) {
            let mut s = node.state.lock();
            s.names.retain(|(p, n)| !(*p == from.0 && n == from.1));
            s.names.insert(0, to);
            s.unlinked = false;
        }
    }
}
