//! The inode table: one `Node` per object the kernel knows, with the names it is known by,
//! the layer holding its current copy and, for directories, the layers that merge into it.
//!
//! Inode numbers (S13) are stable for the life of the mount and across remounts of the
//! same layers (issue 10, item 7: `git update-index --refresh`, remount, and `git
//! diff-files` must find nothing changed, as on overlayfs). fuser uses our number both as
//! the FUSE node id and as st_ino, so it must also be unique among the live objects of the
//! mount; the root is always `ROOT_INO`. A number is derived from the real object, as
//! overlayfs's xino composes it:
//! - an object of a layer: `(fs index << 56) | real st_ino`, where each distinct st_dev
//!   among the layers gets an index in layer order (upper, init layer, lowers). With every
//!   layer on one filesystem (index 0) this is the real inode number itself.
//! - an upper copy keeps the number of the object it was copied up from, as overlayfs's
//!   copies keep their origin's: copy-up writes it into the private xattr
//!   `Private::Ino` while the copy is still in the workdir (no copy is published
//!   without it), and the first lookup of an upper object that carries it uses it.
//!
//! The layers are the same at the next mount, so the same numbers come out. Uniqueness
//! goes first: a number is taken only if no other identity holds it and no live node has
//! it; failing that the object's own composed number is tried, then one from the reserved
//! range (top bit set, a counter): unique, stable for the mount, not across mounts. That
//! fallback covers the root's 1, real inode numbers of 56 bits or more, filesystems not
//! among the layers' roots (a submount inside a layer) or beyond the 128th, and true
//! collisions: a disk inode reused (ext4 does) while the kernel still holds the removed
//! object, e.g. open and unlinked; a lower hard link one of whose names was copied up in
//! an earlier mount (the copy carries the origin's number and the other name, still lower,
//! composes the same one: two objects now, the first looked up keeps the number).
//!
//! Node ids: the kernel knows an object by its number, until `supersede` gives it a new node
//! id from the reserved range (st_ino stays its number). That happens when a file held open
//! through passthrough on its lower copy is copied up: every open of one kernel inode must
//! share one backing file, so the copy is opened under a new kernel inode while the old one
//! keeps the lower backing for the files already open (see iomode). The old node id stays
//! valid, for the same object, until the kernel forgets it.
//!
//! The identity map ((dev, ino) of every copy an object has had -> its number) outlives
//! `forget`; its reverse (number -> how many identities hold it) finds collisions. A new
//! object never inherits a mapping (create drops it first), removals drop exactly their
//! own, and a number is checked against the live nodes before it is handed out again, so
//! two live objects never share one.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

pub const ROOT_INO: u64 = 1;

/// Where the fs index sits in a composed number; real inode numbers must fit below it.
const FS_SHIFT: u32 = 56;
/// Indices 0..=127: a composed number never reaches the reserved range.
const MAX_FS_INDEX: usize = 127;
/// First number of the reserved range (unique, not stable).
const RESERVED: u64 = 1 << 63;

/// Whether `number` can be recorded on a copy and mean the same at the next mount: not the
/// root's, not from the reserved range.
pub fn is_stable_number(number: u64) -> bool {
    number != ROOT_INO && number != 0 && number < RESERVED
}

/// The identity map and its reverse, changed together under one lock.
#[derive(Debug, Default)]
struct Identities {
    by_key: HashMap<(u64, u64), u64>,
    /// number -> how many identities map to it (an object's copies share its number).
    holders: HashMap<u64, u32>,
}

impl Identities {
    fn set(&mut self, key: (u64, u64), number: u64) {
        if let Some(old) = self.by_key.insert(key, number) {
            self.release(old);
        }
        *self.holders.entry(number).or_insert(0) += 1;
    }

    fn remove(&mut self, key: (u64, u64)) {
        if let Some(old) = self.by_key.remove(&key) {
            self.release(old);
        }
    }

    fn release(&mut self, number: u64) {
        if let Entry::Occupied(mut e) = self.holders.entry(number) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

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
    /// The object's number: its st_ino, and its node id unless superseded.
    pub ino: u64,
    pub state: Mutex<NodeState>,
    /// Held across a copy-up so that concurrent writers make one copy (S12).
    pub copyup: Mutex<()>,
    /// The node id lookups answer with now.
    nodeid: AtomicU64,
    /// Lookups the kernel holds on `nodeid`.
    lookups: AtomicU64,
    /// Node ids the object had before (`supersede`), with the lookups still held on each.
    superseded: Mutex<Vec<(u64, u64)>>,
}

impl Node {
    fn new(ino: u64, state: NodeState, lookups: u64) -> Node {
        Node {
            ino,
            state: Mutex::new(state),
            copyup: Mutex::new(()),
            nodeid: AtomicU64::new(ino),
            lookups: AtomicU64::new(lookups),
            superseded: Mutex::new(Vec::new()),
        }
    }

    /// Every node id the kernel may still use for this object, the current one first.
    pub fn nodeids(&self) -> Vec<u64> {
        let mut ids = vec![self.nodeid.load(Ordering::Relaxed)];
        ids.extend(self.superseded.lock().iter().map(|(id, _)| *id));
        ids
    }

    /// Whether the kernel holds no reference to any node id of this object.
    fn unreferenced(&self) -> bool {
        self.lookups.load(Ordering::Relaxed) == 0 && self.superseded.lock().is_empty()
    }

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

#[derive(Debug)]
pub struct InodeTable {
    /// The live objects, by number.
    nodes: DashMap<u64, Arc<Node>>,
    /// Node ids given by `supersede` (current or superseded) -> the object's number.
    renumbered: DashMap<u64, u64>,
    /// Whether `supersede` ever ran: until then every node id is a number, and the hot
    /// path skips the map.
    any_renumbered: std::sync::atomic::AtomicBool,
    ids: Mutex<Identities>,
    /// The next number of the reserved range.
    next_reserved: AtomicU64,
    /// The st_dev of each filesystem among the layers, in layer order: a position here is
    /// the fs index of a composed number.
    devs: Vec<u64>,
    /// How many nodes are held (DashMap::len would lock every shard).
    live: AtomicU64,
    /// The most nodes held since the heap was last trimmed.
    peak: AtomicU64,
}

/// Below this many nodes the heap is never trimmed (not worth a malloc_trim).
const TRIM_FROM: u64 = 4096;

impl InodeTable {
    /// The table for a mount whose layers' roots have these st_dev, top layer first.
    pub fn new(root: NodeState, layer_devs: impl IntoIterator<Item = u64>) -> InodeTable {
        let mut devs = Vec::new();
        for d in layer_devs {
            if !devs.contains(&d) {
                devs.push(d);
            }
        }
        let t = InodeTable {
            nodes: DashMap::new(),
            renumbered: DashMap::new(),
            any_renumbered: std::sync::atomic::AtomicBool::new(false),
            ids: Mutex::new(Identities::default()),
            next_reserved: AtomicU64::new(RESERVED),
            devs,
            live: AtomicU64::new(1),
            peak: AtomicU64::new(0),
        };
        t.nodes
            .insert(ROOT_INO, Arc::new(Node::new(ROOT_INO, root, 1)));
        t
    }

    /// How many objects the kernel holds.
    pub fn live_count(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.nodes.get(&ino).map(|n| n.value().clone())
    }

    /// The number of the object the kernel knows by `nodeid`.
    pub fn number_of(&self, nodeid: u64) -> u64 {
        if !self.any_renumbered.load(Ordering::Acquire) {
            return nodeid;
        }
        self.renumbered.get(&nodeid).map_or(nodeid, |n| *n)
    }

    /// Gives the live object `number` a new node id for lookups from now on, if `nodeid`
    /// is still its current one (two opens racing on one old id make one new id, not two
    /// kernel inodes for one object); the kernel's references on the old id stay counted
    /// there until forgotten.
    pub fn supersede(&self, number: u64, nodeid: u64) -> Option<u64> {
        if number == ROOT_INO {
            return None;
        }
        let node = self.nodes.get_mut(&number)?;
        if node.nodeid.load(Ordering::Relaxed) != nodeid {
            return None;
        }
        let new = self.next_reserved.fetch_add(1, Ordering::Relaxed);
        self.renumbered.insert(new, number);
        self.any_renumbered.store(true, Ordering::Release);
        let old = node.nodeid.swap(new, Ordering::Relaxed);
        let held = node.lookups.swap(0, Ordering::Relaxed);
        if held > 0 {
            node.superseded.lock().push((old, held));
        } else if old != number {
            self.renumbered.remove(&old);
        }
        Some(new)
    }

    /// The number composed from an on-disk identity, when it has one (see the header).
    fn composed(&self, dev: u64, ino: u64) -> Option<u64> {
        let index = self.devs.iter().position(|d| *d == dev)?;
        (index <= MAX_FS_INDEX && ino >> FS_SHIFT == 0).then_some((index as u64) << FS_SHIFT | ino)
    }

    /// Our number for an on-disk object, if it has one already.
    pub fn known(&self, dev: u64, ino: u64) -> Option<u64> {
        self.ids.lock().by_key.get(&(dev, ino)).copied()
    }

    /// Our number for an on-disk object, given one the first time it is seen: `recorded`
    /// (the number an upper copy carries) if free, else its composed number if free, else
    /// a reserved one. Free: held by no other identity and by no live node (a node whose
    /// identity was dropped is a removed object the kernel still holds).
    pub fn claim(&self, dev: u64, ino: u64, recorded: Option<u64>) -> u64 {
        let mut ids = self.ids.lock();
        if let Some(n) = ids.by_key.get(&(dev, ino)) {
            return *n;
        }
        let free = |n: &u64| {
            is_stable_number(*n) && !ids.holders.contains_key(n) && !self.nodes.contains_key(n)
        };
        let number = recorded
            .filter(free)
            .or_else(|| self.composed(dev, ino).filter(free))
            .unwrap_or_else(|| self.next_reserved.fetch_add(1, Ordering::Relaxed));
        ids.set((dev, ino), number);
        number
    }

    /// Records that the on-disk object (dev, ino) is a new copy of our inode `number`.
    pub fn alias_identity(&self, dev: u64, ino: u64, number: u64) {
        self.ids.lock().set((dev, ino), number);
    }

    /// The object `number` at (dev, ino) is gone; a mapping made since for a new object
    /// reusing the disk inode is kept.
    pub fn drop_identity_of(&self, dev: u64, ino: u64, number: u64) {
        let mut ids = self.ids.lock();
        if ids.by_key.get(&(dev, ino)) == Some(&number) {
            ids.remove((dev, ino));
        }
    }

    /// The on-disk object is new: whatever number its disk inode had is not its own.
    pub fn drop_identity(&self, dev: u64, ino: u64) {
        self.ids.lock().remove((dev, ino));
    }

    /// Finds or creates the node `number` and counts one kernel lookup of it, updating its
    /// location from a fresh resolution. Returns the node and the node id counted.
    pub fn upsert_lookup(&self, number: u64, fresh: NodeState) -> (Arc<Node>, u64) {
        let (parent, name) = fresh.names[0].clone();
        let (node, nodeid) = {
            // Count the lookup while the shard is locked so a racing forget (or supersede)
            // cannot come between our insert and our increment.
            let entry = self.nodes.entry(number).or_insert_with(|| {
                let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
                self.peak.fetch_max(live, Ordering::Relaxed);
                Arc::new(Node::new(number, fresh.clone(), 0))
            });
            entry.lookups.fetch_add(1, Ordering::Relaxed);
            (entry.clone(), entry.nodeid.load(Ordering::Relaxed))
        };
        {
            let mut s = node.state.lock();
            // A resolution taken before a concurrent copy-up finished must not move the
            // object back to its lower copy: a copy in the upper stays the object's.
            if s.layer != 0 || fresh.layer == 0 {
                s.kind = fresh.kind;
                s.layer = fresh.layer;
                s.dir_layers = fresh.dir_layers;
                s.data = fresh.data;
                s.lower_path = fresh.lower_path;
            }
            s.unlinked = false;
        }
        // The name just resolved becomes the one used for paths.
        node.promote_name(parent, &name);
        (node, nodeid)
    }

    /// Enters an object with no name (an O_TMPFILE file) of kind `kind`, in the upper,
    /// with one kernel reference; returns its node id.
    pub fn insert_unnamed(&self, number: u64, kind: u32) -> u64 {
        let state = NodeState {
            kind,
            names: Vec::new(),
            layer: 0,
            dir_layers: Vec::new(),
            unlinked: true,
            data: None,
            lower_path: Default::default(),
        };
        let entry = self.nodes.entry(number).or_insert_with(|| {
            let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
            self.peak.fetch_max(live, Ordering::Relaxed);
            Arc::new(Node::new(number, state, 0))
        });
        entry.lookups.fetch_add(1, Ordering::Relaxed);
        entry.nodeid.load(Ordering::Relaxed)
    }

    /// The kernel dropped `n` references on `nodeid`; the object goes when none are left on
    /// any of its node ids. Returns its number if it went.
    pub fn forget(&self, nodeid: u64, n: u64) -> Option<u64> {
        let number = self.number_of(nodeid);
        if number == ROOT_INO {
            return None;
        }
        let mut ids_gone = Vec::new();
        let removed = self.nodes.remove_if(&number, |_, node| {
            if node.nodeid.load(Ordering::Relaxed) == nodeid {
                let left = node.lookups.load(Ordering::Relaxed).saturating_sub(n);
                node.lookups.store(left, Ordering::Relaxed);
            } else {
                let mut older = node.superseded.lock();
                if let Some(pos) = older.iter().position(|(id, _)| *id == nodeid) {
                    older[pos].1 = older[pos].1.saturating_sub(n);
                    if older[pos].1 == 0 {
                        older.remove(pos);
                        ids_gone.push(nodeid);
                    }
                }
            }
            let gone = node.unreferenced();
            if gone {
                ids_gone.push(node.nodeid.load(Ordering::Relaxed));
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
            gone
        });
        for id in ids_gone.into_iter().filter(|id| *id != number) {
            self.renumbered.remove(&id);
        }
        removed.map(|_| {
            self.trim_after_shrinking();
            number
        })
    }

    /// Once the kernel has forgotten half of the nodes held at the peak, the memory they
    /// took goes back to the system (the allocator keeps freed memory otherwise), so the
    /// daemon's RSS follows the kernel's inode cache down (`echo 2 > drop_caches`).
    fn trim_after_shrinking(&self) {
        let len = self.live.load(Ordering::Relaxed);
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= TRIM_FROM
            && len < peak / 2
            && self
                .peak
                .compare_exchange(peak, len, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            crate::sys::release_free_memory();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(kind: u32) -> NodeState {
        NodeState {
            kind,
            names: vec![(ROOT_INO, OsString::from("x"))],
            layer: 0,
            dir_layers: Vec::new(),
            unlinked: false,
            data: None,
            lower_path: OsString::new(),
        }
    }

    /// Upper on dev 10, lowers on dev 10 and dev 20.
    fn table() -> InodeTable {
        InodeTable::new(state(libc::S_IFDIR), [10, 10, 20])
    }

    #[test]
    fn numbers_are_composed_from_the_real_object() {
        let t = table();
        assert_eq!(t.claim(10, 500, None), 500);
        assert_eq!(t.claim(20, 500, None), 1 << 56 | 500);
        // Known identities keep their number; a recorded one does not change it.
        assert_eq!(t.claim(10, 500, Some(77)), 500);
        assert_eq!(t.known(20, 500), Some(1 << 56 | 500));
        // Not composable: another filesystem, a 56-bit inode number, the root's 1.
        assert!(t.claim(30, 5, None) >= RESERVED);
        assert!(t.claim(10, 1 << 56, None) >= RESERVED);
        assert!(t.claim(10, ROOT_INO, None) >= RESERVED);
    }

    #[test]
    fn a_copy_takes_its_recorded_number_when_free() {
        let t = table();
        assert_eq!(t.claim(10, 900, Some(1 << 56 | 42)), 1 << 56 | 42);
        // The lower object that composes the same number is another object now.
        let other = t.claim(20, 42, None);
        assert!(other >= RESERVED);
        // Taken recorded number: the copy's own composed number.
        assert_eq!(t.claim(10, 901, Some(1 << 56 | 42)), 901);
        // Reserved numbers are never recorded, nor taken from a record.
        assert!(!is_stable_number(other));
    }

    #[test]
    fn a_live_node_keeps_its_number_from_a_reused_disk_inode() {
        let t = table();
        let n = t.claim(10, 600, None);
        t.upsert_lookup(n, state(libc::S_IFREG));
        // Removed while the kernel holds it; a new object gets the disk inode.
        t.drop_identity_of(10, 600, n);
        t.drop_identity(10, 600);
        let fresh = t.claim(10, 600, None);
        assert_ne!(fresh, n);
        // The old one's late drop leaves the new mapping alone.
        t.drop_identity_of(10, 600, n);
        assert_eq!(t.known(10, 600), Some(fresh));
        // Once the kernel forgot it, the number is free again.
        t.forget(n, 1);
        t.drop_identity(10, 600);
        assert_eq!(t.claim(10, 600, None), n);
    }

    #[test]
    fn a_superseded_node_id_lives_until_forgotten() {
        let t = table();
        let n = t.claim(10, 700, None);
        let (_, id) = t.upsert_lookup(n, state(libc::S_IFREG));
        assert_eq!(id, n);
        t.upsert_lookup(n, state(libc::S_IFREG));
        let new = t.supersede(n, n).unwrap();
        assert!(new >= RESERVED && new != n);
        // Both node ids name the object; lookups now answer with the new one.
        assert_eq!(t.number_of(new), n);
        assert_eq!(t.number_of(n), n);
        let (node, id) = t.upsert_lookup(n, state(libc::S_IFREG));
        assert_eq!((node.ino, id), (n, new));
        assert_eq!(node.nodeids(), vec![new, n]);
        // The old id's two references, then the new id's one.
        t.forget(n, 2);
        assert!(t.get(n).is_some(), "held by the new node id");
        assert_eq!(t.get(n).unwrap().nodeids(), vec![new]);
        t.forget(new, 1);
        assert!(t.get(n).is_none());
        assert_eq!(t.number_of(new), new, "the new id is forgotten too");
        // Forgetting the new id first works the same.
        t.upsert_lookup(n, state(libc::S_IFREG));
        let newer = t.supersede(n, n).unwrap();
        t.upsert_lookup(n, state(libc::S_IFREG));
        t.forget(newer, 1);
        assert!(t.get(n).is_some(), "held by the old node id");
        t.forget(n, 1);
        assert!(t.get(n).is_none());
        assert!(t.supersede(ROOT_INO, ROOT_INO).is_none());
        // Only from the current node id.
        t.upsert_lookup(n, state(libc::S_IFREG));
        let current = t.supersede(n, n).unwrap();
        assert!(t.supersede(n, n).is_none(), "a second open on the old id");
        assert_eq!(t.number_of(current), n);
    }

    #[test]
    fn aliases_hold_a_number_until_all_are_dropped() {
        let t = table();
        let n = t.claim(20, 7, None);
        t.alias_identity(10, 800, n);
        assert_eq!(t.known(10, 800), Some(n));
        t.drop_identity_of(20, 7, n);
        // Still held by the copy: a record of it elsewhere does not get it.
        assert_ne!(t.claim(10, 801, Some(n)), n);
        t.drop_identity_of(10, 800, n);
        assert_eq!(t.claim(10, 802, Some(n)), n);
    }
}
