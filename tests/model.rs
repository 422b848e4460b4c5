//! Model test: seeded random sequences of operations on a stratafs mount, checked step by
//! step against the Linux kernel overlayfs (the oracle) mounted on a copy of the same layers.
//!
//! Each sequence draws a layer set (1-3 lowers with small random trees of files, some large
//! and sparse, dirs, symlinks, fifos, whiteouts and opaque dirs, random modes, owners and
//! user.* xattrs) and writes it twice: for the oracle in the overlayfs forms (char 0/0
//! whiteouts, `trusted.overlay.opaque=y`), for stratafs per layer at random in the aufs forms
//! `.wh.<name>` / `.wh..wh..opq` (mostly), the overlayfs forms, or the xattr forms
//! (`trusted.overlay.whiteout` on an empty file, `user.overlay.opaque=y`) (S5, S6). stratafs
//! writes `whiteout=aufs` (default) or `whiteout=overlay` (S7), drawn per sequence.
//! Every operation goes to both mounts; after each one the results (Ok or the same errno)
//! and the whole merged trees (names, types, sizes, contents, modes, owners, nlink of
//! non-directories, symlink targets, user.* xattrs, ACLs, immutable/append-only flags,
//! duplicate names in listings) must be
//! equal. Times, inode numbers and the size and nlink of directories are not compared.
//!
//! Whiteouts are only placed in directories that merge two or more lowers (or at the root):
//! kernel overlayfs lists the whiteouts of a directory that comes from a single lower while
//! its lookup says ENOENT, a case its documentation leaves undefined.
//!
//! Known differences by design, handled explicitly:
//! - overlayfs (redirect_dir=off) answers EXDEV to a rename of a directory that exists in a
//!   lower; stratafs renames it (S16). The test then does on the oracle what a careful `mv`
//!   does (new dir with the same mode, owner and xattrs, entries moved into it one by one,
//!   hard links kept, old dir removed) and expects stratafs to succeed, or to answer
//!   ENOTEMPTY when the target is a non-empty directory (overlayfs checks EXDEV first).
//! - an unlink, rmdir or rename (or a default ACL set) that is refused both for a protected
//!   (immutable or append-only) entry and for a type mismatch answers EPERM on overlayfs
//!   and ENOTDIR, EISDIR (or EACCES) on stratafs: the VFS checks the types before asking a
//!   FUSE filesystem, and a FUSE inode cannot carry the protection flags that it checks
//!   first on overlayfs' inodes.
//! - names starting with `.wh.` are reserved in stratafs (S8): the `reserved` operations
//!   create or rename to such names on stratafs only and expect EPERM.
//!
//! Env: STRATAFS_MODEL_SEQS (default 500), STRATAFS_MODEL_OPS (default 50),
//! STRATAFS_MODEL_SEED (first seed; sequence i uses seed+i), STRATAFS_MODEL_JOBS (parallel
//! sequences, default 2), STRATAFS_MODEL_KEEP_GOING=1 (go on after a failure, report every
//! distinct one), STRATAFS_MODEL_SKIP=kind,kind (investigation aid: leave op kinds out;
//! `exchange` leaves out RENAME_EXCHANGE, `xattr-form` the xattr whiteout form).
//! A failure is shrunk (ops dropped one at a time, layer entries dropped one at a time, then
//! layers and attributes simplified, each try on fresh copies of the layers, keeping the
//! same kind of failure) and printed with its seed.

mod common;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// PRNG (splitmix64)

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn data(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = lo + self.below(hi - lo + 1);
        (0..n).map(|_| b'a' + self.below(26) as u8).collect()
    }
}

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const FILE_MODES: [u32; 10] = [
    0o644, 0o644, 0o600, 0o755, 0o444, 0o640, 0o000, 0o4755, 0o2755, 0o1644,
];
const DIR_MODES: [u32; 8] = [0o755, 0o755, 0o700, 0o775, 0o555, 0o1777, 0o2775, 0o711];
const UIDS: [u32; 5] = [0, 0, 1, 1000, 65534];
const GIDS: [u32; 5] = [0, 0, 1, 100, 1000];
const XNAMES: [&str; 3] = ["user.a", "user.b", "user.c"];
/// A name outside NAMES, used by the oracle's emulation of RENAME_EXCHANGE.
const EMU_TMP: &str = "zz-model-tmp";

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn show_bytes(b: &[u8]) -> String {
    if b.len() > 48 {
        // Long data: its start, length and a hash are enough to tell two apart.
        let h = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ *c as u64).wrapping_mul(0x100_0000_01b3)
        });
        return format!(
            "{}...({} bytes, fnv {h:016x})",
            show_bytes(&b[..24]),
            b.len()
        );
    }
    let mut s = String::from("\"");
    for &c in b {
        if c.is_ascii_graphic() || c == b' ' {
            if c == b'"' || c == b'\\' {
                s.push('\\');
            }
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s.push('"');
    s
}

// ---------------------------------------------------------------------------------------
// Layer sets

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `.wh.<name>` files and `.wh..wh..opq` markers.
    Aufs,
    /// char 0/0 whiteouts, `trusted.overlay.opaque=y`.
    Overlay,
    /// Empty files with xattr `trusted.overlay.whiteout` in dirs marked
    /// `trusted.overlay.opaque=x`, `user.overlay.opaque=y` (stratafs copies only; S5, S6).
    Xattr,
}

#[derive(Clone, Debug)]
enum LKind {
    File(Vec<u8>),
    Dir { opaque: bool },
    Symlink(String),
    Fifo,
    Whiteout,
}

#[derive(Clone, Debug)]
struct LEnt {
    layer: usize,
    path: String,
    kind: LKind,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug)]
struct Setup {
    n_lowers: usize,
    /// Per lower: the form the stratafs copy's whiteouts and opaque markers are written in.
    forms: Vec<Form>,
    /// The `whiteout=` option stratafs is mounted with.
    upper_form: Form,
    /// stratafs also mounted with `redirect_dir=on,metacopy=on` (O(1) directory renames,
    /// metadata-only copy-ups): the merged view must not change.
    features: bool,
    /// Parents before children.
    ents: Vec<LEnt>,
}

fn gen_target(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "nowhere".into(),
        1 => ".".into(),
        2..=5 => rng.pick(&NAMES).to_string(),
        _ => format!("{}/{}", rng.pick(&NAMES), rng.pick(&NAMES)),
    }
}

/// A larger file, mostly holes, with a few runs of letters (copy-up of sparse data, S11).
fn big_data(rng: &mut Rng) -> Vec<u8> {
    let len = 8192 + rng.below(300_000);
    let mut v = vec![0u8; len];
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(len);
        let run = rng.data(1, 64);
        let n = run.len().min(len - at);
        v[at..at + n].copy_from_slice(&run[..n]);
    }
    v
}

fn gen_xattrs(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    if rng.chance(25) {
        for x in XNAMES {
            if rng.chance(50) {
                v.push((x.to_string(), rng.data(0, 5)));
            }
        }
    }
    v
}

fn gen_dir(rng: &mut Rng, layer: usize, prefix: &str, depth: usize, ents: &mut Vec<LEnt>) {
    let p = [50, 40, 30][depth];
    for name in NAMES {
        if !rng.chance(p) {
            continue;
        }
        let path = join(prefix, name);
        let r = rng.below(100);
        let kind = if r < 38 || (depth >= 2 && r < 70) {
            LKind::File(if rng.chance(4) {
                big_data(rng)
            } else {
                rng.data(0, 12)
            })
        } else if r < 70 {
            LKind::Dir {
                opaque: rng.chance(20),
            }
        } else if r < 78 {
            LKind::Symlink(gen_target(rng))
        } else if r < 93 {
            LKind::Whiteout
        } else {
            LKind::Fifo
        };
        let mode = match kind {
            LKind::Dir { .. } => *rng.pick(&DIR_MODES),
            _ => *rng.pick(&FILE_MODES),
        };
        let xattrs = match kind {
            LKind::File(_) | LKind::Dir { .. } => gen_xattrs(rng),
            _ => Vec::new(),
        };
        let is_dir = matches!(kind, LKind::Dir { .. });
        ents.push(LEnt {
            layer,
            path: path.clone(),
            kind,
            mode,
            uid: *rng.pick(&UIDS),
            gid: *rng.pick(&GIDS),
            xattrs,
        });
        if is_dir {
            gen_dir(rng, layer, &path, depth + 1, ents);
        }
    }
}

fn gen_setup(rng: &mut Rng, skip: &HashSet<String>) -> Setup {
    let n_lowers = 1 + rng.below(3);
    let forms = (0..n_lowers)
        .map(|_| match rng.below(20) {
            0..=5 => Form::Overlay,
            6..=8 if !skip.contains("xattr-form") => Form::Xattr,
            _ => Form::Aufs,
        })
        .collect();
    let upper_form = if rng.chance(25) {
        Form::Overlay
    } else {
        Form::Aufs
    };
    let mut ents = Vec::new();
    for layer in 0..n_lowers {
        gen_dir(rng, layer, "", 0, &mut ents);
    }
    let features = rng.chance(33);
    let mut s = Setup {
        n_lowers,
        forms,
        upper_form,
        features,
        ents,
    };
    s.normalize();
    s
}

impl Setup {
    /// This setup without entry `i` and the entries beneath it.
    fn without(&self, i: usize) -> Setup {
        let e = &self.ents[i];
        let pre = format!("{}/", e.path);
        let (layer, path) = (e.layer, e.path.clone());
        let mut s = self.clone();
        s.ents
            .retain(|x| !(x.layer == layer && (x.path == path || x.path.starts_with(&pre))));
        s.normalize();
        s
    }

    /// Candidates one step simpler than this setup: an empty lower dropped, forms and
    /// entries' attributes set to plain defaults.
    fn simpler(&self) -> Vec<Setup> {
        let mut out = Vec::new();
        for l in 0..self.n_lowers {
            if self.n_lowers > 1 && !self.ents.iter().any(|e| e.layer == l) {
                let mut c = self.clone();
                c.n_lowers -= 1;
                c.forms.remove(l);
                for e in &mut c.ents {
                    if e.layer > l {
                        e.layer -= 1;
                    }
                }
                out.push(c);
            }
            if self.forms[l] != Form::Aufs {
                let mut c = self.clone();
                c.forms[l] = Form::Aufs;
                out.push(c);
            }
        }
        if self.upper_form != Form::Aufs {
            let mut c = self.clone();
            c.upper_form = Form::Aufs;
            out.push(c);
        }
        if self.features {
            let mut c = self.clone();
            c.features = false;
            out.push(c);
        }
        for (i, e) in self.ents.iter().enumerate() {
            let mut variants: Vec<LEnt> = Vec::new();
            let mut v = e.clone();
            if let LKind::Dir { opaque: true } = e.kind {
                v.kind = LKind::Dir { opaque: false };
                variants.push(v.clone());
                v = e.clone();
            }
            if let LKind::File(d) = &e.kind {
                if !d.is_empty() {
                    v.kind = LKind::File(Vec::new());
                    variants.push(v.clone());
                    v = e.clone();
                }
            }
            if !e.xattrs.is_empty() {
                v.xattrs.clear();
                variants.push(v.clone());
                v = e.clone();
            }
            if (e.uid, e.gid) != (0, 0) {
                (v.uid, v.gid) = (0, 0);
                variants.push(v.clone());
                v = e.clone();
            }
            let plain = if matches!(e.kind, LKind::Dir { .. }) {
                0o755
            } else {
                0o644
            };
            if e.mode != plain {
                v.mode = plain;
                variants.push(v);
            }
            for v in variants {
                let mut c = self.clone();
                c.ents[i] = v;
                c.normalize();
                out.push(c);
            }
        }
        out
    }

    /// The layers whose directory at `path` make up the merged directory there (top first),
    /// or None when the merged view has no directory at `path`.
    fn merged_dir(&self, path: &str) -> Option<Vec<usize>> {
        let all: Vec<usize> = (0..self.n_lowers).collect();
        if path.is_empty() {
            return Some(all);
        }
        let (parent, _) = split(path);
        let layers = self.merged_dir(parent)?;
        let mut found = Vec::new();
        for l in layers {
            match self.ents.iter().find(|e| e.layer == l && e.path == path) {
                None => continue,
                Some(LEnt {
                    kind: LKind::Dir { opaque },
                    ..
                }) => {
                    found.push(l);
                    if *opaque {
                        break;
                    }
                }
                Some(_) if found.is_empty() => return None,
                Some(_) => break,
            }
        }
        (!found.is_empty()).then_some(found)
    }

    /// Keeps only whiteouts whose directory merges two or more layers (or is the root).
    /// Kernel overlayfs lists the whiteouts of a directory that comes from one lower only
    /// (it iterates the real directory) while lookup says ENOENT: a case the overlayfs
    /// documentation leaves undefined, so the model does not build it.
    fn normalize(&mut self) {
        let keep: Vec<bool> = self
            .ents
            .iter()
            .map(|e| {
                if !matches!(e.kind, LKind::Whiteout) {
                    return true;
                }
                let (parent, _) = split(&e.path);
                parent.is_empty()
                    || self
                        .merged_dir(parent)
                        .is_some_and(|ls| ls.len() >= 2 && ls.contains(&e.layer))
            })
            .collect();
        let mut it = keep.iter();
        self.ents.retain(|_| *it.next().unwrap());
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let forms: Vec<&str> = self
            .forms
            .iter()
            .map(|x| match x {
                Form::Aufs => "aufs",
                Form::Overlay => "overlay",
                Form::Xattr => "xattr",
            })
            .collect();
        writeln!(
            f,
            "  {} lower(s) (l0 on top); stratafs copy written in forms [{}]; stratafs -o whiteout={}{}",
            self.n_lowers,
            forms.join(", "),
            if self.upper_form == Form::Aufs { "aufs" } else { "overlay" },
            if self.features { ",redirect_dir=on,metacopy=on" } else { "" }
        )?;
        if self.ents.is_empty() {
            writeln!(f, "  (all lowers empty)")?;
        }
        for e in &self.ents {
            let what = match &e.kind {
                LKind::File(d) => format!("file {}", show_bytes(d)),
                LKind::Dir { opaque } => format!("dir{}", if *opaque { " OPAQUE" } else { "" }),
                LKind::Symlink(t) => format!("symlink -> {t}"),
                LKind::Fifo => "fifo".into(),
                LKind::Whiteout => {
                    writeln!(f, "  l{}: {}  WHITEOUT", e.layer, e.path)?;
                    continue;
                }
            };
            let mut x = String::new();
            for (k, v) in &e.xattrs {
                x.push_str(&format!(" {k}={}", show_bytes(v)));
            }
            writeln!(
                f,
                "  l{}: {}  {what} mode={:04o} owner={}:{}{x}",
                e.layer, e.path, e.mode, e.uid, e.gid
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Syscalls as the model compares them: Result<_, errno>, over std and common::sys.

/// The errno of a failure: what the model compares between the mount and the oracle.
fn errno_of<T>(r: std::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| errno(&e))
}

fn sys_open(p: &Path, flags: i32, mode: u32) -> Result<fs::File, i32> {
    errno_of(open_raw(p, flags, mode))
}

fn sys_close(f: fs::File) -> Result<(), i32> {
    errno_of(close(f))
}

/// One write(2) (`off` None) or pwrite(2) of `data`; a short write, never expected, is -1.
fn write_once(f: &fs::File, data: &[u8], off: Option<u64>) -> Result<(), i32> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let n = errno_of(match off {
        Some(o) => f.write_at(data, o),
        None => (&*f).write(data),
    })?;
    if n == data.len() {
        Ok(())
    } else {
        Err(-1)
    }
}

fn sys_rename(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    errno_of(rename2(from, to, flags))
}

fn sys_mkdir(p: &Path, mode: u32) -> Result<(), i32> {
    use std::os::unix::fs::DirBuilderExt;
    errno_of(fs::DirBuilder::new().mode(mode).create(p))
}

fn sys_rmdir(p: &Path) -> Result<(), i32> {
    errno_of(fs::remove_dir(p))
}

fn sys_chown(p: &Path, uid: u32, gid: u32, follow: bool) -> Result<(), i32> {
    use std::os::unix::fs::{chown, lchown};
    let change = if follow { chown } else { lchown };
    errno_of(change(p, Some(uid), Some(gid)))
}

fn sys_chmod(p: &Path, mode: u32) -> Result<(), i32> {
    use std::os::unix::fs::PermissionsExt;
    errno_of(fs::set_permissions(p, fs::Permissions::from_mode(mode)))
}

fn sys_setxattr(p: &Path, name: &str, value: &[u8], flags: i32, follow: bool) -> Result<(), i32> {
    errno_of(set_xattr_with(p, name, value, flags, follow))
}

/// mknod(2) of a fifo or a whiteout (device 0/0); `mode` includes the S_IF* type bits.
fn sys_mknod(p: &Path, mode: u32) -> Result<(), i32> {
    errno_of(mknod(p, mode, 0, 0))
}

/// user.* xattrs and ACLs of `p` (not following a symlink), sorted.
fn user_xattrs(p: &Path) -> Result<Vec<(String, Vec<u8>)>, i32> {
    let mut out = Vec::new();
    for name in errno_of(list_xattr(p))? {
        if name.starts_with("user.") || name.starts_with("system.posix_acl_") {
            let value = errno_of(get_xattr(p, &name))?;
            out.push((name, value));
        }
    }
    Ok(out)
}

fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        -1 => "short write",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

fn show_res(r: &Result<(), i32>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => errno_name(*e),
    }
}

// ---------------------------------------------------------------------------------------
// Materializing a layer set

/// Writes `data` to a new file, leaving all-zero 4 KiB blocks as holes.
fn write_sparse(p: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(p).unwrap();
    f.set_len(data.len() as u64).unwrap();
    for (i, chunk) in data.chunks(4096).enumerate() {
        if chunk.iter().any(|c| *c != 0) {
            f.write_all_at(chunk, i as u64 * 4096).unwrap();
        }
    }
}

fn materialize(setup: &Setup, lowers: &[PathBuf], for_stratafs: bool) {
    for e in &setup.ents {
        let root = &lowers[e.layer];
        let (parent, name) = split(&e.path);
        let pdir = root.join(parent);
        if !fs::symlink_metadata(&pdir)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            continue; // its parent was shrunk away
        }
        let p = root.join(&e.path);
        let form = if for_stratafs {
            setup.forms[e.layer]
        } else {
            Form::Overlay
        };
        let ok = |r: Result<(), i32>, what: &str| {
            if let Err(x) = r {
                panic!("materialize {what} {}: {}", p.display(), errno_name(x));
            }
        };
        match &e.kind {
            LKind::Whiteout => match form {
                Form::Aufs => fs::write(pdir.join(format!(".wh.{name}")), b"").unwrap(),
                Form::Overlay => ok(sys_mknod(&p, libc::S_IFCHR | 0o600), "mknod"),
                Form::Xattr => {
                    fs::write(&p, b"").unwrap();
                    ok(
                        sys_setxattr(&p, "trusted.overlay.whiteout", b"", 0, false),
                        "whiteout xattr",
                    );
                    // The parent is marked as holding xattr whiteouts, as overlayfs wants
                    // (S5; its opacity, if any, is the user.overlay.opaque=y below).
                    ok(
                        sys_setxattr(&pdir, "trusted.overlay.opaque", b"x", 0, false),
                        "xattr-whiteout marker",
                    );
                }
            },
            LKind::Symlink(t) => {
                std::os::unix::fs::symlink(t, &p).unwrap();
                ok(sys_chown(&p, e.uid, e.gid, false), "lchown");
            }
            kind => {
                match kind {
                    LKind::File(d) => write_sparse(&p, d),
                    LKind::Fifo => ok(sys_mknod(&p, libc::S_IFIFO | 0o600), "mkfifo"),
                    _ => ok(sys_mkdir(&p, 0o700), "mkdir"),
                }
                ok(sys_chown(&p, e.uid, e.gid, false), "chown");
                ok(sys_chmod(&p, e.mode), "chmod");
                for (k, v) in &e.xattrs {
                    ok(sys_setxattr(&p, k, v, 0, false), "setxattr");
                }
                if let LKind::Dir { opaque: true } = kind {
                    match form {
                        Form::Aufs => fs::write(p.join(".wh..wh..opq"), b"").unwrap(),
                        Form::Xattr => ok(
                            sys_setxattr(&p, "user.overlay.opaque", b"y", 0, false),
                            "opaque xattr",
                        ),
                        Form::Overlay => ok(
                            sys_setxattr(&p, "trusted.overlay.opaque", b"y", 0, false),
                            "opaque xattr",
                        ),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Operations

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RKind {
    Create,
    Mkdir,
    Symlink,
    Mkfifo,
    Rename,
    Link,
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        path: String,
        mode: u32,
        excl: bool,
        trunc: bool,
    },
    Write {
        path: String,
        off: u64,
        data: Vec<u8>,
    },
    Append {
        path: String,
        data: Vec<u8>,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: u32,
        gid: u32,
        follow: bool,
    },
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
        flags: i32,
        follow: bool,
    },
    RemoveXattr {
        path: String,
        name: String,
        follow: bool,
    },
    Mkfifo {
        path: String,
        mode: u32,
    },
    /// On stratafs only: make the name `path` (a `.wh.` name) with this kind (from `src` for
    /// rename and link); S8 says EPERM.
    Reserved {
        kind: RKind,
        path: String,
        src: String,
    },
    /// setfacl: the access (or default) ACL `ACLS[which]`.
    SetAcl {
        path: String,
        default: bool,
        which: usize,
    },
    /// chattr as the tool does it: FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS with `set` added
    /// and `clear` removed (immutable, append-only, noatime).
    Chattr {
        path: String,
        set: u32,
        clear: u32,
    },
}

const FS_IMMUTABLE_FL: u32 = 0x10;
const FS_APPEND_FL: u32 = 0x20;
const FS_NOATIME_FL: u32 = 0x80;
/// (set, clear) pairs: +i, -i, +a, -a, +A, -ia.
const CHATTR_CHANGES: [(u32, u32); 6] = [
    (FS_IMMUTABLE_FL, 0),
    (0, FS_IMMUTABLE_FL),
    (FS_APPEND_FL, 0),
    (0, FS_APPEND_FL),
    (FS_NOATIME_FL, 0),
    (0, FS_IMMUTABLE_FL | FS_APPEND_FL),
];

/// ACLs as (tag, perm, id) entries: USER_OBJ 1, USER 2, GROUP_OBJ 4, MASK 0x10, OTHER 0x20.
const ACLS: [&[(u16, u16, u32)]; 4] = [
    &[
        (1, 6, 0),
        (2, 4, 65534),
        (4, 4, 0),
        (0x10, 6, 0),
        (0x20, 0, 0),
    ],
    &[(1, 7, 0), (4, 0, 0), (0x20, 0, 0)],
    &[
        (1, 7, 0),
        (2, 7, 65534),
        (4, 5, 0),
        (0x10, 7, 0),
        (0x20, 5, 0),
    ],
    &[(1, 7, 0), (4, 7, 0), (0x20, 7, 0)],
];

/// The xattr form of an ACL (version 2, little-endian entries; ids of object entries are
/// ignored by the kernel).
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        let id = if matches!(tag, 2 | 8) { *id } else { u32::MAX };
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const KINDS: [&str; 18] = [
    "create",
    "write",
    "append",
    "truncate",
    "unlink",
    "mkdir",
    "rmdir",
    "rename",
    "link",
    "symlink",
    "chmod",
    "chown",
    "setxattr",
    "removexattr",
    "mkfifo",
    "reserved",
    "setacl",
    "chattr",
];

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::Unlink { .. } => "unlink",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::Mkfifo { .. } => "mkfifo",
            Op::Reserved { .. } => "reserved",
            Op::SetAcl { .. } => "setacl",
            Op::Chattr { .. } => "chattr",
        }
    }
}

fn id(v: u32) -> String {
    if v == u32::MAX {
        "-1".into()
    } else {
        v.to_string()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create {
                path,
                mode,
                excl,
                trunc,
            } => write!(
                f,
                "open(\"{path}\", O_CREAT|O_WRONLY{}{}, 0o{mode:o})",
                if *excl { "|O_EXCL" } else { "" },
                if *trunc { "|O_TRUNC" } else { "" }
            ),
            Op::Write { path, off, data } => {
                write!(f, "pwrite(\"{path}\", {}, off={off})", show_bytes(data))
            }
            Op::Append { path, data } => {
                write!(f, "append(\"{path}\", {})", show_bytes(data))
            }
            Op::Truncate { path, len } => write!(f, "truncate(\"{path}\", {len})"),
            Op::Unlink { path } => write!(f, "unlink(\"{path}\")"),
            Op::Mkdir { path, mode } => write!(f, "mkdir(\"{path}\", 0o{mode:o})"),
            Op::Rmdir { path } => write!(f, "rmdir(\"{path}\")"),
            Op::Rename { from, to, flags } => {
                let fl = match *flags {
                    0 => "",
                    libc::RENAME_NOREPLACE => ", RENAME_NOREPLACE",
                    libc::RENAME_EXCHANGE => ", RENAME_EXCHANGE",
                    _ => ", ?",
                };
                write!(f, "rename(\"{from}\", \"{to}\"{fl})")
            }
            Op::Link { from, to } => write!(f, "link(\"{from}\", \"{to}\")"),
            Op::Symlink { target, path } => write!(f, "symlink(\"{target}\", \"{path}\")"),
            Op::Chmod { path, mode } => write!(f, "chmod(\"{path}\", 0o{mode:o})"),
            Op::Chown {
                path,
                uid,
                gid,
                follow,
            } => write!(
                f,
                "{}(\"{path}\", {}, {})",
                if *follow { "chown" } else { "lchown" },
                id(*uid),
                id(*gid)
            ),
            Op::SetXattr {
                path,
                name,
                value,
                flags,
                follow,
            } => write!(
                f,
                "{}(\"{path}\", \"{name}\", {}{})",
                if *follow { "setxattr" } else { "lsetxattr" },
                show_bytes(value),
                match *flags {
                    libc::XATTR_CREATE => ", XATTR_CREATE",
                    libc::XATTR_REPLACE => ", XATTR_REPLACE",
                    _ => "",
                }
            ),
            Op::RemoveXattr { path, name, follow } => write!(
                f,
                "{}(\"{path}\", \"{name}\")",
                if *follow {
                    "removexattr"
                } else {
                    "lremovexattr"
                }
            ),
            Op::Mkfifo { path, mode } => write!(f, "mkfifo(\"{path}\", 0o{mode:o})"),
            Op::Reserved { kind, path, src } => match kind {
                RKind::Create => write!(f, "[stratafs only] open(\"{path}\", O_CREAT|O_EXCL)"),
                RKind::Mkdir => write!(f, "[stratafs only] mkdir(\"{path}\")"),
                RKind::Symlink => write!(f, "[stratafs only] symlink(\"x\", \"{path}\")"),
                RKind::Mkfifo => write!(f, "[stratafs only] mkfifo(\"{path}\")"),
                RKind::Rename => write!(f, "[stratafs only] rename(\"{src}\", \"{path}\")"),
                RKind::Link => write!(f, "[stratafs only] link(\"{src}\", \"{path}\")"),
            },
            Op::SetAcl {
                path,
                default,
                which,
            } => write!(
                f,
                "setfacl({}\"{path}\", {:?})",
                if *default { "default, " } else { "" },
                ACLS[*which]
            ),
            Op::Chattr { path, set, clear } => {
                write!(f, "chattr(\"{path}\", +{set:#x}, -{clear:#x})")
            }
        }
    }
}

/// Applies `op` to the tree at `root`.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |rel: &str| root.join(rel);
    let nb = libc::O_NONBLOCK; // a fifo must never block the test
    match op {
        Op::Create {
            path,
            mode,
            excl,
            trunc,
        } => {
            let mut fl = libc::O_CREAT | libc::O_WRONLY | nb;
            if *excl {
                fl |= libc::O_EXCL;
            }
            if *trunc {
                fl |= libc::O_TRUNC;
            }
            sys_close(sys_open(&p(path), fl, *mode)?)
        }
        Op::Write { path, off, data } => {
            let f = sys_open(&p(path), libc::O_WRONLY | nb, 0)?;
            let r = write_once(&f, data, Some(*off));
            let c = sys_close(f);
            r.and(c)
        }
        Op::Append { path, data } => {
            let f = sys_open(&p(path), libc::O_WRONLY | libc::O_APPEND | nb, 0)?;
            let r = write_once(&f, data, None);
            let c = sys_close(f);
            r.and(c)
        }
        Op::Truncate { path, len } => errno_of(truncate(&p(path), *len as i64)),
        Op::Unlink { path } => errno_of(fs::remove_file(p(path))),
        Op::Mkdir { path, mode } => sys_mkdir(&p(path), *mode),
        Op::Rmdir { path } => sys_rmdir(&p(path)),
        Op::Rename { from, to, flags } => sys_rename(&p(from), &p(to), *flags),
        Op::Link { from, to } => errno_of(fs::hard_link(p(from), p(to))),
        Op::Symlink { target, path } => errno_of(std::os::unix::fs::symlink(target, p(path))),
        Op::Chmod { path, mode } => sys_chmod(&p(path), *mode),
        Op::Chown {
            path,
            uid,
            gid,
            follow,
        } => sys_chown(&p(path), *uid, *gid, *follow),
        Op::SetXattr {
            path,
            name,
            value,
            flags,
            follow,
        } => sys_setxattr(&p(path), name, value, *flags, *follow),
        Op::RemoveXattr { path, name, follow } => {
            errno_of(remove_xattr_with(&p(path), name, *follow))
        }
        Op::Mkfifo { path, mode } => sys_mknod(&p(path), libc::S_IFIFO | *mode),
        Op::Reserved { kind, path, src } => match kind {
            RKind::Create => sys_close(sys_open(
                &p(path),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            )?),
            RKind::Mkdir => sys_mkdir(&p(path), 0o755),
            RKind::Symlink => apply(
                root,
                &Op::Symlink {
                    target: "x".into(),
                    path: path.clone(),
                },
            ),
            RKind::Mkfifo => sys_mknod(&p(path), libc::S_IFIFO | 0o644),
            RKind::Rename => sys_rename(&p(src), &p(path), 0),
            RKind::Link => apply(
                root,
                &Op::Link {
                    from: src.clone(),
                    to: path.clone(),
                },
            ),
        },
        Op::SetAcl {
            path,
            default,
            which,
        } => sys_setxattr(
            &p(path),
            if *default {
                "system.posix_acl_default"
            } else {
                "system.posix_acl_access"
            },
            &acl_xattr(ACLS[*which]),
            0,
            true,
        ),
        Op::Chattr { path, set, clear } => {
            let f = sys_open(&p(path), libc::O_RDONLY | libc::O_NOFOLLOW | nb, 0)?;
            let r =
                errno_of(inode_flags(&f).and_then(|v| set_inode_flags(&f, (v | *set) & !*clear)));
            sys_close(f)?;
            r
        }
    }
}

/// The immutable and append-only flags of a file or directory (None where there are none
/// to read).
fn protection_flags(p: &Path) -> Option<u32> {
    let f = open_raw(p, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0).ok()?;
    let flags = inode_flags(&f).ok()?;
    Some(flags & (FS_IMMUTABLE_FL | FS_APPEND_FL))
}

// ---------------------------------------------------------------------------------------
// Snapshots of a merged tree

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ent {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Non-directories only: size, link count, rdev.
    size: Option<u64>,
    nlink: Option<u64>,
    rdev: Option<u64>,
    data: Option<Vec<u8>>,
    target: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    /// Files and directories: the immutable/append-only flags.
    flags: Option<u32>,
    /// Directories: the listing, sorted, duplicates kept.
    children: Option<Vec<String>>,
    /// Something could not be read.
    error: Option<String>,
}

impl fmt::Display for Ent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.error {
            write!(f, "ERROR {e}; ")?;
        }
        write!(
            f,
            "{} mode={:04o} owner={}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(s) = self.size {
            write!(f, " size={s}")?;
        }
        if let Some(n) = self.nlink {
            write!(f, " nlink={n}")?;
        }
        if let Some(r) = self.rdev {
            write!(f, " rdev={r:#x}")?;
        }
        if let Some(d) = &self.data {
            write!(f, " data={}", show_bytes(d))?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {t}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={}", show_bytes(v))?;
        }
        match self.flags {
            Some(0) => {}
            Some(fl) => write!(f, " flags={fl:#x}")?,
            None if matches!(self.kind, 'f' | 'd') => write!(f, " flags=unreadable")?,
            None => {}
        }
        if let Some(c) = &self.children {
            write!(f, " [{}]", c.join(" "))?;
        }
        Ok(())
    }
}

type Snap = BTreeMap<String, Ent>;

fn snapshot(root: &Path) -> Snap {
    let mut m = Snap::new();
    walk(root, "", &mut m);
    m
}

fn walk(root: &Path, rel: &str, m: &mut Snap) {
    let p = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let md = match fs::symlink_metadata(&p) {
        Ok(md) => md,
        Err(e) => {
            m.insert(
                rel.to_string(),
                Ent {
                    kind: '?',
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: None,
                    nlink: None,
                    rdev: None,
                    data: None,
                    target: None,
                    xattrs: Vec::new(),
                    flags: None,
                    children: None,
                    error: Some(format!("lstat: {e}")),
                },
            );
            return;
        }
    };
    let fmt_bits = md.mode() & libc::S_IFMT;
    let kind = match fmt_bits {
        libc::S_IFDIR => 'd',
        libc::S_IFREG => 'f',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFSOCK => 's',
        _ => '?',
    };
    let mut errors = Vec::new();
    let is_dir = kind == 'd';
    let mut e = Ent {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: (!is_dir).then_some(md.size()),
        nlink: (!is_dir).then_some(md.nlink()),
        rdev: (kind == 'c' || kind == 'b').then_some(md.rdev()),
        data: None,
        target: None,
        xattrs: Vec::new(),
        flags: matches!(kind, 'f' | 'd')
            .then(|| protection_flags(&p))
            .flatten(),
        children: None,
        error: None,
    };
    match user_xattrs(&p) {
        Ok(x) => e.xattrs = x,
        Err(x) => errors.push(format!("listxattr: {}", errno_name(x))),
    }
    match kind {
        'f' => {
            let r = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&p)
                .and_then(|mut f| {
                    let mut v = Vec::new();
                    f.read_to_end(&mut v).map(|_| v)
                });
            match r {
                Ok(v) => e.data = Some(v),
                Err(x) => errors.push(format!("read: {x}")),
            }
        }
        'l' => match fs::read_link(&p) {
            Ok(t) => e.target = Some(t.to_string_lossy().into_owned()),
            Err(x) => errors.push(format!("readlink: {x}")),
        },
        _ => {}
    }
    let mut kids = Vec::new();
    if is_dir {
        match fs::read_dir(&p) {
            Ok(rd) => {
                for d in rd {
                    match d {
                        Ok(d) => kids.push(d.file_name().to_string_lossy().into_owned()),
                        Err(x) => errors.push(format!("readdir: {x}")),
                    }
                }
            }
            Err(x) => errors.push(format!("opendir: {x}")),
        }
        kids.sort();
        e.children = Some(kids.clone());
    }
    if !errors.is_empty() {
        e.error = Some(errors.join("; "));
    }
    m.insert(rel.to_string(), e);
    kids.dedup();
    for k in kids {
        walk(root, &join(rel, &k), m);
    }
}

/// A readable list of differences (oracle = expected, stratafs = got), or None.
fn diff(oracle: &Snap, strata: &Snap) -> Option<String> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = oracle.keys().chain(strata.keys()).collect();
    for k in keys {
        let name = if k.is_empty() { "/" } else { k.as_str() };
        match (oracle.get(k), strata.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(format!(
                "    {name}:\n      overlayfs: {a}\n      stratafs:  {b}"
            )),
            (Some(a), None) => {
                out.push(format!("    {name}: missing in stratafs (overlayfs: {a})"))
            }
            (None, Some(b)) => out.push(format!("    {name}: only in stratafs: {b}")),
            (None, None) => {}
        }
    }
    if out.is_empty() {
        None
    } else {
        out.truncate(12);
        Some(out.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------
// Op generation (from the oracle's current tree)

struct Pools<'a> {
    snap: &'a Snap,
    all: Vec<&'a str>,
    dirs: Vec<&'a str>,
    empty_dirs: Vec<&'a str>,
    with_xattrs: Vec<&'a str>,
    nondirs: Vec<&'a str>,
    files: Vec<&'a str>,
}

impl<'a> Pools<'a> {
    fn new(s: &'a Snap) -> Pools<'a> {
        let mut p = Pools {
            snap: s,
            all: Vec::new(),
            dirs: vec![""],
            empty_dirs: Vec::new(),
            with_xattrs: Vec::new(),
            nondirs: Vec::new(),
            files: Vec::new(),
        };
        for (k, e) in s {
            if k.is_empty() {
                continue;
            }
            p.all.push(k);
            if !e.xattrs.is_empty() {
                p.with_xattrs.push(k);
            }
            match e.kind {
                'd' => {
                    p.dirs.push(k);
                    if e.children.as_ref().is_some_and(|c| c.is_empty()) {
                        p.empty_dirs.push(k);
                    }
                }
                'f' => {
                    p.files.push(k);
                    p.nondirs.push(k)
                }
                _ => p.nondirs.push(k),
            }
        }
        p
    }
    fn fresh(&self, rng: &mut Rng) -> String {
        if rng.chance(8) {
            return format!("{}/{}", rng.pick(&NAMES), rng.pick(&NAMES));
        }
        let dir = *rng.pick(&self.dirs);
        let absent: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !self.snap.contains_key(&join(dir, n)))
            .collect();
        if !absent.is_empty() && rng.chance(75) {
            join(dir, rng.pick::<&str>(&absent))
        } else {
            join(dir, rng.pick::<&str>(&NAMES))
        }
    }
    /// An xattr name, mostly one that `path` has.
    fn xname(&self, rng: &mut Rng, path: &str) -> String {
        match self.snap.get(path) {
            Some(e) if !e.xattrs.is_empty() && rng.chance(70) => rng.pick(&e.xattrs).0.clone(),
            _ => rng.pick(&XNAMES).to_string(),
        }
    }
    fn from(&self, rng: &mut Rng, v: &[&str], p: u64) -> String {
        if !v.is_empty() && rng.chance(p) {
            rng.pick(v).to_string()
        } else if !self.all.is_empty() && rng.chance(50) {
            rng.pick(&self.all).to_string()
        } else {
            self.fresh(rng)
        }
    }
    fn existing(&self, rng: &mut Rng) -> String {
        self.from(rng, &self.all.clone(), 92)
    }
    fn new_name(&self, rng: &mut Rng) -> String {
        if rng.chance(80) {
            self.fresh(rng)
        } else {
            self.existing(rng)
        }
    }
}

const WEIGHTS: [(usize, u64); 18] = [
    (0, 10), // create
    (1, 10), // write
    (2, 6),  // append
    (3, 6),  // truncate
    (4, 8),  // unlink
    (5, 8),  // mkdir
    (6, 6),  // rmdir
    (7, 14), // rename
    (8, 5),  // link
    (9, 5),  // symlink
    (10, 5), // chmod
    (11, 5), // chown
    (12, 6), // setxattr
    (13, 2), // removexattr
    (14, 3), // mkfifo
    (15, 2), // reserved
    (16, 3), // setacl
    (17, 2), // chattr
];

fn gen_op(rng: &mut Rng, snap: &Snap, skip: &HashSet<String>) -> Op {
    let p = Pools::new(snap);
    let total: u64 = WEIGHTS
        .iter()
        .filter(|(k, _)| !skip.contains(KINDS[*k]))
        .map(|(_, w)| w)
        .sum();
    let mut r = rng.next() % total.max(1);
    let mut kind = 0;
    for (k, w) in WEIGHTS {
        if skip.contains(KINDS[k]) {
            continue;
        }
        if r < w {
            kind = k;
            break;
        }
        r -= w;
    }
    match kind {
        0 => Op::Create {
            path: p.new_name(rng),
            mode: *rng.pick(&FILE_MODES),
            excl: rng.chance(40),
            trunc: rng.chance(30),
        },
        1 => Op::Write {
            path: p.from(rng, &p.files, 85),
            off: if rng.chance(8) {
                rng.below(300_000)
            } else {
                rng.below(16)
            } as u64,
            data: rng.data(1, 8),
        },
        2 => Op::Append {
            path: p.from(rng, &p.files, 85),
            data: rng.data(1, 8),
        },
        3 => Op::Truncate {
            path: p.from(rng, &p.files, 85),
            len: if rng.chance(8) {
                rng.below(300_000)
            } else {
                rng.below(24)
            } as u64,
        },
        4 => Op::Unlink {
            path: p.from(rng, &p.nondirs, 85),
        },
        5 => Op::Mkdir {
            path: p.new_name(rng),
            mode: *rng.pick(&DIR_MODES),
        },
        6 => Op::Rmdir {
            path: if rng.chance(50) {
                p.from(rng, &p.empty_dirs, 100)
            } else {
                p.from(rng, &p.dirs[1..], 85)
            },
        },
        7 => {
            let from = if rng.chance(50) {
                p.from(rng, &p.dirs[1..], 90)
            } else {
                p.existing(rng)
            };
            let to = if rng.chance(35) {
                p.existing(rng)
            } else {
                p.fresh(rng)
            };
            let flags = match rng.below(10) {
                0 => libc::RENAME_NOREPLACE,
                1 if !skip.contains("exchange") => libc::RENAME_EXCHANGE,
                _ => 0,
            };
            Op::Rename { from, to, flags }
        }
        8 => Op::Link {
            from: p.from(rng, &p.nondirs, 85),
            to: p.new_name(rng),
        },
        9 => Op::Symlink {
            target: if rng.chance(30) && !p.all.is_empty() {
                rng.pick(&p.all).to_string()
            } else {
                gen_target(rng)
            },
            path: p.new_name(rng),
        },
        10 => Op::Chmod {
            path: p.existing(rng),
            mode: if rng.chance(50) {
                *rng.pick(&FILE_MODES)
            } else {
                *rng.pick(&DIR_MODES)
            },
        },
        11 => Op::Chown {
            path: p.existing(rng),
            uid: if rng.chance(15) {
                u32::MAX
            } else {
                *rng.pick(&UIDS)
            },
            gid: if rng.chance(15) {
                u32::MAX
            } else {
                *rng.pick(&GIDS)
            },
            follow: rng.chance(50),
        },
        12 => Op::SetXattr {
            path: p.existing(rng),
            name: rng.pick(&XNAMES).to_string(),
            value: rng.data(0, 6),
            flags: *rng.pick(&[0, 0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
            follow: rng.chance(60),
        },
        13 => {
            let path = p.from(rng, &p.with_xattrs, 60);
            Op::RemoveXattr {
                name: p.xname(rng, &path),
                path,
                follow: rng.chance(60),
            }
        }
        14 => Op::Mkfifo {
            path: p.new_name(rng),
            mode: *rng.pick(&FILE_MODES),
        },
        16 => Op::SetAcl {
            path: p.existing(rng),
            default: rng.chance(40),
            which: rng.below(ACLS.len()),
        },
        17 => {
            let (set, clear) = *rng.pick(&CHATTR_CHANGES);
            Op::Chattr {
                path: p.existing(rng),
                set,
                clear,
            }
        }
        _ => {
            let kinds = [
                RKind::Create,
                RKind::Mkdir,
                RKind::Symlink,
                RKind::Mkfifo,
                RKind::Rename,
                RKind::Link,
            ];
            Op::Reserved {
                kind: *rng.pick(&kinds),
                path: join(
                    rng.pick::<&str>(&p.dirs),
                    &format!(".wh.{}", rng.pick(&NAMES)),
                ),
                src: if p.nondirs.is_empty() {
                    "a".into()
                } else {
                    rng.pick(&p.nondirs).to_string()
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Watchdog: a stratafs request that hangs would hang the test forever. After WATCH_LIMIT
// without progress the daemon of that mount (a process this test started) is killed, so
// the pending request fails with ENOTCONN and the run reports a divergence.

const WATCH_LIMIT: Duration = Duration::from_secs(60);

struct Watch {
    mnt: PathBuf,
    last: Mutex<Instant>,
    fired: AtomicBool,
}

static WATCHES: Mutex<Vec<Weak<Watch>>> = Mutex::new(Vec::new());
static WATCHDOG: std::sync::Once = std::sync::Once::new();

impl Watch {
    fn new(mnt: &Path) -> Arc<Watch> {
        WATCHDOG.call_once(|| {
            std::thread::spawn(|| loop {
                std::thread::sleep(Duration::from_secs(1));
                let live: Vec<Arc<Watch>> = {
                    let mut ws = WATCHES.lock().unwrap();
                    ws.retain(|w| w.strong_count() > 0);
                    ws.iter().filter_map(|w| w.upgrade()).collect()
                };
                for w in live {
                    if w.last.lock().unwrap().elapsed() > WATCH_LIMIT
                        && !w.fired.swap(true, Ordering::SeqCst)
                    {
                        eprintln!(
                            "model: no progress for {WATCH_LIMIT:?} on {}: killing its stratafs daemon",
                            w.mnt.display()
                        );
                        kill_daemon_of(&w.mnt);
                    }
                }
            });
        });
        let w = Arc::new(Watch {
            mnt: mnt.to_path_buf(),
            last: Mutex::new(Instant::now()),
            fired: AtomicBool::new(false),
        });
        WATCHES.lock().unwrap().push(Arc::downgrade(&w));
        w
    }
    fn touch(&self) {
        *self.last.lock().unwrap() = Instant::now();
    }
}

/// SIGKILLs the stratafs daemon serving `mnt` (a process this test started).
fn kill_daemon_of(mnt: &Path) {
    for pid in daemons_for(mnt) {
        let _ = kill(pid, libc::SIGKILL);
    }
}

// ---------------------------------------------------------------------------------------
// Running one case

#[derive(Clone, Debug)]
struct Failure {
    /// Index of the failing op (None: the initial trees differ).
    step: Option<usize>,
    /// What kind of failure, to keep shrinking on the same bug.
    sig: String,
    detail: String,
}

/// Both mounts over their own copies of one layer set. Fields drop in order: the mounts go
/// before their directories.
struct World {
    strata: Option<Mount>,
    oracle: Option<OverlayMount>,
    s: Layers,
    o: Layers,
    watch: Arc<Watch>,
}

impl World {
    fn new(setup: &Setup) -> World {
        let s = Layers::new(setup.n_lowers);
        let o = Layers::new(setup.n_lowers);
        materialize(setup, &s.lowers, true);
        materialize(setup, &o.lowers, false);
        let watch = Watch::new(&s.mnt);
        let mut extra: Vec<&str> = Vec::new();
        if setup.upper_form != Form::Aufs {
            extra.push("whiteout=overlay");
        }
        if setup.features {
            extra.push("redirect_dir=on,metacopy=on");
        }
        let strata = Some(s.mount(&extra.join(",")));
        let oracle = Some(o.mount_overlay("redirect_dir=off,index=off,metacopy=off"));
        watch.touch();
        World {
            strata,
            oracle,
            s,
            o,
            watch,
        }
    }
    fn smnt(&self) -> &Path {
        &self.s.mnt
    }
    fn omnt(&self) -> &Path {
        &self.o.mnt
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Retries while busy, then the guard finds nothing left to do.
        umount_retry(&self.s.mnt);
        self.strata.take();
        self.oracle.take();
    }
}

/// Moves `from` to `to` (absent) on the oracle the way a careful `mv` does when rename(2)
/// answers EXDEV: a new dir with the same mode, owner, user xattrs and ACLs, the entries moved
/// into it one by one (rename keeps hard links), then the old dir removed.
fn oracle_move(root: &Path, from: &str, to: &str) -> Result<(), String> {
    let (a, b) = (root.join(from), root.join(to));
    match sys_rename(&a, &b, 0) {
        Ok(()) => return Ok(()),
        Err(libc::EXDEV) => {}
        Err(e) => return Err(format!("rename {from} -> {to}: {}", errno_name(e))),
    }
    let md = fs::symlink_metadata(&a).map_err(|e| format!("lstat {from}: {e}"))?;
    if !md.is_dir() {
        return Err(format!("EXDEV on a non-directory {from}"));
    }
    let err = |what: &str, e: i32| format!("{what} {to}: {}", errno_name(e));
    sys_mkdir(&b, 0o700).map_err(|e| err("mkdir", e))?;
    sys_chown(&b, md.uid(), md.gid(), false).map_err(|e| err("chown", e))?;
    sys_chmod(&b, md.mode() & 0o7777).map_err(|e| err("chmod", e))?;
    // The ACLs are the source's, not what the new dir inherited from its parent.
    for acl in ["system.posix_acl_access", "system.posix_acl_default"] {
        match errno_of(remove_xattr(&b, acl)) {
            Ok(()) | Err(libc::ENODATA) => {}
            Err(e) => return Err(err("removexattr", e)),
        }
    }
    for (k, v) in user_xattrs(&a).map_err(|e| err("listxattr", e))? {
        sys_setxattr(&b, &k, &v, 0, false).map_err(|e| err("setxattr", e))?;
    }
    let mut kids: Vec<String> = fs::read_dir(&a)
        .map_err(|e| format!("readdir {from}: {e}"))?
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kids.sort();
    for k in kids {
        oracle_move(root, &join(from, &k), &join(to, &k))?;
    }
    sys_rmdir(&a).map_err(|e| format!("rmdir {from}: {}", errno_name(e)))
}

/// The type errno the VFS gives before it asks the filesystem, where there is one: ENOTDIR
/// or EISDIR for an unlink, rmdir or rename, EACCES for a default ACL on a non-directory.
fn type_errno(root: &Path, op: &Op) -> Option<i32> {
    match op {
        Op::SetAcl {
            path,
            default: true,
            ..
        } if is_dir(&root.join(path)) == Some(false) => Some(libc::EACCES),
        Op::Rmdir { path } if is_dir(&root.join(path)) == Some(false) => Some(libc::ENOTDIR),
        Op::Unlink { path } if is_dir(&root.join(path)) == Some(true) => Some(libc::EISDIR),
        Op::Rename { from, to, flags } if *flags != libc::RENAME_EXCHANGE => {
            match (is_dir(&root.join(from))?, is_dir(&root.join(to))?) {
                (true, false) => Some(libc::ENOTDIR),
                (false, true) => Some(libc::EISDIR),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `p` or anything below it is immutable or append-only.
fn has_protected(p: &Path) -> bool {
    if protection_flags(p).is_some_and(|f| f != 0) {
        return true;
    }
    is_dir(p) == Some(true)
        && fs::read_dir(p)
            .map(|rd| rd.flatten().any(|d| has_protected(&d.path())))
            .unwrap_or(false)
}

fn is_dir(p: &Path) -> Option<bool> {
    fs::symlink_metadata(p).ok().map(|m| m.is_dir())
}

/// What stratafs must answer to an op, with a note on why; None: the op is skipped.
type Expect = Option<(Result<(), i32>, String)>;

/// Does `op` on the oracle and returns what stratafs must answer.
fn oracle_step(w: &World, op: &Op) -> Result<Expect, String> {
    let root = w.omnt();
    if let Op::Reserved { kind, path, src } = op {
        // Only where the name itself is the one reason to fail; else a no-op for both.
        let (parent, _) = split(path);
        let parent_ok = is_dir(&root.join(parent)) == Some(true);
        let src_ok = match kind {
            RKind::Rename | RKind::Link => is_dir(&root.join(src)) == Some(false),
            _ => true,
        };
        if !(parent_ok && src_ok) {
            return Ok(None);
        }
        return Ok(Some((Err(libc::EPERM), "reserved name (S8)".into())));
    }
    let r = apply(root, op);
    if r == Err(libc::EPERM) {
        if let Some(e) = type_errno(root, op) {
            return Ok(Some((
                Err(e),
                "the kernel checks types before protections, which a FUSE inode cannot carry"
                    .into(),
            )));
        }
    }
    let Op::Rename { from, to, flags } = op else {
        return Ok(Some((r, String::new())));
    };
    if r != Err(libc::EXDEV) {
        return Ok(Some((r, String::new())));
    }
    // overlayfs refuses to move a lower/merged directory; stratafs does it (S16). An mv
    // would stop halfway at an immutable or append-only entry: no oracle for that case.
    let moved = if *flags == libc::RENAME_EXCHANGE {
        vec![from, to]
    } else {
        vec![from]
    };
    if moved.iter().any(|m| has_protected(&root.join(m))) {
        return Ok(None);
    }
    if COUNTING.with(|c| c.get()) {
        EMULATED.fetch_add(1, Ordering::Relaxed);
    }
    let note = "overlayfs said EXDEV; emulated as mv does".to_string();
    if *flags == libc::RENAME_EXCHANGE {
        oracle_move(root, from, EMU_TMP)?;
        oracle_move(root, to, from)?;
        oracle_move(root, EMU_TMP, to)?;
        return Ok(Some((Ok(()), note)));
    }
    let dst = root.join(to);
    match is_dir(&dst) {
        Some(true) => {
            let empty = fs::read_dir(&dst)
                .map_err(|e| format!("readdir {to}: {e}"))?
                .next()
                .is_none();
            if !empty {
                return Ok(Some((
                    Err(libc::ENOTEMPTY),
                    "overlayfs said EXDEV before checking the target is empty".into(),
                )));
            }
            sys_rmdir(&dst).map_err(|e| format!("rmdir {to}: {}", errno_name(e)))?;
        }
        Some(false) => return Err(format!("EXDEV with a non-directory at {to}")),
        None => {}
    }
    oracle_move(root, from, to)?;
    Ok(Some((Ok(()), note)))
}

/// Runs one case. `next(i, snapshot)` gives op i (None ends the case); every op run is
/// pushed to `done`.
fn run_case(
    setup: &Setup,
    next: &mut dyn FnMut(usize, &Snap) -> Option<Op>,
    done: &mut Vec<Op>,
) -> Result<(), Failure> {
    let w = World::new(setup);
    let mut osnap = snapshot(w.omnt());
    if let Some(d) = diff(&osnap, &snapshot(w.smnt())) {
        return Err(Failure {
            step: None,
            sig: "initial tree".into(),
            detail: format!("the merged trees differ before any op:\n{d}"),
        });
    }
    let mut i = 0;
    while let Some(op) = next(i, &osnap) {
        done.push(op.clone());
        w.watch.touch();
        let exp = match oracle_step(&w, &op) {
            Ok(e) => e,
            Err(msg) => panic!("oracle emulation failed at op #{i} {op}: {msg}"),
        };
        if let Some((expected, note)) = exp {
            let got = apply(w.smnt(), &op);
            count(&op, expected.is_err());
            if got != expected {
                return Err(Failure {
                    step: Some(i),
                    sig: format!(
                        "{}: expected {} got {}",
                        op.kind(),
                        show_res(&expected),
                        show_res(&got)
                    ),
                    detail: format!(
                        "op #{i} {op}: overlayfs/expected {}, stratafs {}{}",
                        show_res(&expected),
                        show_res(&got),
                        if note.is_empty() {
                            String::new()
                        } else {
                            format!(" ({note})")
                        }
                    ),
                });
            }
        }
        w.watch.touch();
        osnap = snapshot(w.omnt());
        if let Some(d) = diff(&osnap, &snapshot(w.smnt())) {
            return Err(Failure {
                step: Some(i),
                sig: format!("{}: tree", op.kind()),
                detail: format!("merged trees differ after op #{i} {op}:\n{d}"),
            });
        }
        i += 1;
    }
    Ok(())
}

fn replay(setup: &Setup, ops: &[Op]) -> Result<(), Failure> {
    let mut done = Vec::new();
    run_case(setup, &mut |i, _| ops.get(i).cloned(), &mut done)
}

/// Shrinks a failing case: drops ops one at a time, then layer entries one at a time, each
/// try on fresh layer copies, until nothing more can go with the same kind of failure.
fn shrink(setup: &Setup, ops: &[Op], fail: &Failure) -> (Setup, Vec<Op>, Failure, usize) {
    let cut = |ops: &[Op], f: &Failure| -> Vec<Op> {
        match f.step {
            Some(s) => ops[..=s].to_vec(),
            None => Vec::new(),
        }
    };
    let mut setup = setup.clone();
    let mut ops = cut(ops, fail);
    let mut fail = fail.clone();
    let mut runs = 0;
    loop {
        let mut changed = false;
        let mut i = ops.len();
        while i > 0 {
            i -= 1;
            if i >= ops.len() {
                continue;
            }
            let mut c = ops.clone();
            c.remove(i);
            runs += 1;
            if let Err(f) = replay(&setup, &c) {
                if f.sig == fail.sig {
                    ops = cut(&c, &f);
                    fail = f;
                    changed = true;
                }
            }
        }
        let mut j = setup.ents.len();
        while j > 0 {
            j -= 1;
            if j >= setup.ents.len() {
                continue;
            }
            let c = setup.without(j);
            runs += 1;
            if let Err(f) = replay(&c, &ops) {
                if f.sig == fail.sig {
                    ops = cut(&ops, &f);
                    setup = c;
                    fail = f;
                    changed = true;
                }
            }
        }
        for c in setup.simpler() {
            runs += 1;
            if let Err(f) = replay(&c, &ops) {
                if f.sig == fail.sig {
                    ops = cut(&ops, &f);
                    setup = c;
                    fail = f;
                    changed = true;
                    break; // the other candidates were made from the old setup
                }
            }
        }
        if !changed {
            break;
        }
    }
    (setup, ops, fail, runs)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let r = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        v.parse()
    };
    Some(r.unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

const BASE_SEED: u64 = 0x57AA_0000;

/// Per op kind: how many ran and how many of them failed (alike on both sides), in the
/// generated sequences (not in shrinking replays).
static OPS_RUN: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];
static OPS_ERR: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];
/// Renames overlayfs answered EXDEV to, emulated on the oracle.
static EMULATED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count(op: &Op, err: bool) {
    if COUNTING.with(|c| c.get()) {
        let k = KINDS.iter().position(|k| *k == op.kind()).unwrap();
        OPS_RUN[k].fetch_add(1, Ordering::Relaxed);
        if err {
            OPS_ERR[k].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn sum(v: &[AtomicU64]) -> u64 {
    v.iter().map(|x| x.load(Ordering::Relaxed)).sum()
}

/// Runs sequence `seed`; on failure returns the shrunk report.
fn run_seed(
    seed: u64,
    n_ops: usize,
    skip: &HashSet<String>,
    seen: &Mutex<HashSet<String>>,
) -> Result<(), (String, String)> {
    let mut rng = Rng::new(seed);
    let setup = gen_setup(&mut rng, skip);
    let mut done = Vec::new();
    COUNTING.with(|c| c.set(true));
    let res = run_case(
        &setup,
        &mut |i, snap| (i < n_ops).then(|| gen_op(&mut rng, snap, skip)),
        &mut done,
    );
    COUNTING.with(|c| c.set(false));
    let Err(fail) = res else {
        return Ok(());
    };
    if !seen.lock().unwrap().insert(fail.sig.clone()) {
        return Err((fail.sig, String::new())); // already reported: no need to shrink again
    }
    let t = Instant::now();
    let (ms, mops, mfail, runs) = shrink(&setup, &done, &fail);
    let mut s = String::new();
    s.push_str(&format!(
        "\n==== stratafs diverges from overlayfs: seed {seed:#x} ====\n\
         reproduce: STRATAFS_MODEL_SEED={seed:#x} STRATAFS_MODEL_SEQS=1 cargo test --test model\n\
         first seen: {}\n\
         minimal case ({} of {} ops, {} replays in {:.1?}):\n\
         layers:\n{ms}ops:\n",
        fail.detail.lines().next().unwrap_or(""),
        mops.len(),
        done.len(),
        runs,
        t.elapsed()
    ));
    for (i, op) in mops.iter().enumerate() {
        s.push_str(&format!("  #{i} {op}\n"));
    }
    s.push_str(&format!("divergence: {}\n", mfail.detail));
    Err((mfail.sig, s))
}

#[test]
fn model_against_kernel_overlayfs() {
    let seqs = env_u64("STRATAFS_MODEL_SEQS").unwrap_or(500);
    let n_ops = env_u64("STRATAFS_MODEL_OPS").unwrap_or(50) as usize;
    let base = env_u64("STRATAFS_MODEL_SEED").unwrap_or(BASE_SEED);
    let jobs = env_u64("STRATAFS_MODEL_JOBS").unwrap_or(2).max(1);
    let keep_going = std::env::var("STRATAFS_MODEL_KEEP_GOING").is_ok_and(|v| v == "1");
    let skip: HashSet<String> = std::env::var("STRATAFS_MODEL_SKIP")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().to_string())
        .collect();
    for k in &skip {
        assert!(
            KINDS.contains(&k.as_str()) || k == "exchange" || k == "xattr-form",
            "STRATAFS_MODEL_SKIP: unknown kind {k}"
        );
    }
    // Both mounts see the same umask.
    set_umask(0o022);

    let t0 = Instant::now();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<(u64, String, String)>> = Mutex::new(Vec::new());
    let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= seqs {
                    return;
                }
                let seed = base.wrapping_add(i);
                if let Err((sig, report)) = run_seed(seed, n_ops, &skip, &seen) {
                    if !report.is_empty() {
                        if keep_going {
                            eprintln!("{report}");
                        }
                    } else {
                        eprintln!("model: seed {seed:#x}: again \"{sig}\"");
                    }
                    failures.lock().unwrap().push((seed, sig, report));
                    if !keep_going {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let per_kind: Vec<String> = KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (n, e) = (
                OPS_RUN[i].load(Ordering::Relaxed),
                OPS_ERR[i].load(Ordering::Relaxed),
            );
            format!("{k} {}/{n}", n - e)
        })
        .collect();
    eprintln!(
        "model: ops succeeded/run: {}; EXDEV renames emulated on overlayfs: {}",
        per_kind.join(", "),
        EMULATED.load(Ordering::Relaxed)
    );
    eprintln!(
        "model: {} sequences x {n_ops} ops from seed {base:#x} in {:.1?} ({} ops run, {} of them \
         errors on both sides), {} failing",
        next.load(Ordering::SeqCst).min(seqs),
        t0.elapsed(),
        sum(&OPS_RUN),
        sum(&OPS_ERR),
        failures.len()
    );
    if !failures.is_empty() {
        let mut sigs: Vec<String> = Vec::new();
        let mut reports = String::new();
        for (seed, sig, report) in &failures {
            sigs.push(format!("  {seed:#x}: {sig}"));
            reports.push_str(report);
        }
        panic!(
            "stratafs diverged from kernel overlayfs in {} sequence(s):\n{}\n{reports}",
            failures.len(),
            sigs.join("\n")
        );
    }
}
