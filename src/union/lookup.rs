//! Looking names up (S4-S6), as overlayfs' namei.c does: resolving a name across the
//! layers of a merged directory (whiteouts, opaque directories, redirects), the lookup
//! index in front of it, and entering what was found in the inode table with its number.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;

use super::inodes::NodeState;
use super::*;

impl Union {
    /// The path of the dir `dir` in `layer`.
    pub(super) fn dir_path_in<'d>(&self, dir: &'d DirView, layer: usize) -> &'d OsStr {
        if self.is_upper(layer) {
            &dir.path
        } else {
            &dir.lower
        }
    }

    /// Resolves `name` in the merged directory `dir` across its layers (S4-S6). A
    /// directory of the upper carrying a redirect (a renamed merged dir) merges with the
    /// lower directories at the redirect's path instead of its own.
    pub(super) fn resolve_child(&self, dir: &DirView, name: &OsStr) -> SysResult<Option<Resolved>> {
        let mut found: Option<Resolved> = None;
        let mut lower_path = join(&dir.lower, name);
        let mut layers = dir.layers.clone();
        let mut pos = 0;
        while pos < layers.len() {
            let l = layers[pos];
            pos += 1;
            let is_upper = self.is_upper(l);
            let (pdir, lname) = if is_upper {
                (dir.path.as_os_str(), name)
            } else {
                split(&lower_path)
            };
            let dfd = match self.dir_fd(l, pdir) {
                Ok(f) => f,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
                Err(e) if found.is_none() => return Err(e),
                Err(_) => break,
            };
            let d = dfd.as_fd();
            match sys::fstatat(d, lname) {
                Ok(st) => {
                    if whiteout::entry_is_whiteout(&st, is_upper, self.layers.whiteout, d, lname) {
                        break;
                    }
                    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                    match &mut found {
                        None => {
                            found = Some(Resolved {
                                st,
                                layer: l,
                                dir_layers: if is_dir { vec![l] } else { Vec::new() },
                                data: if is_upper {
                                    self.metacopy_origin_of(&st, &join(&dir.path, name))
                                } else {
                                    None
                                },
                                lower_path: lower_path.clone(),
                            });
                            if !is_dir {
                                break;
                            }
                        }
                        Some(r) if is_dir => r.dir_layers.push(l),
                        Some(_) => break,
                    }
                    let more_below = pos < layers.len();
                    if is_upper && is_dir && (more_below || self.behaviour.redirect_dir) {
                        if let Some(target) = whiteout::dir_redirect(d, lname, &dir.lower) {
                            // The lowers hold this dir's contents at `target`, resolved
                            // from their root as its own lookup would.
                            layers.truncate(pos);
                            layers.extend(self.lower_dir_layers(&target)?);
                            lower_path = target;
                            if let Some(r) = &mut found {
                                r.lower_path = lower_path.clone();
                            }
                            continue;
                        }
                    }
                    if !more_below {
                        continue;
                    }
                    if whiteout::has_aufs_whiteout(d, lname) || whiteout::dir_is_opaque(d, lname) {
                        break;
                    }
                }
                Err(Errno::ENOENT) => {
                    // A whiteout hides what layers below hold; below the last, nothing.
                    if pos < layers.len() && whiteout::has_aufs_whiteout(d, lname) {
                        break;
                    }
                }
                Err(e) if found.is_none() && e != Errno::ENOTDIR => return Err(e),
                Err(_) => break,
            }
        }
        Ok(found)
    }

    /// The layers below the upper that merge into the directory at `lower_path`, walked
    /// from their root with the usual rules (whiteouts, opaque dirs).
    pub(super) fn lower_dir_layers(&self, lower_path: &OsStr) -> SysResult<Vec<usize>> {
        let root = self.node(ROOT_INO)?.snapshot();
        let mut view = DirView {
            path: OsString::new(),
            lower: OsString::new(),
            layers: root
                .dir_layers
                .into_iter()
                .filter(|l| !self.is_upper(*l))
                .collect(),
        };
        for c in lower_path.as_bytes().split(|b| *b == b'/') {
            let c = OsStr::from_bytes(c);
            match self.resolve_child(&view, c)? {
                Some(r) if r.kind() == libc::S_IFDIR => view = view.child(c, &r),
                _ => return Ok(Vec::new()),
            }
        }
        Ok(view.layers)
    }

    /// Resolves `name` in `dir` through the directory's lookup index when it has one (or
    /// deserves one: many layers): a name the index lacks is absent without a syscall, and
    /// a present one is resolved from the upper and its top-most layer down.
    pub(super) fn resolve_indexed(
        &self,
        dir_ino: u64,
        dir: &DirView,
        name: &OsStr,
    ) -> SysResult<Option<Resolved>> {
        const INDEX_FROM_LAYERS: usize = 4;
        let idx = match self.index.get(dir_ino) {
            Some(i) => i,
            None if dir.layers.len() >= INDEX_FROM_LAYERS => {
                let generation = self.index.generation();
                let list = self.merged_list(dir)?;
                self.index.store(dir_ino, generation, list)
            }
            None => return self.resolve_child(dir, name),
        };
        let Some(&top) = idx.names.get(name) else {
            // Names created since the index was built went through invalidate(); only
            // the upper can have gained one behind it, and only by a copy-up of a name
            // the index already holds.
            return Ok(None);
        };
        let Some(pos) = dir.layers.iter().position(|l| *l == top) else {
            return self.resolve_child(dir, name);
        };
        let mut layers: Vec<usize> = dir
            .layers
            .iter()
            .copied()
            .filter(|l| self.is_upper(*l))
            .collect();
        layers.extend(
            dir.layers[pos..]
                .iter()
                .copied()
                .filter(|l| !self.is_upper(*l)),
        );
        let view = DirView {
            layers,
            ..dir.clone()
        };
        self.resolve_child(&view, name)
    }

    /// How the layers see the directory node `node`.
    pub(super) fn dir_view(&self, node: &Node) -> SysResult<DirView> {
        let s = node.snapshot();
        if s.kind != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        Ok(DirView {
            path: self.path_of(node)?,
            lower: s.lower_path,
            layers: s.dir_layers,
        })
    }

    /// The attributes the merged view shows for a resolved object.
    pub(super) fn attr_from(&self, number: u64, mut st: Stat, dir_layers: &[usize]) -> Attr {
        st.st_ino = number;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if dir_layers.len() > 1 || (is_dir && self.behaviour.static_nlink) {
            // Like overlayfs: the link count of a merged dir cannot be known cheaply.
            st.st_nlink = 1;
        }
        Attr { st, nodeid: number }
    }

    /// Looks up `name` in `parent` and counts a kernel reference on the result.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> SysResult<Attr> {
        check_name(name).map_err(|e| if e == Errno::EINVAL { Errno::ENOENT } else { e })?;
        if whiteout::is_reserved_name(name) {
            return Err(Errno::ENOENT);
        }
        let _ns = self.namespace_lock.read();
        self.lookup_locked(parent, name)
    }

    pub(super) fn lookup_locked(&self, parent: u64, name: &OsStr) -> SysResult<Attr> {
        let pnode = self.node(parent)?;
        let dir = self.dir_view(&pnode)?;
        let mut r = self
            .resolve_indexed(parent, &dir, name)?
            .ok_or(Errno::ENOENT)?;
        if self.link_up(&pnode, &dir.path, name, &r)? {
            let dir = self.dir_view(&pnode)?;
            r = self.resolve_child(&dir, name)?.ok_or(Errno::ENOENT)?;
        }
        Ok(self.register(parent, &dir.path, name, r))
    }

    /// Our inode number for the entry `name` of the merged dir at `dir`, resolved as `r`:
    /// keyed by its on-disk identity, so the names of a hard link share one inode. Seen
    /// for the first time, an upper object takes the number its copy-up recorded.
    pub(super) fn number_of(&self, r: &Resolved, dir: &OsStr, name: &OsStr) -> u64 {
        let (dev, ino) = (r.st.st_dev, r.st.st_ino);
        self.inodes.known(dev, ino).unwrap_or_else(|| {
            let recorded = if self.is_upper(r.layer) {
                let udir = self.dir_fd(0, dir).ok();
                udir.and_then(|d| copyup::recorded_number(d.as_fd(), name))
            } else {
                None
            };
            self.inodes.claim(dev, ino, recorded)
        })
    }

    /// Enters a resolved object (the entry `name` of the merged dir at `dir`) in the inode
    /// table (one kernel reference).
    pub(super) fn register(&self, parent: u64, dir: &OsStr, name: &OsStr, r: Resolved) -> Attr {
        let kind = r.kind();
        let mut number = self.number_of(&r, dir, name);
        if self
            .inodes
            .get(number)
            .is_some_and(|n| n.state.lock().kind != kind)
        {
            // The disk inode was reused by an object of another type while the kernel
            // still holds the old one: the new object gets a number of its own.
            self.inodes
                .drop_identity_of(r.st.st_dev, r.st.st_ino, number);
            number = self.number_of(&r, dir, name);
        }
        let (_, nodeid) = self.inodes.upsert_lookup(
            number,
            NodeState {
                kind,
                names: vec![(parent, name.to_os_string())],
                layer: r.layer,
                dir_layers: r.dir_layers.clone(),
                unlinked: false,
                data: r.data.clone(),
                lower_path: r.lower_path.clone(),
            },
        );
        let mut st = r.st;
        self.metacopy_blocks(&mut st, &r.data);
        // The upper path is only built where overrides are read: lookups are the hot path.
        if self.overrides.read {
            if self.is_upper(r.layer) {
                self.show_override_at(r.layer, &join(dir, name), &mut st);
            } else {
                self.show_override_at(r.layer, &r.lower_path, &mut st);
            }
        }
        Attr {
            nodeid,
            ..self.attr_from(number, st, &r.dir_layers)
        }
    }
}
