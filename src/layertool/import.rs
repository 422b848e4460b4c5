//! `stratafs import LAYER DIR [--whiteout=aufs|overlay]`: unpacks an OCI or docker-save
//! layer tar (gzip detected by its magic bytes) into a new layer dir.
//!
//! Safety: every entry is resolved component by component with *at calls from the layer
//! root; an absolute name, a `..` component, a path through a symlink (or a non-directory)
//! unpacked earlier, and a hard link to outside the layer or to a missing entry are
//! refused with an error naming the entry. Atomicity: the layer is built in a temporary
//! dir beside DIR (same filesystem) and renamed into place only when complete; on failure
//! the temporary dir is removed, so nothing is left behind.
//!
//! Whiteouts: kept as `.wh.<name>` files by default; with `--whiteout=overlay` they become
//! char 0/0 devices (or make a directory of the same layer opaque) and `.wh..wh..opq`
//! markers become `trusted.overlay.opaque=y`. Owners are restored when the caller may
//! chown (root); otherwise files belong to the caller.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use super::tarpath::{self, PathProblem};
use super::{temp_name_for, ToolError, ToolResult};
use crate::sys::{self, Errno, XTarget};
use crate::text::one_line;
use crate::whiteout::WhiteoutForm;
use crate::whiteout::{self, OPAQUE_NAME, WH_PREFIX};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const XATTR_PAX_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Mode of the layer root when the tar has no entry for it.
const DEFAULT_ROOT_MODE: u32 = 0o755;

/// The metadata an entry carries.
#[derive(Clone, Debug)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Parses a PAX time (`secs[.fraction]`, possibly negative) into seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: i64 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - nsec),
    })
}

/// Why walking to a path inside the layer failed.
enum WalkError {
    /// The named prefix is a symlink.
    ThroughSymlink(Vec<u8>),
    /// The named prefix is neither a directory nor a symlink.
    NotDirectory(Vec<u8>),
    /// The named prefix does not exist (only when not creating).
    Missing(Vec<u8>),
    Sys(Vec<u8>, Errno),
}

/// A name from the tar, fit for a one-line message.
fn lossy(b: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(b))
}

/// The temporary dir the layer is built in; removed on drop unless moved into place.
struct Staging {
    path: PathBuf,
    root: OwnedFd,
    placed: bool,
}

impl Staging {
    fn create(dir: &Path) -> ToolResult<Staging> {
        let name = dir
            .file_name()
            .ok_or_else(|| ToolError(format!("'{}' names no directory", dir.display())))?;
        let path = dir.with_file_name(temp_name_for(name));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                ToolError(format!(
                    "cannot create a temporary dir beside '{}': {e}",
                    dir.display()
                ))
            })?;
        let root = match sys::open_dir_path(&path) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(ToolError(format!("cannot open '{}': {e}", path.display())));
            }
        };
        Ok(Staging {
            path,
            root,
            placed: false,
        })
    }

    fn place(mut self, dir: &Path) -> ToolResult<()> {
        std::fs::rename(&self.path, dir).map_err(|e| {
            ToolError(format!(
                "cannot move the layer into '{}': {e}",
                dir.display()
            ))
        })?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.placed {
            // The tar may have made the layer's root read-only.
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700));
            let _ = crate::layers::remove_contents(self.root.as_fd());
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

struct Unpacker {
    root: OwnedFd,
    form: WhiteoutForm,
    /// Metadata of directory entries, applied once everything is unpacked.
    dirs: BTreeMap<Vec<u8>, Meta>,
    root_meta: Option<Meta>,
    /// Overlay form: (parent path, hidden name) of each `.wh.<name>` entry.
    whiteouts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Overlay form: directories that had a `.wh..wh..opq` entry.
    opaque_dirs: Vec<Vec<u8>>,
}

impl Unpacker {
    /// Opens the directory `parts` names, refusing symlinks and non-directories on the
    /// way; missing directories are created (mode 0755) when `create`.
    fn walk(&self, parts: &[&[u8]], create: bool) -> Result<OwnedFd, WalkError> {
        let mut cur = sys::openat(
            self.root.as_fd(),
            OsStr::new("."),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| WalkError::Sys(Vec::new(), e))?;
        for (i, part) in parts.iter().enumerate() {
            let prefix = || tarpath::joined(&parts[..=i]);
            let name = OsStr::from_bytes(part);
            match sys::fstatat(cur.as_fd(), name) {
                Ok(st) => match st.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => {}
                    libc::S_IFLNK => return Err(WalkError::ThroughSymlink(prefix())),
                    _ => return Err(WalkError::NotDirectory(prefix())),
                },
                Err(Errno::ENOENT) if create => {
                    sys::mkdirat(cur.as_fd(), name, 0o755)
                        .map_err(|e| WalkError::Sys(prefix(), e))?;
                }
                Err(Errno::ENOENT) => return Err(WalkError::Missing(prefix())),
                Err(e) => return Err(WalkError::Sys(prefix(), e)),
            }
            cur = sys::openat(cur.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(
                |e| match e {
                    Errno::ELOOP => WalkError::ThroughSymlink(prefix()),
                    Errno::ENOTDIR => WalkError::NotDirectory(prefix()),
                    e => WalkError::Sys(prefix(), e),
                },
            )?;
        }
        Ok(cur)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> ToolResult<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = lossy(&raw_path);
        let refuse = |why: String| ToolError(format!("refusing entry '{shown}': {why}"));
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ToolError(format!("entry '{shown}': cannot {what}: {e}"))
        };

        let parts = tarpath::components(&raw_path).map_err(|p| refuse(p.to_string()))?;
        let meta = read_meta(entry).map_err(|e| refuse(format!("bad header: {e}")))?;
        let Some((name, parent_parts)) = parts.split_last() else {
            if kind != EntryType::Directory {
                return Err(refuse("names the layer root but is not a directory".into()));
            }
            self.root_meta = Some(meta);
            return Ok(());
        };
        let parent = self.walk(parent_parts, true).map_err(|e| match e {
            WalkError::ThroughSymlink(p) => {
                refuse(format!("path goes through symlink '{}'", lossy(&p)))
            }
            WalkError::NotDirectory(p) | WalkError::Missing(p) => {
                refuse(format!("'{}' is not a directory", lossy(&p)))
            }
            WalkError::Sys(p, e) => failed(&format!("open '{}'", lossy(&p)), &e),
        })?;
        let parent = parent.as_fd();
        let name_os = OsStr::from_bytes(name);

        if self.form == WhiteoutForm::Overlay && name.starts_with(WH_PREFIX) {
            let parent_path = tarpath::joined(parent_parts);
            if *name == OPAQUE_NAME.as_bytes() {
                self.opaque_dirs.push(parent_path);
            } else if !name.starts_with(b".wh..wh.") {
                self.whiteouts
                    .push((parent_path, name[WH_PREFIX.len()..].to_vec()));
            }
            return Ok(());
        }

        // A later entry replaces an earlier one; a directory over a directory merges.
        match sys::fstatat(parent, name_os) {
            Ok(st)
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR && kind == EntryType::Directory => {}
            Ok(_) => {
                crate::layers::remove_tree(parent, name_os)
                    .map_err(|e| failed("replace the earlier entry", &e))?;
                self.forget_under(&tarpath::joined(&parts));
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(failed("stat", &e)),
        }

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = sys::openat(
                    parent,
                    name_os,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )
                .map_err(|e| failed("create", &e))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(|e| failed("write", &e))?;
                apply_meta(file.as_fd(), &meta).map_err(|e| failed("set metadata", &e))
            }
            EntryType::Directory => {
                if let Err(e) = sys::mkdirat(parent, name_os, 0o755) {
                    if e != Errno::EEXIST {
                        return Err(failed("create directory", &e));
                    }
                }
                self.dirs.insert(tarpath::joined(&parts), meta);
                Ok(())
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("symlink without a target".into()))?
                    .into_owned();
                sys::symlinkat(OsStr::from_bytes(&target), parent, name_os)
                    .map_err(|e| failed("create symlink", &e))?;
                apply_meta_at(parent, name_os, &meta, false).map_err(|e| failed("set metadata", &e))
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("hard link without a target".into()))?
                    .into_owned();
                self.hard_link(&target, parent, name_os).map_err(refuse)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let rdev = if fmt == libc::S_IFIFO {
                    0
                } else {
                    libc::makedev(major, minor)
                };
                sys::mknodat(parent, name_os, fmt | (meta.mode & 0o7777), rdev)
                    .map_err(|e| failed("create node", &e))?;
                apply_meta_at(parent, name_os, &meta, true).map_err(|e| failed("set metadata", &e))
            }
            other => Err(refuse(format!("unsupported entry type {other:?}"))),
        }
    }

    /// Drops what was recorded for `path` and below once an entry there is replaced.
    fn forget_under(&mut self, path: &[u8]) {
        let inside =
            |p: &[u8]| p == path || (p.starts_with(path) && p.get(path.len()) == Some(&b'/'));
        self.dirs.retain(|p, _| !inside(p));
        self.opaque_dirs.retain(|p| !inside(p));
        self.whiteouts.retain(|(p, _)| !inside(p));
    }

    /// Links `name` in `parent` to the already unpacked `target` (a path from the root).
    fn hard_link(&self, target: &[u8], parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), String> {
        let t = lossy(target);
        let parts = match tarpath::components(target) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) | Err(PathProblem::Absolute) | Err(PathProblem::ParentComponent) => {
                return Err(format!("hard link target '{t}' is outside the layer"))
            }
        };
        let Some((tname, tparent_parts)) = parts.split_last() else {
            return Err(format!("hard link target '{t}' is outside the layer"));
        };
        let tparent = self.walk(tparent_parts, false).map_err(|e| match e {
            WalkError::ThroughSymlink(p) => {
                format!(
                    "hard link target '{t}' goes through symlink '{}'",
                    lossy(&p)
                )
            }
            WalkError::NotDirectory(_) | WalkError::Missing(_) => {
                format!("hard link target '{t}' does not exist")
            }
            WalkError::Sys(p, e) => format!("cannot open '{}': {e}", lossy(&p)),
        })?;
        let tname = OsStr::from_bytes(tname);
        match sys::fstatat(tparent.as_fd(), tname) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                Err(format!("hard link target '{t}' is a directory"))
            }
            Ok(_) => sys::linkat(tparent.as_fd(), tname, parent, name)
                .map_err(|e| format!("cannot link to '{t}': {e}")),
            Err(Errno::ENOENT) => Err(format!("hard link target '{t}' does not exist")),
            Err(e) => Err(format!("cannot stat hard link target '{t}': {e}")),
        }
    }

    /// Writes the overlay-form whiteouts and opaque markers, then the directories'
    /// metadata (last, since creating entries changes a directory's mtime).
    fn finish(&self) -> ToolResult<()> {
        let open_dir = |path: &[u8]| {
            sys::open_beneath(
                self.root.as_fd(),
                OsStr::from_bytes(path),
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
            .map_err(|e| {
                ToolError(format!(
                    "cannot open '{}' in the new layer: {e}",
                    lossy(path)
                ))
            })
        };
        for (parent_path, hidden) in &self.whiteouts {
            let parent = open_dir(parent_path)?;
            let name = OsStr::from_bytes(hidden);
            let shown = lossy(&[parent_path.as_slice(), hidden].concat());
            let result = match sys::fstatat(parent.as_fd(), name) {
                // The layer has the name itself: it hides the lowers' one anyway, and a
                // directory of its own must not merge with theirs.
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    sys::openat(parent.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)
                        .and_then(|d| whiteout::mark_opaque(d.as_fd(), WhiteoutForm::Overlay))
                }
                Ok(_) => Ok(()),
                Err(Errno::ENOENT) => {
                    whiteout::write_whiteout(parent.as_fd(), name, WhiteoutForm::Overlay, None)
                }
                Err(e) => Err(e),
            };
            result
                .map_err(|e| ToolError(format!("cannot write the whiteout of '{shown}': {e}")))?;
        }
        for path in &self.opaque_dirs {
            let dir = open_dir(path)?;
            whiteout::mark_opaque(dir.as_fd(), WhiteoutForm::Overlay)
                .map_err(|e| ToolError(format!("cannot mark '{}' opaque: {e}", lossy(path))))?;
        }
        // Deepest first, so that a read-only directory is set after what is inside it.
        for (path, meta) in self.dirs.iter().rev() {
            let dir = open_dir(path)?;
            apply_meta(dir.as_fd(), meta).map_err(|e| {
                ToolError(format!("entry '{}': cannot set metadata: {e}", lossy(path)))
            })?;
        }
        let root = open_dir(b"")?;
        let root_meta = self.root_meta.clone();
        match root_meta {
            Some(meta) => apply_meta(root.as_fd(), &meta),
            None => sys::fchmod(root.as_fd(), DEFAULT_ROOT_MODE),
        }
        .map_err(|e| ToolError(format!("cannot set the metadata of the layer root: {e}")))
    }
}

/// The metadata of an entry: header fields with PAX overrides (uid/gid the tar crate
/// applies; mtime and `SCHILY.xattr.*` read here).
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode()? & 0o7777,
        uid: u32::try_from(header.uid()?).map_err(|_| io::Error::other("uid out of range"))?,
        gid: u32::try_from(header.gid()?).map_err(|_| io::Error::other("gid out of range"))?,
        mtime: (i64::try_from(header.mtime()?).unwrap_or(0), 0),
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                meta.mtime = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| io::Error::other("bad PAX mtime"))?;
            } else if let Some(xname) = key.strip_prefix(XATTR_PAX_PREFIX) {
                meta.xattrs.push((
                    OsStr::from_bytes(xname).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
    }
    Ok(meta)
}

/// chown (skipped when not permitted), chmod (after chown, which clears setuid), xattrs,
/// times, on an object opened for real (not O_PATH, which takes no fchown).
fn apply_meta(fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), Errno> {
    match sys::fchown(fd, meta.uid, meta.gid) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    sys::fchmod(fd, meta.mode)?;
    for (name, value) in &meta.xattrs {
        sys::setxattr(XTarget::Fd(fd), name, value, 0)?;
    }
    let t = sys::TimeSpec::At(meta.mtime.0, meta.mtime.1);
    sys::utimens_fd(fd, t, t)
}

/// The same for an entry of `dir` that is not opened (symlinks, nodes, fifos); symlinks
/// take no chmod.
fn apply_meta_at(dir: BorrowedFd<'_>, name: &OsStr, meta: &Meta, chmod: bool) -> Result<(), Errno> {
    match sys::fchownat(dir, name, meta.uid, meta.gid) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    if chmod {
        sys::fchmodat(dir, name, meta.mode)?;
    }
    for (xname, value) in &meta.xattrs {
        sys::setxattr(XTarget::At(dir, name), xname, value, 0)?;
    }
    let t = sys::TimeSpec::At(meta.mtime.0, meta.mtime.1);
    sys::utimensat(dir, name, t, t)
}

/// DIR must not exist, or be an empty directory.
fn check_target(dir: &Path) -> ToolResult<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ToolError(format!("cannot stat '{}': {e}", dir.display()))),
        Ok(md) if md.is_dir() => {
            let mut rd = std::fs::read_dir(dir)
                .map_err(|e| ToolError(format!("cannot list '{}': {e}", dir.display())))?;
            if rd.next().is_some() {
                Err(ToolError(format!(
                    "'{}' exists and is not empty",
                    dir.display()
                )))
            } else {
                Ok(())
            }
        }
        Ok(_) => Err(ToolError(format!(
            "'{}' exists and is not a directory",
            dir.display()
        ))),
    }
}

/// Opens the layer, decompressing when it starts with the gzip magic.
fn open_layer(layer: &Path) -> ToolResult<Box<dyn Read>> {
    let file = File::open(layer)
        .map_err(|e| ToolError(format!("cannot open '{}': {e}", layer.display())))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| ToolError(format!("cannot read '{}': {e}", layer.display())))?;
    if head.starts_with(&GZIP_MAGIC) {
        Ok(Box::new(MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

pub fn run(layer: &Path, dir: &Path, form: WhiteoutForm) -> ToolResult<()> {
    check_target(dir)?;
    let reader = open_layer(layer)?;
    let staging = Staging::create(dir)?;
    // Modes are set explicitly; the umask must not trim the directories made on the way.
    let old_umask = sys::umask(0);
    let root = sys::openat(
        staging.root.as_fd(),
        OsStr::new("."),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| ToolError(format!("cannot open '{}': {e}", staging.path.display())))?;
    let mut unpacker = Unpacker {
        root,
        form,
        dirs: BTreeMap::new(),
        root_meta: None,
        whiteouts: Vec::new(),
        opaque_dirs: Vec::new(),
    };
    let read_err = |e: io::Error| {
        ToolError(format!(
            "cannot read '{}': {}",
            layer.display(),
            one_line(&e.to_string())
        ))
    };
    let mut archive = tar::Archive::new(reader);
    let result = (|| {
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            unpacker.entry(&mut entry)?;
        }
        unpacker.finish()
    })();
    sys::umask(old_umask);
    result?;
    staging.place(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time(b"5"), Some((5, 0)));
        assert_eq!(parse_pax_time(b"5.5"), Some((5, 500_000_000)));
        assert_eq!(
            parse_pax_time(b"1700000000.000000001"),
            Some((1_700_000_000, 1))
        );
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.2x"), None);
    }
}
