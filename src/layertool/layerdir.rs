//! Reading one directory of an upper dir as the union sees it: which children are objects,
//! which are whiteouts (S5, as the upper's form says), which child directories are opaque
//! (S6). Shared by `diff` and `commit`. Everything is read through *at calls on
//! descriptors, so no symlink inside a layer is ever followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::{ToolError, ToolResult};
use crate::sys::{self, Stat};
use crate::whiteout::WhiteoutForm;
use crate::whiteout::{self, OPAQUE_NAME, WH_PREFIX};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    /// A file, directory, symlink, device, fifo or socket of the layer.
    Object,
    /// A whiteout hiding `name` in the layers below; `on_disk` tells its form.
    Whiteout { on_disk: WhiteoutOnDisk },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutOnDisk {
    /// A `.wh.<name>` entry.
    AufsFile,
    /// A char 0/0 device, or an empty file with the overlay whiteout xattr, named `<name>`.
    Overlay,
}

/// One child of a layer directory. For a whiteout, `name` is the name it hides and
/// `stat` is the stat of the whiteout object itself.
pub struct Child {
    pub name: OsString,
    pub stat: Stat,
    pub kind: ChildKind,
    /// For a directory object: whether it is opaque in any form.
    pub opaque: bool,
}

impl Child {
    pub fn is_dir(&self) -> bool {
        is_dir(&self.stat)
    }
}

pub struct LayerDir {
    /// Children sorted by name (bytewise); the opaque marker is not among them.
    pub children: Vec<Child>,
    /// The stat of the `.wh..wh..opq` file, if the directory has one.
    pub opaque_marker: Option<Stat>,
}

pub fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// `rel` for messages: "/" for the root, else the path itself.
pub fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(rel).into_owned()
    }
}

/// `rel/name` without a leading slash.
pub fn join(rel: &[u8], name: &OsStr) -> Vec<u8> {
    let mut v = rel.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    v
}

/// Opens the child directory `name` of `dir` (never through a symlink).
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr, rel: &[u8]) -> ToolResult<OwnedFd> {
    sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| ToolError(format!("cannot open directory '{}': {e}", shown(rel))))
}

/// Lists the directory `dir` (at `rel` in an upper mounted with the whiteout form `form`,
/// which decides how a char 0/0 device counts) and classifies each child. Names starting with `.wh..wh.` other than the opaque marker (aufs bookkeeping)
/// are skipped.
pub fn read_upper_dir(dir: BorrowedFd<'_>, form: WhiteoutForm, rel: &[u8]) -> ToolResult<LayerDir> {
    let cannot = |what: &str, name: &OsStr, e: sys::Errno| {
        ToolError(format!("cannot {what} '{}': {e}", shown(&join(rel, name))))
    };
    let entries =
        sys::read_dir(dir).map_err(|e| ToolError(format!("cannot list '{}': {e}", shown(rel))))?;
    let mut names: Vec<OsString> = entries.into_iter().map(|e| e.name).collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    let mut children = Vec::with_capacity(names.len());
    let mut opaque_marker = None;
    for name in names {
        let stat = sys::fstatat(dir, &name).map_err(|e| cannot("stat", &name, e))?;
        let bytes = name.as_bytes();
        if bytes == OPAQUE_NAME.as_bytes() {
            opaque_marker = Some(stat);
            continue;
        }
        if bytes.starts_with(b".wh..wh.") {
            continue;
        }
        if let Some(hidden) = bytes.strip_prefix(WH_PREFIX) {
            if hidden.is_empty() {
                continue;
            }
            children.push(Child {
                name: OsStr::from_bytes(hidden).to_os_string(),
                stat,
                kind: ChildKind::Whiteout {
                    on_disk: WhiteoutOnDisk::AufsFile,
                },
                opaque: false,
            });
            continue;
        }
        if whiteout::entry_is_whiteout(&stat, true, form, dir, &name) {
            children.push(Child {
                name,
                stat,
                kind: ChildKind::Whiteout {
                    on_disk: WhiteoutOnDisk::Overlay,
                },
                opaque: false,
            });
            continue;
        }
        let opaque = is_dir(&stat) && whiteout::dir_is_opaque(dir, &name);
        children.push(Child {
            name,
            stat,
            kind: ChildKind::Object,
            opaque,
        });
    }
    // `.wh.b` sorts by its own name; keep the list sorted by the name it hides.
    children.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(LayerDir {
        children,
        opaque_marker,
    })
}

/// The xattrs of a child that a layer carries: every one but the union's private ones,
/// sorted by name.
pub fn public_xattrs(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &[u8],
) -> ToolResult<Vec<(OsString, Vec<u8>)>> {
    let mut out = crate::private_xattrs::public_xattrs(sys::XTarget::At(dir, name))
        .map_err(|e| ToolError(format!("cannot read the xattrs of '{}': {e}", shown(rel))))?;
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// Opens a layer root given on the command line.
pub fn open_root(path: &std::path::Path, what: &str) -> ToolResult<OwnedFd> {
    let fd = sys::open_dir_path(path)
        .map_err(|e| ToolError(format!("cannot open {what} '{}': {e}", path.display())))?;
    let st = sys::fstat(fd.as_fd())
        .map_err(|e| ToolError(format!("cannot stat {what} '{}': {e}", path.display())))?;
    if !is_dir(&st) {
        return Err(ToolError(format!(
            "{what} '{}' is not a directory",
            path.display()
        )));
    }
    Ok(fd)
}
