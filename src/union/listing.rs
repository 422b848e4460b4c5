//! Merged directory listings (S9): every visible name once, reserved names and whiteouts
//! never shown, and directory handles that serve a stable snapshot across readdir calls.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, RandomState};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

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
    /// Its directory offset (see `cookie`); listings are sorted by it.
    pub cookie: u64,
}

/// Offsets 1 and 2 are "." and ".."; 0 is the start.
const DOT_COOKIES: [u64; 2] = [1, 2];

/// The directory offset of a name: derived from the name alone (as ext4's hash cookies),
/// so an offset stays valid whatever happens to the directory, and a listing resumed from
/// another snapshot (the kernel's cached one, or one taken after a change) neither repeats
/// nor skips the names both hold. SipHash with keys drawn for each mount (so nobody can
/// make names that collide), kept below 2^62 and above the dots.
fn cookie(keys: &RandomState, name: &OsStr) -> u64 {
    (keys.hash_one(name.as_bytes()) >> 2).max(DOT_COOKIES[1] + 1)
}

/// Where a listing of the two dots and `entries` resumes after `offset`: the position of
/// the first entry whose cookie is above it.
fn resume_at(entries: &[ListEntry], offset: u64) -> usize {
    match offset {
        0..=2 => offset as usize,
        _ => 2 + entries.partition_point(|e| e.cookie <= offset),
    }
}

/// Sorts a listing by offset; a name whose cookie collides with the one before takes the
/// next free value (two names in 2^62: no real directory has that).
fn order_by_cookie(entries: &mut [ListEntry]) {
    entries.sort_by_key(|e| e.cookie);
    for i in 1..entries.len() {
        if entries[i].cookie <= entries[i - 1].cookie {
            entries[i].cookie = entries[i - 1].cookie + 1;
        }
    }
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
            let xattr_whiteouts =
                self.may_hold_xattr_whiteouts(l) && whiteout::dir_holds_xattr_whiteouts(d);
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
                        && (xattr_whiteouts
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
                    cookie: cookie(&self.cookie_keys, &e.name),
                    name: e.name,
                    ino,
                    kind: kind.unwrap_or(libc::S_IFREG),
                    layer: l,
                });
            }
            decided.extend(hidden_below);
        }
        order_by_cookie(&mut out);
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
    /// `from_start`: a listing read from its start, which checks that a cached listing's
    /// layer dirs are still readable; the reads that continue it need not check again.
    fn snapshot_dir(
        &self,
        ino: u64,
        from_start: bool,
    ) -> SysResult<([ListEntry; 2], Arc<Vec<ListEntry>>)> {
        let node = self.node(ino)?;
        let _ns = self.namespace_lock.read();
        let dir = self.dir_view(&node)?;
        let parent = node
            .snapshot()
            .names
            .first()
            .map(|(p, _)| *p)
            .unwrap_or(ino);
        let dot = |name: &str, ino: u64, cookie: u64| ListEntry {
            name: name.into(),
            ino,
            kind: libc::S_IFDIR,
            layer: 0,
            cookie,
        };
        let dots = [
            dot(".", ino, DOT_COOKIES[0]),
            dot("..", parent, DOT_COOKIES[1]),
        ];
        if let Some(cached) = self.index.get(ino) {
            // The cached listing stands for the layer dirs: they must still be readable
            // (a lower made unreadable underneath answers EACCES here, as a fresh listing).
            for &l in dir.layers.iter().filter(|_| from_start) {
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

    /// Whether directory `ino` can be listed now (every layer dir of it readable).
    pub fn check_listable(&self, ino: u64) -> SysResult<()> {
        self.snapshot_dir(ino, true).map(drop)
    }

    /// Feeds the entries of directory `ino` after `offset` to `add` (which gets each
    /// entry's offset and returns true when its buffer is full), from the directory's
    /// current listing. There are no directory handles (the kernel opens directories
    /// itself, FUSE_NO_OPENDIR_SUPPORT) and none are needed: offsets are name cookies,
    /// valid in any listing of the directory, so a listing read in pieces while names come
    /// and go neither repeats nor skips the names that stay. The kernel tags the listing
    /// it caches with the directory's version as of the read at offset 0, and that read is
    /// never answered from a listing older than itself.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, &ListEntry) -> bool,
    ) -> SysResult<()> {
        let (dots, entries) = self.snapshot_dir(ino, offset == 0)?;
        let first = resume_at(&entries, offset);
        for e in dots.iter().chain(entries.iter()).skip(first) {
            if add(e.cookie, e) {
                break;
            }
        }
        Ok(())
    }

    /// Whether the merged dir `dir` has no visible entries.
    pub(super) fn merged_is_empty(&self, dir: &DirView) -> SysResult<bool> {
        Ok(self.merged_list(dir)?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(keys: &RandomState, names: &[&str]) -> Vec<ListEntry> {
        let mut v: Vec<ListEntry> = names
            .iter()
            .map(|n| ListEntry {
                name: (*n).into(),
                ino: 0,
                kind: libc::S_IFREG,
                layer: 0,
                cookie: cookie(keys, OsStr::new(n)),
            })
            .collect();
        order_by_cookie(&mut v);
        v
    }

    fn names_after(entries: &[ListEntry], offset: u64) -> Vec<String> {
        let first = resume_at(entries, offset).max(2) - 2;
        entries[first..]
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn an_offset_resumes_in_any_snapshot_without_repeats_or_skips() {
        let keys = RandomState::new();
        let before = listing(&keys, &["a", "b", "c", "d", "e", "f"]);
        // Read three names, then the directory changes: "b" goes, "x" comes.
        let read: Vec<String> = before[..3]
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        let offset = before[2].cookie;
        let after = listing(&keys, &["a", "c", "d", "e", "f", "x"]);
        let rest = names_after(&after, offset);
        let mut all = read.clone();
        all.extend(rest.iter().cloned());
        for kept in ["a", "c", "d", "e", "f"] {
            assert_eq!(
                all.iter().filter(|n| *n == kept).count(),
                1,
                "{kept}: {all:?}"
            );
        }
    }

    #[test]
    fn cookies_are_above_the_dots_and_unique() {
        let v = listing(&RandomState::new(), &["", ".x", "a", "b"]);
        assert!(v
            .iter()
            .all(|e| e.cookie > DOT_COOKIES[1] && e.cookie < 1 << 62));
        assert!(v.windows(2).all(|w| w[0].cookie < w[1].cookie));
        assert_eq!(resume_at(&v, 0), 0);
        assert_eq!(resume_at(&v, 1), 1);
        assert_eq!(resume_at(&v, 2), 2);
        assert_eq!(resume_at(&v, v[3].cookie), 6);
    }
}
