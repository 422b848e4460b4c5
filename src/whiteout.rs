//! Whiteouts and opaque markers: their names, how each on-disk form is recognised (S5, S6),
//! which names and xattrs are reserved (S8), and how they are written (S7).

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use crate::private_xattrs::Private;
use crate::sys::{self, Errno, Stat, SysResult, XTarget};

/// The on-disk form of whiteouts and opaque dirs an upper is written in (S7), chosen with
/// `-o whiteout=` at mount and `--whiteout` by the layer tools. Lowers are read in every
/// form; an upper's char 0/0 device is a whiteout only under `Overlay` (S5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WhiteoutForm {
    /// `.wh.<name>` files and `.wh..wh..opq` markers (aufs, OCI layer tars); a char 0/0
    /// device in the upper is a device node a user made.
    Aufs,
    /// char 0/0 devices and the `trusted.overlay.opaque=y` xattr (kernel overlayfs); both
    /// forms are read in the upper.
    Overlay,
}

pub const WH_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_NAME: &str = ".wh..wh..opq";

/// Names reserved by the aufs/OCI forms: never shown, never created (S8).
pub fn is_reserved_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// `.wh.<name>`
pub fn aufs_whiteout_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsStr::from_bytes(&v).to_os_string()
}

fn is_char00(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Whether an entry found in a layer is itself a whiteout (overlayfs forms). In the
/// upper, char 0/0 counts only under `whiteout=overlay` (S5).
pub fn entry_is_whiteout(
    st: &Stat,
    is_upper: bool,
    form: WhiteoutForm,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> bool {
    if is_char00(st) {
        return !is_upper || form == WhiteoutForm::Overlay;
    }
    if is_upper && !whiteout_at_name(form, name) {
        return false;
    }
    // The xattr form: an empty regular file carrying trusted.overlay.whiteout. A lookup
    // honours it wherever it is, as overlayfs' lookup does; a listing only in a directory
    // marked to hold such whiteouts (`dir_holds_xattr_whiteouts`, S5).
    if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0 {
        return Private::OvlWhiteout
            .both()
            .into_iter()
            .any(|x| sys::getxattr(XTarget::At(dir, name), x).is_ok());
    }
    false
}

/// Whether the directory `dir` is marked, as overlayfs wants, to hold whiteouts of the
/// xattr form (overlay.opaque = "x"): only in such a directory must a listing look at
/// every empty regular file (overlayfs' readdir does the same), which spares a stat of
/// every file of every other directory.
pub fn dir_holds_xattr_whiteouts(dir: BorrowedFd<'_>) -> bool {
    overlay_opaque_is(XTarget::Fd(dir), b'x')
}

/// Whether either overlay.opaque xattr of `t` starts with `value` ("y": opaque, "x":
/// holds xattr whiteouts).
fn overlay_opaque_is(t: XTarget<'_>, value: u8) -> bool {
    Private::OvlOpaque
        .both()
        .into_iter()
        .any(|x| sys::getxattr(t, x).is_ok_and(|v| v.first() == Some(&value)))
}

/// Whether `dir` holds an aufs whiteout `.wh.<name>`.
pub fn has_aufs_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    sys::fstatat(dir, &aufs_whiteout_name(name)).is_ok()
}

/// Whether the directory `name` inside `parent` is opaque in any read form (S6).
pub fn dir_is_opaque(parent: BorrowedFd<'_>, name: &OsStr) -> bool {
    if let Ok(d) = sys::openat(parent, name, libc::O_PATH | libc::O_DIRECTORY, 0) {
        if sys::fstatat(std::os::fd::AsFd::as_fd(&d), OsStr::new(OPAQUE_NAME)).is_ok() {
            return true;
        }
    }
    overlay_opaque_is(XTarget::At(parent, name), b'y')
}

/// Redirect of a renamed merged directory: our xattr holds its path in the lowers; the
/// overlayfs one holds an absolute path, or a bare name within the same parent.
const OVL_REDIRECT_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];

/// Where the lowers hold the contents of the upper directory `name` in `parent` (whose
/// lower path is `parent_lower`), when it is a renamed merged directory.
pub fn dir_redirect(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    parent_lower: &OsStr,
) -> Option<OsString> {
    let t = XTarget::At(parent, name);
    // Ours: always the path from the layers' root.
    let path: Vec<u8> = match sys::getxattr(t, Private::Redirect.name()) {
        Ok(v) => v,
        Err(_) => {
            let v = sys::getxattr(t, OsStr::new(OVL_REDIRECT_XATTRS[0]))
                .or_else(|_| sys::getxattr(t, OsStr::new(OVL_REDIRECT_XATTRS[1])))
                .ok()?;
            match v.strip_prefix(b"/") {
                Some(abs) => abs.to_vec(),
                // overlayfs: a bare name renames within the same parent.
                None if !v.contains(&b'/') => {
                    let mut p = parent_lower.as_bytes().to_vec();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&v);
                    p
                }
                None => return None,
            }
        }
    };
    let ok = !path.is_empty()
        && path
            .split(|b| *b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..");
    ok.then(|| OsStr::from_bytes(&path).to_os_string())
}

/// Records on the upper directory `name` in `dir` where the lowers hold its contents
/// (kept if it already has one: the lowers' path never changes).
pub fn set_redirect(dir: BorrowedFd<'_>, name: &OsStr, lower_path: &OsStr) -> SysResult<()> {
    let t = XTarget::At(dir, name);
    if sys::getxattr(t, Private::Redirect.name()).is_ok() {
        return Ok(());
    }
    sys::setxattr(t, Private::Redirect.name(), lower_path.as_bytes(), 0)
}

/// Whether the whiteout for `name` sits at `name` itself (so the object there must go
/// first): always in the overlay form; in the aufs form for names too long to take the
/// `.wh.` prefix (252 to 255 bytes), which get the xattr form instead.
pub fn whiteout_at_name(form: WhiteoutForm, name: &OsStr) -> bool {
    form == WhiteoutForm::Overlay || name.len() + WH_PREFIX.len() > 255
}

/// Writes a whiteout for `name` into `dir` (an upper directory) in the configured form.
/// With `work` (the workdir, on the upper's filesystem) an aufs whiteout is a hard link of
/// one shared empty file there (`SHARED_WHITEOUT`, kept across mounts), as overlayfs
/// shares one whiteout inode: a link costs a fraction of allocating an inode, which
/// dominated removing many lower files. A whiteout's inode is never seen through a mount,
/// nor by diff and commit: only its name counts.
pub fn write_whiteout(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    form: WhiteoutForm,
    work: Option<BorrowedFd<'_>>,
) -> SysResult<()> {
    match form {
        WhiteoutForm::Aufs if whiteout_at_name(form, name) => {
            let f = sys::openat(
                dir,
                name,
                libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
                0o600,
            )?;
            sys::setxattr(
                XTarget::Fd(std::os::fd::AsFd::as_fd(&f)),
                Private::OvlWhiteout.name(),
                b"y",
                0,
            )?;
            // The marker overlayfs wants on a directory holding xattr whiteouts, unless
            // the directory is opaque ("y" says more than "x").
            let marker = Private::OvlOpaque.name();
            if sys::getxattr(XTarget::Fd(dir), marker).is_err() {
                sys::setxattr(XTarget::Fd(dir), marker, b"x", 0)?;
            }
            Ok(())
        }
        WhiteoutForm::Aufs => {
            let wh = aufs_whiteout_name(name);
            let linked = match work {
                Some(w) => link_shared_whiteout(w, dir, &wh),
                None => Err(Errno::ENOENT),
            };
            match linked {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                // Not linkable (another filesystem, links refused): a file of its own.
                Err(_) => match sys::openat(
                    dir,
                    &wh,
                    libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
                    0o600,
                ) {
                    Ok(_) | Err(Errno::EEXIST) => Ok(()),
                    Err(e) => Err(e),
                },
            }
        }
        WhiteoutForm::Overlay => sys::mknodat(dir, name, libc::S_IFCHR | 0o600, 0),
    }
}

/// The shared whiteout file in the workdir.
pub const SHARED_WHITEOUT: &str = "stratafs.whiteout";

/// Serialises the replacement of a shared whiteout whose link count is used up.
static SHARED_WHITEOUT_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Links the shared whiteout of `work` to `wh` in `dir`, making it first if missing and
/// afresh when it has as many links as the filesystem allows.
fn link_shared_whiteout(work: BorrowedFd<'_>, dir: BorrowedFd<'_>, wh: &OsStr) -> SysResult<()> {
    let shared = OsStr::new(SHARED_WHITEOUT);
    for _ in 0..3 {
        match sys::linkat(work, shared, dir, wh) {
            Err(Errno::ENOENT) => {
                let _g = SHARED_WHITEOUT_LOCK.lock();
                sys::openat(work, shared, libc::O_CREAT | libc::O_WRONLY, 0o600)?;
            }
            Err(Errno::EMLINK) => {
                // A new shared file (another thread may just have made one: then this
                // costs one more, harmlessly).
                let _g = SHARED_WHITEOUT_LOCK.lock();
                match sys::unlinkat(work, shared, false) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
            r => return r,
        }
    }
    Err(Errno::EMLINK)
}

/// Removes the aufs whiteout for `name` in `dir` if there is one (S15).
pub fn remove_aufs_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    match sys::unlinkat(dir, &aufs_whiteout_name(name), false) {
        Ok(()) | Err(Errno::ENOENT) | Err(Errno::ENAMETOOLONG) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Marks the directory `dir` (an open fd of it) opaque in the configured form.
pub fn mark_opaque(dir: BorrowedFd<'_>, form: WhiteoutForm) -> SysResult<()> {
    match form {
        WhiteoutForm::Aufs => {
            match sys::openat(
                dir,
                OsStr::new(OPAQUE_NAME),
                libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
                0o600,
            ) {
                Ok(_) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        WhiteoutForm::Overlay => {
            sys::setxattr(XTarget::Fd(dir), Private::OvlOpaque.name(), b"y", 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_whiteout_names() {
        assert!(is_reserved_name(OsStr::new(".wh.foo")));
        assert!(is_reserved_name(OsStr::new(OPAQUE_NAME)));
        assert!(!is_reserved_name(OsStr::new(".whx")));
        assert!(!is_reserved_name(OsStr::new("wh.foo")));
        assert_eq!(
            aufs_whiteout_name(OsStr::new("a b")),
            OsString::from(".wh.a b")
        );
    }
}
