//! Snapshots of whole trees (names, types, modes, owners, inode numbers, data, xattrs)
//! and their comparison.

use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a snapshot records of one object: everything but atime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// (length, hash) of a regular file's data.
    pub data: Option<(u64, u64)>,
    pub target: Option<PathBuf>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Relative path ("" for the root) -> object.
pub type Tree = BTreeMap<String, Obj>;

/// (length, hash) of a file's data, read with O_NOATIME so that the reading changes nothing.
pub fn file_digest(p: &Path) -> (u64, u64) {
    use std::hash::Hasher;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
        .or_else(|_| fs::File::open(p))
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
        len += n as u64;
    }
    (len, h.finish())
}

/// Records a whole tree: names, types, modes, owners, inode numbers, link counts, sizes,
/// mtimes, ctimes, file data, symlink targets and xattrs. Does not follow symlinks.
pub fn snapshot(root: &Path) -> Tree {
    let mut t = Tree::new();
    snap_walk(root, "", &mut t);
    t
}

fn snap_walk(root: &Path, rel: &str, t: &mut Tree) {
    let p = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = md.file_type();
    let mut xattrs = Vec::new();
    for n in list_xattr(&p).unwrap_or_default() {
        let v = get_xattr(&p, &n).unwrap_or_default();
        xattrs.push((n, v));
    }
    t.insert(
        rel.to_string(),
        Obj {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            ino: md.ino(),
            nlink: md.nlink(),
            size: md.size(),
            rdev: md.rdev(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            data: ft.is_file().then(|| file_digest(&p)),
            target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
            xattrs,
        },
    );
    if ft.is_dir() {
        let mut kids: Vec<String> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kids.sort();
        for k in kids {
            let r = if rel.is_empty() {
                k
            } else {
                format!("{rel}/{k}")
            };
            snap_walk(root, &r, t);
        }
    }
}

/// Panics with the differences when two snapshots differ.
#[track_caller]
pub fn assert_same_tree(label: &str, before: &Tree, after: &Tree) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    for (k, b) in before {
        match after.get(k) {
            None => diffs.push(format!("  removed: '{k}' {b:?}")),
            Some(a) if a != b => {
                diffs.push(format!("  changed: '{k}'\n    was {b:?}\n    now {a:?}"))
            }
            _ => {}
        }
    }
    for (k, a) in after {
        if !before.contains_key(k) {
            diffs.push(format!("  added: '{k}' {a:?}"));
        }
    }
    diffs.truncate(30);
    panic!("{label} changed:\n{}", diffs.join("\n"));
}

/// A human-readable type letter of a metadata's file type.
pub fn type_char(md: &fs::Metadata) -> char {
    let ft = md.file_type();
    if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else {
        '-'
    }
}
