//! `stratafs commit UPPERDIR --output FILE [--gzip]`: writes an upper dir as an OCI image
//! layer and prints `sha256:<hex>` of the bytes written.
//!
//! Whiteouts of every form become empty regular `.wh.<name>` entries, opaque directories
//! get a `.wh..wh..opq` entry; modes, owners, mtimes, public xattrs (PAX), symlinks, device
//! nodes and fifos are kept; the second and later names of a hard-linked object are link
//! entries. Entries come in path order (a directory's children sorted by name, right after
//! it), so the same upper gives the same bytes. Sockets cannot be carried and are skipped
//! with a warning; init-layer files are never shipped (S18). The output is written to a
//! temporary file beside it and renamed into place when complete.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::layerdir::{self, Child, ChildKind, WhiteoutOnDisk};
use super::tarwrite::{EntryMeta, TarWriter};
use super::{is_init_layer_file, temp_name_for, ToolError, ToolResult};
use crate::private_xattrs::Private;
use crate::sys::{self, Stat};
use crate::whiteout::{self, WhiteoutForm, OPAQUE_NAME};

/// The mode docker gives a whiteout made from a char 0/0 device.
const SYNTHESIZED_WHITEOUT_MODE: u32 = 0o600;

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One thing to write for a directory child, keyed by its name in the tar.
enum Item<'a> {
    Object(&'a Child),
    Whiteout(&'a Child),
    OpaqueMarker,
}

struct Committer<W: Write> {
    form: WhiteoutForm,
    tar: TarWriter<W>,
    /// (st_dev, st_ino) of hard-linked objects already written, with their tar path.
    first_names: HashMap<(u64, u64), Vec<u8>>,
    /// (st_dev, st_ino) of the file being written, left out should it lie in the upper.
    output: (u64, u64),
}

fn mtime_of(st: &Stat) -> (i64, i64) {
    (st.st_mtime, st.st_mtime_nsec)
}

impl<W: Write> Committer<W> {
    fn write(&mut self, meta: &EntryMeta<'_>, data: &mut dyn io::Read) -> ToolResult<()> {
        self.tar.append(meta, data).map_err(|e| {
            ToolError(format!(
                "cannot write entry '{}': {e}",
                layerdir::shown(meta.path)
            ))
        })
    }

    /// An empty regular entry (whiteouts and opaque markers).
    fn marker(&mut self, path: &[u8], mode: u32, st: &Stat) -> ToolResult<()> {
        let meta = EntryMeta {
            mode,
            ..empty_entry(path, st)
        };
        self.write(&meta, &mut io::empty())
    }

    /// Writes the children of the upper directory `dir` at `rel`.
    fn dir(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        dir_stat: &Stat,
        opaque: bool,
    ) -> ToolResult<()> {
        let listing = layerdir::read_upper_dir(dir, self.form, rel)?;
        let mut items: Vec<(Vec<u8>, Item<'_>)> = Vec::new();
        if opaque || listing.opaque_marker.is_some() {
            items.push((OPAQUE_NAME.as_bytes().to_vec(), Item::OpaqueMarker));
        }
        for child in &listing.children {
            match child.kind {
                ChildKind::Object => {
                    items.push((child.name.as_bytes().to_vec(), Item::Object(child)))
                }
                ChildKind::Whiteout { .. } => items.push((
                    whiteout::aufs_whiteout_name(&child.name).into_encoded_bytes(),
                    Item::Whiteout(child),
                )),
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        // A `.wh.x` file and a char 0/0 `x` are the same whiteout: write it once.
        items.dedup_by(|a, b| a.0 == b.0);

        for (tar_name, item) in items {
            let path = layerdir::join(rel, OsStr::from_bytes(&tar_name));
            match item {
                Item::OpaqueMarker => {
                    let (mode, st) = match &listing.opaque_marker {
                        Some(st) => (st.st_mode & 0o7777, *st),
                        None => (dir_stat.st_mode & 0o777, *dir_stat),
                    };
                    self.marker(&path, mode, &st)?;
                }
                Item::Whiteout(child) => {
                    if is_init_layer_file(&layerdir::join(rel, &child.name)) {
                        continue;
                    }
                    let mode = match child.kind {
                        ChildKind::Whiteout {
                            on_disk: WhiteoutOnDisk::Overlay,
                        } => SYNTHESIZED_WHITEOUT_MODE,
                        _ => child.stat.st_mode & 0o7777,
                    };
                    self.marker(&path, mode, &child.stat)?;
                }
                Item::Object(child) => {
                    if is_init_layer_file(&path) {
                        continue;
                    }
                    self.object(dir, child, &path)?;
                }
            }
        }
        Ok(())
    }

    /// Writes one object of the upper (and, for a directory, everything under it).
    fn object(&mut self, dir: BorrowedFd<'_>, child: &Child, path: &[u8]) -> ToolResult<()> {
        let st = &child.stat;
        if (st.st_dev, st.st_ino) == self.output {
            return Ok(());
        }
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFSOCK {
            eprintln!(
                "stratafs commit: warning: skipping socket '{}' (a tar cannot hold sockets)",
                layerdir::shown(path)
            );
            return Ok(());
        }
        let mut meta = empty_entry(path, st);

        if fmt != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.first_names.get(&key).cloned() {
                meta.kind = EntryType::Link;
                meta.link = Some(&first);
                return self.write(&meta, &mut io::empty());
            }
            self.first_names.insert(key, path.to_vec());
        }

        let xattrs = layerdir::public_xattrs(dir, &child.name, path)?;
        meta.xattrs = &xattrs;
        match fmt {
            libc::S_IFREG => {
                // A metadata-only copy (mounted with metacopy=on) has its data in a lower.
                if has_any_xattr(dir, &child.name, Private::Metacopy) {
                    return Err(ToolError(format!(
                        "'{}' is a metadata-only copy (metacopy=on) whose data is in a lower: \
                         open it for writing through a mount to complete it, then commit",
                        layerdir::shown(path)
                    )));
                }
                let fd = sys::openat(dir, &child.name, libc::O_RDONLY, 0).map_err(|e| {
                    ToolError(format!("cannot open '{}': {e}", layerdir::shown(path)))
                })?;
                meta.size = st.st_size as u64;
                let mut file = File::from(fd);
                self.write(&meta, &mut file)
            }
            libc::S_IFDIR => {
                // A renamed merged dir (redirect_dir=on) finds its contents in the lowers.
                if has_any_xattr(dir, &child.name, Private::Redirect) {
                    return Err(ToolError(format!(
                        "'{}' is a renamed directory whose contents are in a lower \
                         (redirect_dir=on): a layer tar cannot express it",
                        layerdir::shown(path)
                    )));
                }
                meta.kind = EntryType::Directory;
                self.write(&meta, &mut io::empty())?;
                let fd = layerdir::open_child_dir(dir, &child.name, path)?;
                self.dir(fd.as_fd(), path, st, child.opaque)
            }
            libc::S_IFLNK => {
                let target = sys::readlinkat(dir, &child.name).map_err(|e| {
                    ToolError(format!("cannot read link '{}': {e}", layerdir::shown(path)))
                })?;
                meta.kind = EntryType::Symlink;
                meta.link = Some(target.as_bytes());
                self.write(&meta, &mut io::empty())
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                meta.kind = if fmt == libc::S_IFCHR {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                meta.device = Some((libc::major(st.st_rdev), libc::minor(st.st_rdev)));
                self.write(&meta, &mut io::empty())
            }
            libc::S_IFIFO => {
                meta.kind = EntryType::Fifo;
                self.write(&meta, &mut io::empty())
            }
            _ => Err(ToolError(format!(
                "'{}' has an unknown file type {:o}",
                layerdir::shown(path),
                fmt
            ))),
        }
    }
}

/// Writes the whole tar of the upper at `root` into `out`.
fn write_tar<W: Write>(
    root: BorrowedFd<'_>,
    form: WhiteoutForm,
    output: (u64, u64),
    out: W,
) -> ToolResult<W> {
    let root_stat =
        sys::fstat(root).map_err(|e| ToolError(format!("cannot stat the upper dir: {e}")))?;
    let mut committer = Committer {
        form,
        tar: TarWriter::new(out),
        first_names: HashMap::new(),
        output,
    };
    committer.dir(root, b"", &root_stat, false)?;
    committer
        .tar
        .finish()
        .map_err(|e| ToolError(format!("cannot write the layer: {e}")))
}

/// The temporary path beside `output` (`temp_name_for`).
fn temp_path_beside(output: &Path) -> ToolResult<PathBuf> {
    let name = output
        .file_name()
        .ok_or_else(|| ToolError(format!("--output '{}' names no file", output.display())))?;
    Ok(output.with_file_name(temp_name_for(name)))
}

/// Removes a file on drop unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn run(upper: &Path, output: &Path, gzip: bool, form: WhiteoutForm) -> ToolResult<()> {
    let root = layerdir::open_root(upper, "upper dir")?;
    let tmp = temp_path_beside(output)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| ToolError(format!("cannot create '{}': {e}", output.display())))?;
    let mut guard = RemoveOnDrop(Some(tmp.clone()));
    let written = sys::fstat(file.as_fd())
        .map(|st| (st.st_dev, st.st_ino))
        .map_err(|e| ToolError(format!("cannot stat '{}': {e}", tmp.display())))?;
    let write_err = |e: io::Error| ToolError(format!("cannot write '{}': {e}", output.display()));

    let hashing = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
    };
    let hashing = if gzip {
        // No file name, mtime 0, OS "unknown": the header depends on nothing but the data.
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(hashing, Compression::default());
        write_tar(root.as_fd(), form, written, gz)?
            .finish()
            .map_err(write_err)?
    } else {
        write_tar(root.as_fd(), form, written, hashing)?
    };
    let digest = hex(&hashing.hasher.finalize());
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, output).map_err(write_err)?;
    guard.0 = None;
    println!("sha256:{digest}");
    Ok(())
}

/// Whether `name` in `dir` carries the private xattr `p` under either namespace (an upper
/// written by a mount of root or of a plain user).
fn has_any_xattr(dir: BorrowedFd<'_>, name: &OsStr, p: Private) -> bool {
    p.both()
        .into_iter()
        .any(|x| sys::getxattr(sys::XTarget::At(dir, name), x).is_ok())
}

/// An empty regular entry at `path` with the owner, permission bits and mtime of `st`.
fn empty_entry<'a>(path: &'a [u8], st: &Stat) -> EntryMeta<'a> {
    EntryMeta {
        path,
        kind: EntryType::Regular,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid.into(),
        gid: st.st_gid.into(),
        mtime: mtime_of(st),
        size: 0,
        link: None,
        device: None,
        xattrs: &[],
    }
}
