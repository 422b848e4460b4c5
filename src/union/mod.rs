//! The union core: the merged view over a `LayerSet`, in plain Rust types and errnos, with
//! no FUSE dependency. Submodules add the operations by concern: `lookup` (name
//! resolution, S4-S6), `inodes` (the table), `copyup` with `datacopy` and `metacopy`,
//! `namespace` (create, link, remove), `rename`, `files` (open files, attributes, xattrs),
//! `listing` (merged readdir) with `dircache` and `index`, `protect` (immutable and
//! append-only), `overrides` (owners and modes kept in xattrs).
//!
//! Lookup (S4-S6): an entry comes from the highest layer that has it; a directory merges
//! with directories below it until a non-directory, a whiteout or an opaque marker.

mod copyup;
mod datacopy;
mod dircache;
mod files;
mod index;
mod inodes;
mod listing;
mod lookup;
mod metacopy;
mod namespace;
mod overrides;
mod protect;
mod rename;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::layers::{LayerSet, Role};
use crate::sys::{self, Errno, Stat, SysResult};
use crate::whiteout;
pub use files::SetAttr;
pub use inodes::ROOT_INO;
use inodes::{InodeTable, Node, NodeState};
pub use namespace::NewKind;

/// The kernel's caches, as the union sees them: told about every change the union makes
/// that the kernel did not ask for itself (privilege bits dropped on write or fallocate),
/// so that nothing it caches goes stale.
pub trait KernelCache: Send + Sync {
    /// The attributes of the kernel inode `nodeid` changed.
    fn attributes_changed(&self, nodeid: u64);
}

/// What the mount options ask of the union.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// `-o volatile`: nothing is synced; an unclean stop leaves a marker.
    pub volatile: bool,
    /// `-o fsync=0` (fuse-overlayfs): nothing is synced, and no marker is left.
    pub no_sync: bool,
    /// `-o metacopy=on`: metadata changes of lower files copy no data.
    pub metacopy: bool,
    /// `-o redirect_dir=on`: a merged directory is renamed with a redirect, O(1).
    pub redirect_dir: bool,
    /// POSIX ACLs are on (not `-o noacl`): new objects inherit their parent's default ACL.
    pub acls: bool,
    /// `-o static_nlink` (fuse-overlayfs): every directory reports st_nlink 1.
    pub static_nlink: bool,
    /// `-o xattr_permissions=1|2` (fuse-overlayfs): owners and modes kept in an xattr.
    pub xattr_permissions: u8,
    /// `-o noatime`: reads do not change the layer files' access times.
    pub noatime: bool,
    /// `-o nodev`: device nodes cannot be opened (so overrides may show them).
    pub nodev: bool,
}

impl Behaviour {
    /// Whether fsync and the syncs of copy-up reach the disk.
    pub fn syncs(&self) -> bool {
        !self.volatile && !self.no_sync
    }
}

/// Who asks: the credentials of the FUSE request, with the ids the layers store for them
/// (uidmapping may make them differ from the kernel's).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The kernel's uid is 0: root's exemptions apply, whatever id its files are stored
    /// with.
    pub root: bool,
    /// How the kernel's group ids are stored (gidmapping), for the caller's
    /// supplementary groups, which /proc shows as the kernel's.
    pub gids: &'static crate::idmap::IdMap,
}

impl Caller {
    /// CAP_SYS_ADMIN, which the kernel asks of whoever reads or lists `trusted.*` xattrs.
    pub fn is_admin(&self) -> bool {
        sys::process_has_capability(self.pid, sys::CAP_SYS_ADMIN)
    }

    /// The kernel's in_group_or_capable: the caller may keep a setgid bit of group `gid`
    /// (its group, one of its supplementary groups, or CAP_FSETID).
    pub fn in_group_or_capable(&self, gid: u32) -> bool {
        self.root
            || self.gid == gid
            || sys::process_groups(self.pid)
                .iter()
                .any(|g| self.gids.to_stored(*g) == gid)
            || sys::process_has_capability(self.pid, sys::CAP_FSETID)
    }
}

/// Attributes of an object in the merged view; `st.st_ino` is our inode number.
#[derive(Clone, Copy)]
pub struct Attr {
    pub st: Stat,
    /// The node id a lookup counted (its number, unless superseded: see inodes).
    pub nodeid: u64,
}

impl Attr {
    pub fn ino(&self) -> u64 {
        self.st.st_ino
    }
}

/// What resolving a name across the layers found.
#[derive(Clone)]
pub struct Resolved {
    pub st: Stat,
    pub layer: usize,
    pub dir_layers: Vec<usize>,
    /// For a metadata-only upper copy: where its data is.
    pub data: Option<(usize, OsString)>,
    /// The object's path in the layers below the upper (differs from the merged path
    /// under a renamed directory's redirect).
    pub lower_path: OsString,
}

/// A merged directory as the layers see it: its path in the upper (the merged path), its
/// path in the layers below (they differ under a redirect), and the layers merging in it.
#[derive(Clone, Debug)]
pub struct DirView {
    pub path: OsString,
    pub lower: OsString,
    pub layers: Vec<usize>,
}

impl DirView {
    /// The view of a resolved child directory of this one.
    pub fn child(&self, name: &OsStr, r: &Resolved) -> DirView {
        DirView {
            path: join(&self.path, name),
            lower: r.lower_path.clone(),
            layers: r.dir_layers.clone(),
        }
    }
}

impl Resolved {
    pub fn kind(&self) -> u32 {
        self.st.st_mode & libc::S_IFMT
    }
}

pub struct Union {
    layers: LayerSet,
    inodes: InodeTable,
    files: files::Handles,
    /// Directories removed (or replaced by a rename) while the kernel still knows them:
    /// their last copy, so that an open directory keeps answering fstat.
    removed_dirs: dashmap::DashMap<u64, Arc<OwnedFd>>,
    dircache: dircache::DirCache,
    index: index::LookupIndex,
    /// Lower hard links already copied up: lower (dev, ino) -> the upper copy, so that
    /// every other name of the link is linked to it when it is looked up.
    linkups: dashmap::DashMap<(u64, u64), Arc<OwnedFd>>,
    /// What the mount options ask of the union.
    behaviour: Behaviour,
    /// The workdir's marker: this upper has held metadata-only copies.
    metacopy_marker: std::sync::atomic::AtomicBool,
    /// Owners and modes kept in xattrs (`overrides`).
    overrides: overrides::Overrides,
    /// Renames take it exclusively; path computations and changes share it, so a path is
    /// never computed from a half-applied rename.
    namespace_lock: RwLock<()>,
    /// Set once the kernel connection exists.
    kernel_cache: std::sync::OnceLock<Box<dyn KernelCache>>,
    /// Copy-ups made, and the bytes of data they copied (for `stratafs stats`).
    copyups: std::sync::atomic::AtomicU64,
    copied_bytes: std::sync::atomic::AtomicU64,
    /// The keys of the directory-offset hash (listing.rs `cookie`), drawn per mount.
    cookie_keys: std::hash::RandomState,
}

/// `parent/name` (or `name` at the root).
pub fn join(parent: &OsStr, name: &OsStr) -> OsString {
    if parent.is_empty() {
        return name.to_os_string();
    }
    let mut v = parent.as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(name.as_bytes());
    OsStr::from_bytes(&v).to_os_string()
}

/// Splits a relative path into (parent, last component).
pub fn split(path: &OsStr) -> (&OsStr, &OsStr) {
    let b = path.as_bytes();
    match b.iter().rposition(|c| *c == b'/') {
        Some(i) => (OsStr::from_bytes(&b[..i]), OsStr::from_bytes(&b[i + 1..])),
        None => (OsStr::new(""), path),
    }
}

pub fn check_name(name: &OsStr) -> SysResult<()> {
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name.as_bytes().contains(&b'/') || name == "." || name == ".." {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Union {
    pub fn new(layers: LayerSet, behaviour: Behaviour) -> SysResult<Union> {
        let mut dir_layers = Vec::new();
        for (i, l) in layers.layers.iter().enumerate() {
            dir_layers.push(i);
            if l.role == Role::Upper || i + 1 < layers.layers.len() {
                let opaque = sys::fstatat(l.fd(), OsStr::new(whiteout::OPAQUE_NAME)).is_ok();
                if opaque {
                    break;
                }
            }
        }
        let root = NodeState {
            kind: libc::S_IFDIR,
            names: Vec::new(),
            layer: 0,
            dir_layers,
            unlinked: false,
            data: None,
            lower_path: OsString::new(),
        };
        let root_st = sys::fstat(layers.layers[0].fd())?;
        let inodes = InodeTable::new(root, layers.layers.iter().map(|l| l.dev));
        let marker = layers.workdir.as_ref().is_some_and(|w| {
            sys::fstatat(w.as_fd(), OsStr::new(metacopy::METACOPY_MARKER)).is_ok()
        });
        inodes.alias_identity(root_st.st_dev, root_st.st_ino, ROOT_INO);
        let overrides =
            overrides::Overrides::set_up(behaviour.xattr_permissions, &layers, behaviour.nodev)?;
        Ok(Union {
            overrides,
            layers,
            inodes,
            files: files::Handles::default(),
            removed_dirs: dashmap::DashMap::new(),
            behaviour,
            metacopy_marker: std::sync::atomic::AtomicBool::new(marker),
            dircache: dircache::DirCache::default(),
            index: index::LookupIndex::default(),
            linkups: dashmap::DashMap::new(),
            namespace_lock: RwLock::new(()),
            kernel_cache: std::sync::OnceLock::new(),
            copyups: Default::default(),
            copied_bytes: Default::default(),
            cookie_keys: std::hash::RandomState::new(),
        })
    }

    /// The union's lines of `stratafs stats`: copy-ups, open files, objects, memory.
    pub fn report_lines(&self) -> Vec<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let mem = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |k: &str| {
            mem.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        vec![
            format!(
                "copy-ups: {} ({} KiB of data copied)",
                self.copyups.load(Relaxed),
                self.copied_bytes.load(Relaxed) >> 10
            ),
            format!("open files: {}", self.files.open_count()),
            format!("objects the kernel holds: {}", self.inodes.live_count()),
            format!("memory: RSS {}, peak {}", field("VmRSS:"), field("VmHWM:")),
        ]
    }

    /// Counts a copy-up of `bytes` of data.
    pub(super) fn count_copyup(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.copyups.fetch_add(1, Relaxed);
        self.copied_bytes.fetch_add(bytes, Relaxed);
    }

    /// On a volatile mount, marks the workdir once the mount is live (a clean stop removes
    /// the marker; one left behind tells the next mount that the upper may be torn).
    pub fn mark_volatile(&self) -> SysResult<()> {
        if self.behaviour.volatile {
            self.layers.set_volatile_marker()
        } else {
            Ok(())
        }
    }

    /// Connects the union to the kernel's caches (once, when the session exists).
    pub fn set_kernel_cache(&self, cache: Box<dyn KernelCache>) {
        let _ = self.kernel_cache.set(cache);
    }

    /// Tells the kernel that the attributes of object `number` changed behind its back,
    /// under every node id it knows the object by.
    pub(super) fn attributes_changed(&self, number: u64) {
        if let Some(k) = self.kernel_cache.get() {
            let ids = self
                .inodes
                .get(number)
                .map_or(vec![number], |n| n.nodeids());
            for id in ids {
                k.attributes_changed(id);
            }
        }
    }

    /// The number of the object the kernel knows by `nodeid`.
    pub fn number_of_node(&self, nodeid: u64) -> u64 {
        self.inodes.number_of(nodeid)
    }

    /// Gives object `number` a new node id if `nodeid` is its current one
    /// (inodes::InodeTable::supersede).
    pub fn supersede(&self, number: u64, nodeid: u64) -> Option<u64> {
        self.inodes.supersede(number, nodeid)
    }

    pub fn read_only(&self) -> bool {
        !self.layers.has_upper
    }

    fn is_upper(&self, layer: usize) -> bool {
        self.layers.has_upper && layer == 0
    }

    fn is_init(&self, layer: usize) -> bool {
        self.layers.layers[layer].role == Role::Init
    }

    /// Whether empty regular files of this layer must be checked for the whiteout xattr:
    /// lower layers always; the upper only under whiteout=overlay.
    fn may_hold_xattr_whiteouts(&self, layer: usize) -> bool {
        !self.is_upper(layer) || self.layers.whiteout == whiteout::WhiteoutForm::Overlay
    }

    /// Layers whose files the daemon changes: the upper, and the init layer in place.
    fn is_writable_layer(&self, layer: usize) -> bool {
        self.is_upper(layer) || self.is_init(layer)
    }

    /// The user's workdir (on the upper's filesystem), when there is an upper: it holds the
    /// shared whiteout (whiteout::write_whiteout).
    fn workdir(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.layers.workdir.as_ref().map(|w| w.as_fd())
    }

    pub fn node(&self, ino: u64) -> SysResult<Arc<Node>> {
        self.inodes.get(ino).ok_or(Errno::ENOENT)
    }

    /// The merged-view path of a node, relative to the layer roots ("" for the root).
    fn path_of(&self, node: &Node) -> SysResult<OsString> {
        if node.ino == ROOT_INO {
            return Ok(OsString::new());
        }
        let names = node.state.lock().names.clone();
        let mut last = Errno::ENOENT;
        // A hard link may be known by a name in a directory the kernel has since forgotten:
        // the first name whose ancestors are all known gives the path.
        for (parent, name) in names {
            match self.dir_path(parent) {
                Ok(p) => return Ok(join(&p, &name)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The merged path of the directory node `ino` (directories have one name).
    fn dir_path(&self, ino: u64) -> SysResult<OsString> {
        let mut parts: Vec<OsString> = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = self.node(cur)?;
            let (parent, name) = n.state.lock().names.first().cloned().ok_or(Errno::ENOENT)?;
            parts.push(name);
            cur = parent;
            if parts.len() > 4096 {
                return Err(Errno::ELOOP);
            }
        }
        let mut out = OsString::new();
        for p in parts.iter().rev() {
            out = join(&out, p);
        }
        Ok(out)
    }

    /// An O_PATH fd of the directory at `path` in `layer`, resolved beneath its root.
    fn dir_fd(&self, layer: usize, path: &OsStr) -> SysResult<Arc<OwnedFd>> {
        // Paths near PATH_MAX are walked in pieces: from the (cached) fd of an ancestor,
        // each piece beneath it.
        const PIECE: usize = 2048;
        self.dircache
            .get_or_open(layer, path, self.is_writable_layer(layer), || {
                let b = path.as_bytes();
                if b.len() <= PIECE {
                    return sys::open_beneath(
                        self.layers.layers[layer].fd(),
                        path,
                        libc::O_PATH | libc::O_DIRECTORY,
                    );
                }
                // The last piece at most PIECE long; the prefix recurses.
                let from = b.len() - PIECE - 1;
                let cut = from
                    + b[from..]
                        .iter()
                        .position(|c| *c == b'/')
                        .ok_or(Errno::ENAMETOOLONG)?;
                let base = self.dir_fd(layer, OsStr::from_bytes(&b[..cut]))?;
                sys::open_beneath(
                    base.as_fd(),
                    OsStr::from_bytes(&b[cut + 1..]),
                    libc::O_PATH | libc::O_DIRECTORY,
                )
            })
    }

    /// The parent dir fd in `layer` of the object at `path`, and its last component.
    fn parent_fd<'p>(&self, layer: usize, path: &'p OsStr) -> SysResult<(Arc<OwnedFd>, &'p OsStr)> {
        let (parent, name) = split(path);
        Ok((self.dir_fd(layer, parent)?, name))
    }

    fn stat_in(&self, layer: usize, path: &OsStr) -> SysResult<Stat> {
        if path.is_empty() {
            return sys::fstat(self.layers.layers[layer].fd());
        }
        let (dfd, name) = self.parent_fd(layer, path)?;
        sys::fstatat(dfd.as_fd(), name)
    }

    /// The kernel dropped `n` references on its node id `nodeid`.
    pub fn forget(&self, nodeid: u64, n: u64) {
        if let Some(number) = self.inodes.forget(nodeid, n) {
            self.removed_dirs.remove(&number);
            self.index.forget(number);
        }
    }

    /// Before the directory `r` (at `path` in the merged view) leaves the namespace: keeps
    /// its top-most copy open for the kernel's node `number`, if the kernel has one.
    fn keep_removed_dir(&self, number: u64, path: &OsStr, r: &Resolved) {
        if r.kind() != libc::S_IFDIR || self.inodes.get(number).is_none() {
            return;
        }
        let at = if self.is_upper(r.layer) {
            path
        } else {
            &r.lower_path
        };
        if let Ok(fd) = self.dir_fd(r.layer, at) {
            self.removed_dirs.insert(number, fd);
        }
    }

    /// Where a node's current copy is: (layer, path, state). Tries every known name.
    fn locate(&self, node: &Node) -> SysResult<(usize, OsString, NodeState)> {
        self.locate_stat(node).map(|(l, p, s, _)| (l, p, s))
    }

    /// `locate`, plus the stat of the copy when finding it already took one (a hard link
    /// known by several names is probed name by name).
    fn locate_stat(&self, node: &Node) -> SysResult<(usize, OsString, NodeState, Option<Stat>)> {
        let s = node.snapshot();
        if !self.is_upper(s.layer) {
            let path = s.lower_path.clone();
            return Ok((s.layer, path, s, None));
        }
        if s.names.len() > 1 {
            // Hard links: use a name that still exists in the upper.
            for (parent, name) in &s.names {
                if let Ok(p) = self.dir_path(*parent) {
                    let path = join(&p, name);
                    if let Ok(st) = self.stat_in(0, &path) {
                        node.promote_name(*parent, name);
                        return Ok((s.layer, path, s, Some(st)));
                    }
                }
            }
        }
        let path = self.path_of(node)?;
        Ok((s.layer, path, s, None))
    }

    pub fn getattr(&self, ino: u64) -> SysResult<Attr> {
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        match self.getattr_node(&node) {
            // Unlinked (or replaced by a rename) while open: the open file or directory
            // still has attributes, with no link left.
            Err(Errno::ENOENT) => {
                let fd = self.open_fd_of(ino).ok_or(Errno::ENOENT)?;
                let mut st = sys::fstat(fd.as_fd())?;
                if node.state.lock().unlinked {
                    st.st_nlink = 0;
                }
                self.show_override(sys::XTarget::Fd(fd.as_fd()), &mut st);
                Ok(self.attr_from(ino, st, &[]))
            }
            r => r,
        }
    }

    /// A descriptor of an object that has no name left: one of its open files, or the
    /// directory kept for the kernel after an rmdir.
    fn open_fd_of(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.files
            .any_for(ino)
            .map(|f| f.fd())
            .or_else(|| self.removed_dirs.get(&ino).map(|f| f.clone()))
    }

    fn getattr_node(&self, node: &Node) -> SysResult<Attr> {
        let (layer, path, s, seen) = self.locate_stat(node)?;
        let mut st = match seen {
            Some(st) => st,
            None => self.stat_in(layer, &path)?,
        };
        self.metacopy_blocks(&mut st, &s.data);
        self.show_override_at(layer, &path, &mut st);
        Ok(self.attr_from(node.ino, st, &s.dir_layers))
    }

    pub fn readlink(&self, ino: u64) -> SysResult<OsString> {
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        let (layer, path, _) = self.locate(&node)?;
        let (dfd, name) = self.parent_fd(layer, &path)?;
        sys::readlinkat(dfd.as_fd(), name)
    }

    /// The session ended cleanly: sync a volatile upper and lift its marker.
    pub fn finish_clean(&self) {
        if !self.behaviour.volatile {
            return;
        }
        if let (Some(u), Some(w)) = (self.layers.layers.first(), &self.layers.workdir) {
            if sys::syncfs(u.fd()).is_ok() {
                let _ = sys::unlinkat(w.as_fd(), OsStr::new(crate::layers::VOLATILE_MARKER), false);
            }
        }
    }

    pub fn statfs(&self) -> SysResult<libc::statvfs> {
        sys::fstatvfs(self.layers.layers[0].fd())
    }
}
