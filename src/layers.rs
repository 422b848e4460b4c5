//! The layers of a mount: each is a root directory fd plus its role. Also the mount-time
//! checks of S20 (every bad input refused before mounting, naming the option and path)
//! and the workdir set-up of S3.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::options::MountOptions;
use crate::sys;
use crate::whiteout::WhiteoutForm;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Upper,
    /// Per-mount files (S18): above the lowers, below the upper, changed in place.
    Init,
    Lower,
}

#[derive(Debug)]
pub struct Layer {
    pub path: PathBuf,
    pub root: OwnedFd,
    pub role: Role,
    pub dev: u64,
}

impl Layer {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// All layers, top first: the upper (if any) at index 0, then the lowers in the order
/// `lowerdir=` lists them.
#[derive(Debug)]
pub struct LayerSet {
    pub layers: Vec<Layer>,
    pub has_upper: bool,
    /// The private directory inside workdir where copy-ups are built.
    pub work: Option<OwnedFd>,
    /// The user's workdir, where the volatile marker lives.
    pub workdir: Option<OwnedFd>,
    pub whiteout: WhiteoutForm,
    /// Held for the life of the mount: a second mount of the same upper or workdir is
    /// refused. The kernel drops them with the daemon, so a kill -9 leaves no stale lock.
    _in_use_locks: Vec<OwnedFd>,
}

/// Takes the exclusive "in use" lock of an upper or work dir, or says who holds it.
fn lock_in_use(opt: &str, dir: &Path) -> Result<OwnedFd, String> {
    let fd = sys::open_dir_path(dir).map_err(|e| format!("{opt} '{}': {e}", dir.display()))?;
    let fd = sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| format!("{opt} '{}': {e}", dir.display()))?;
    // A daemon whose mount was just unmounted still holds the lock for the moment it takes
    // to see the end of its session and exit: `umount M && mount ... M` must not fail on
    // that, so a held lock is retried for a while before the dir counts as in use.
    let deadline = std::time::Instant::now() + IN_USE_GRACE;
    loop {
        match sys::try_lock_exclusive(fd.as_fd()) {
            Ok(()) => return Ok(fd),
            Err(sys::Errno(libc::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(sys::Errno(libc::EWOULDBLOCK)) => {
                return Err(format!(
                    "{opt} '{}': in use by another mount (unmount it first)",
                    dir.display()
                ))
            }
            Err(e) => return Err(format!("{opt} '{}': cannot lock: {e}", dir.display())),
        }
    }
}

/// How long a held upper/work dir lock is waited for (a daemon finishing its exit).
const IN_USE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Name of our scratch dir inside the user's workdir.
pub const WORK_SUBDIR: &str = "stratafs.work";
/// Where `-o hostname=...` (and the other init-layer shortcuts) generate the init layer.
pub const GENERATED_INIT_SUBDIR: &str = "stratafs.init";
/// Left in the workdir while a volatile mount runs; removed by a clean stop.
pub const VOLATILE_MARKER: &str = "stratafs.volatile";

fn canonical_dir(opt: &str, p: &Path) -> Result<(PathBuf, std::fs::Metadata), String> {
    let c = std::fs::canonicalize(p)
        .map_err(|e| format!("{opt} '{}': {}", p.display(), sys::Errno::from(e)))?;
    let md = std::fs::metadata(&c)
        .map_err(|e| format!("{opt} '{}': {}", p.display(), sys::Errno::from(e)))?;
    if !md.is_dir() {
        return Err(format!("{opt} '{}': not a directory", p.display()));
    }
    Ok((c, md))
}

/// The filesystem type of the top-most mount at `path` (a canonical path), per
/// /proc/self/mountinfo; None when nothing is mounted there.
pub fn mount_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(&unescape_mountinfo(m)) == path)
        })
        .filter_map(|l| l.split(" - ").nth(1)?.split(' ').next().map(str::to_string))
        .next_back()
}

/// Whether something is mounted at `path` (a canonical path).
fn is_mount_point(path: &Path) -> bool {
    mount_type(path).is_some()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `a` is `b` or lies inside it.
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

impl LayerSet {
    /// Marks the workdir for a volatile mount that is now live; a clean stop removes it.
    pub fn set_volatile_marker(&self) -> sys::SysResult<()> {
        match &self.workdir {
            Some(w) => sys::openat(
                w.as_fd(),
                OsStr::new(VOLATILE_MARKER),
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )
            .map(drop),
            None => Ok(()),
        }
    }

    /// The lowers alone, opened already (top first), for a read-only union of them: what
    /// `stratafs diff --lowerdir` compares an upper with.
    pub fn lowers_only(lowers: Vec<(PathBuf, OwnedFd)>) -> sys::SysResult<LayerSet> {
        let mut layers = Vec::new();
        for (path, root) in lowers {
            let dev = sys::fstat(root.as_fd())?.st_dev;
            layers.push(Layer {
                path,
                root,
                role: Role::Lower,
                dev,
            });
        }
        Ok(LayerSet {
            layers,
            has_upper: false,
            work: None,
            workdir: None,
            // Written by nobody: without an upper every form is read (S5).
            whiteout: WhiteoutForm::Overlay,
            _in_use_locks: Vec::new(),
        })
    }

    /// Validates the options against the disk (S20) without changing anything.
    pub fn open_checked(opts: &MountOptions, mountpoint: &Path) -> Result<(), String> {
        check(opts, mountpoint).map(|_| ())
    }

    /// Validates the options against the disk (S20) and opens every layer.
    pub fn open(opts: &MountOptions, mountpoint: &Path) -> Result<LayerSet, String> {
        let Checked {
            lowers,
            upper,
            init,
        } = check(opts, mountpoint)?;
        let mut layers = Vec::new();
        let mut work = None;
        let mut workdir = None;
        // A read-only mount (`ro`) still shows the upper: the kernel refuses the writes,
        // and a remount rw makes it writable again, so the workdir is prepared as well.
        let has_upper = upper.is_some();
        let mut in_use_locks = Vec::new();
        let atime = atime_attr(opts.mount_flags);
        if let Some((u, dev, w)) = upper {
            in_use_locks.push(lock_in_use("upperdir", &u)?);
            in_use_locks.push(lock_in_use("workdir", &w)?);
            let wfd =
                sys::open_dir_path(&w).map_err(|e| format!("workdir '{}': {e}", w.display()))?;
            // Copy-ups rename from the workdir into the upper: both must come from one
            // mount, so they share one clone of their parent (when they are siblings).
            let (uroot, wroot) = match atime.and_then(|a| clone_siblings(&u, &w, a)) {
                Some(pair) => pair,
                None => (
                    sys::open_dir_path(&u)
                        .map_err(|e| format!("upperdir '{}': {e}", u.display()))?,
                    sys::open_dir_path(&w)
                        .map_err(|e| format!("workdir '{}': {e}", w.display()))?,
                ),
            };
            work = Some(prepare_workdir(&w, wroot.as_fd())?);
            workdir = Some(wfd);
            layers.push(Layer {
                root: uroot,
                path: u,
                role: Role::Upper,
                dev,
            });
        }
        if let Some((i, dev)) = init {
            layers.push(Layer {
                root: open_layer_root("initdir", &i, atime)?,
                path: i,
                role: Role::Init,
                dev,
            });
        }
        for (l, dev) in lowers {
            layers.push(Layer {
                root: open_layer_root("lowerdir", &l, atime)?,
                path: l,
                role: Role::Lower,
                dev,
            });
        }
        Ok(LayerSet {
            layers,
            has_upper,
            work,
            workdir,
            whiteout: opts.whiteout,
            _in_use_locks: in_use_locks,
        })
    }
}

/// What `check` found: canonical paths and devices of every layer.
struct Checked {
    lowers: Vec<(PathBuf, u64)>,
    upper: Option<(PathBuf, u64, PathBuf)>,
    init: Option<(PathBuf, u64)>,
}

/// The S20 checks: every dir exists and is a dir, no layer lies inside another where it
/// must not, workdir shares the upper's filesystem, the mountpoint overlaps no layer.
fn check(opts: &MountOptions, mountpoint: &Path) -> Result<Checked, String> {
    if opts.lowerdirs.is_empty() {
        return Err("option 'lowerdir' is required".into());
    }
    let (mnt, _) = canonical_dir("mountpoint", mountpoint)?;
    if is_mount_point(&mnt) {
        return Err(format!(
            "mountpoint '{}': already a mount point (busy)",
            mountpoint.display()
        ));
    }
    let mut lowers = Vec::new();
    for l in &opts.lowerdirs {
        let (c, md) = canonical_dir("lowerdir", l)?;
        if lowers.iter().any(|(p, _): &(PathBuf, u64)| *p == c) {
            return Err(format!("lowerdir '{}': listed twice", l.display()));
        }
        lowers.push((c, md.dev()));
    }
    let upper = check_upper(opts, &lowers)?;
    let init = check_init(opts, &lowers, &upper)?;
    let mut all: Vec<&Path> = lowers.iter().map(|(p, _)| p.as_path()).collect();
    if let Some((i, _)) = &init {
        all.push(i);
    }
    if let Some((u, _, w)) = &upper {
        all.push(u);
        all.push(w);
    }
    for p in all {
        if within(&mnt, p) || within(p, &mnt) {
            return Err(format!(
                "mountpoint '{}': overlaps layer '{}'",
                mountpoint.display(),
                p.display()
            ));
        }
    }
    if let (Some((_, _, w)), false) = (&upper, opts.read_only) {
        check_volatile(w)?;
    }
    Ok(Checked {
        lowers,
        upper,
        init,
    })
}

/// The upper and work dirs: both or neither, apart from the lowers and from each other,
/// on one filesystem. Their canonical paths and the upper's device.
fn check_upper(
    opts: &MountOptions,
    lowers: &[(PathBuf, u64)],
) -> Result<Option<(PathBuf, u64, PathBuf)>, String> {
    Ok(match (&opts.upperdir, &opts.workdir) {
        (Some(u), Some(w)) => {
            let (uc, umd) = canonical_dir("upperdir", u)?;
            let (wc, wmd) = canonical_dir("workdir", w)?;
            for (lc, _) in lowers {
                if within(&uc, lc) {
                    return Err(format!(
                        "upperdir '{}': inside lowerdir '{}'",
                        u.display(),
                        lc.display()
                    ));
                }
                if within(lc, &uc) {
                    return Err(format!(
                        "lowerdir '{}': inside upperdir '{}'",
                        lc.display(),
                        u.display()
                    ));
                }
                if within(&wc, lc) {
                    return Err(format!(
                        "workdir '{}': inside lowerdir '{}'",
                        w.display(),
                        lc.display()
                    ));
                }
            }
            if umd.dev() != wmd.dev() {
                return Err(format!(
                    "workdir '{}': not on the same filesystem as upperdir '{}'",
                    w.display(),
                    u.display()
                ));
            }
            if within(&wc, &uc) || within(&uc, &wc) {
                return Err(format!(
                    "workdir '{}': must not be inside upperdir '{}' or contain it",
                    w.display(),
                    u.display()
                ));
            }
            Some((uc, umd.dev(), wc))
        }
        (Some(u), None) => {
            return Err(format!(
                "upperdir '{}': option 'workdir' is required with it",
                u.display()
            ))
        }
        (None, Some(w)) => {
            return Err(format!(
                "workdir '{}': option 'upperdir' is required with it",
                w.display()
            ))
        }
        (None, None) => None,
    })
}

/// The init layer: apart from the lowers, the upper and the workdir (but for the one
/// generated in the workdir).
fn check_init(
    opts: &MountOptions,
    lowers: &[(PathBuf, u64)],
    upper: &Option<(PathBuf, u64, PathBuf)>,
) -> Result<Option<(PathBuf, u64)>, String> {
    Ok(match &opts.initdir {
        Some(i) => {
            let (ic, imd) = canonical_dir("initdir", i)?;
            for (lc, _) in lowers {
                if within(&ic, lc) || within(lc, &ic) {
                    return Err(format!(
                        "initdir '{}': overlaps lowerdir '{}'",
                        i.display(),
                        lc.display()
                    ));
                }
            }
            if let Some((u, _, w)) = upper {
                // The one place inside the workdir an init layer may be: the one generated
                // from -o hostname= and friends.
                let generated = ic == w.join(GENERATED_INIT_SUBDIR);
                if within(&ic, u)
                    || within(u, &ic)
                    || (within(&ic, w) && !generated)
                    || within(w, &ic)
                {
                    return Err(format!(
                        "initdir '{}': overlaps upperdir or workdir",
                        i.display()
                    ));
                }
            }
            Some((ic, imd.dev()))
        }
        None => None,
    })
}

/// Refuses a workdir left by a volatile mount that did not stop cleanly (its upper may
/// be torn, as with overlayfs' volatile).
fn check_volatile(w: &Path) -> Result<OwnedFd, String> {
    let err = |e: sys::Errno| format!("workdir '{}': {e}", w.display());
    let wfd = sys::open_dir_path(w).map_err(err)?;
    if sys::fstatat(wfd.as_fd(), OsStr::new(VOLATILE_MARKER)).is_ok() {
        return Err(format!(
            "workdir '{}': a volatile mount did not stop cleanly, the upper may be torn; \
             remove '{}' to mount anyway",
            w.display(),
            w.join(VOLATILE_MARKER).display()
        ));
    }
    Ok(wfd)
}

/// Creates (or empties, S3) the scratch dir inside workdir and returns its fd.
/// In the workdir: which namespace the upper's private xattrs are in ("trusted" or
/// "user", S8), so that a later mount reads them where they are.
const XATTR_NS_MARKER: &str = "stratafs.xattrs";

/// The private-xattr namespace an upper was written with, as its workdir records it:
/// Some(true) for `user.*`, Some(false) for `trusted.*`, None when not recorded.
pub fn recorded_xattr_namespace(opts: &MountOptions) -> Option<bool> {
    let w = opts.workdir.as_ref()?;
    match std::fs::read_to_string(w.join(XATTR_NS_MARKER))
        .ok()?
        .trim()
    {
        "user" => Some(true),
        "trusted" => Some(false),
        _ => None,
    }
}

/// The access-time mode the mount asks for, as mount_setattr(2) spells it: None for the
/// default (the layers' own mounts decide).
fn atime_attr(flags: u64) -> Option<u64> {
    let mode = if flags & libc::MS_NOATIME != 0 {
        Some(sys::MOUNT_ATTR_NOATIME)
    } else if flags & libc::MS_STRICTATIME != 0 {
        Some(sys::MOUNT_ATTR_STRICTATIME)
    } else {
        None
    };
    let nodiratime = flags & libc::MS_NODIRATIME != 0;
    match (mode, nodiratime) {
        (None, false) => None,
        (m, d) => Some(m.unwrap_or(0) | if d { sys::MOUNT_ATTR_NODIRATIME } else { 0 }),
    }
}

/// A layer's root, on a private clone of its mount with the mount's access-time mode
/// when it asks for one: with passthrough the kernel reads the layer files itself, and
/// their mount decides whether a read touches the access time. Without the privilege to
/// clone mounts, the plain directory (the layer's own mount decides).
fn open_layer_root(opt: &str, dir: &Path, atime: Option<u64>) -> Result<OwnedFd, String> {
    if let Some(a) = atime {
        match sys::clone_tree_with_atime(dir, a) {
            Ok(fd) => return Ok(fd),
            Err(e) => tracing::info!("{opt} '{}': no private mount ({e})", dir.display()),
        }
    }
    sys::open_dir_path(dir).map_err(|e| format!("{opt} '{}': {e}", dir.display()))
}

/// The upper and work dirs beneath one private clone of their common parent, with the
/// access-time mode `atime`; None when they are not siblings or the clone fails.
fn clone_siblings(u: &Path, w: &Path, atime: u64) -> Option<(OwnedFd, OwnedFd)> {
    let parent = u.parent().filter(|p| Some(*p) == w.parent())?;
    let clone = sys::clone_tree_with_atime(parent, atime)
        .map_err(|e| tracing::info!("'{}': no private mount ({e})", parent.display()))
        .ok()?;
    let beneath = |d: &Path| {
        let name = d.file_name()?;
        sys::open_beneath(clone.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY).ok()
    };
    Some((beneath(u)?, beneath(w)?))
}

fn prepare_workdir(w: &Path, wfd: BorrowedFd<'_>) -> Result<OwnedFd, String> {
    let err = |e: sys::Errno| format!("workdir '{}': {e}", w.display());
    let ns = if crate::private_xattrs::in_user_namespace() {
        "user\n"
    } else {
        "trusted\n"
    };
    if std::fs::read_to_string(w.join(XATTR_NS_MARKER))
        .ok()
        .as_deref()
        != Some(ns)
    {
        std::fs::write(w.join(XATTR_NS_MARKER), ns).map_err(|e| err(sys::Errno::from(e)))?;
    }
    let sub = OsStr::new(WORK_SUBDIR);
    match sys::mkdirat(wfd, sub, 0o700) {
        Ok(()) | Err(sys::Errno::EEXIST) => {}
        Err(e) => return Err(err(e)),
    }
    let fd = sys::open_beneath(wfd, sub, libc::O_PATH | libc::O_DIRECTORY).map_err(err)?;
    remove_contents(fd.as_fd()).map_err(err)?;
    Ok(fd)
}

/// Removes everything inside an open directory (leftovers of an interrupted copy-up).
pub fn remove_contents(dir: BorrowedFd<'_>) -> sys::SysResult<()> {
    for e in sys::read_dir(dir)? {
        remove_tree(dir, &e.name)?;
    }
    Ok(())
}

/// Removes `name` in `dir` whatever it is (a whole tree for a directory, each made
/// writable on the way: a layer may hold read-only directories); absent is fine.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> sys::SysResult<()> {
    let st = match sys::fstatat(dir, name) {
        Ok(st) => st,
        Err(sys::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir {
        if st.st_mode & 0o700 != 0o700 {
            let _ = sys::fchmodat(dir, name, 0o700);
        }
        let sub = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        remove_contents(sub.as_fd())?;
    }
    sys::unlinkat(dir, name, is_dir)
}
