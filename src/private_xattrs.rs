//! The xattrs the union keeps for itself on layer files (S8): their names, and which
//! namespace this process writes them in. A mount by the initial namespace's root writes
//! `trusted.*`, which no unprivileged process can read or forge; every other mount (a
//! plain user's through fusermount3, or root of a user namespace, as rootless containers
//! run us) writes `user.*`, as overlayfs does with `userxattr`. A mount reads its own
//! namespace; the layer tools, which may look at either kind of upper, read both.
//! Also what is left: the public xattrs of an object, which copy-up and commit carry over.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::{self, Errno, SysResult, XTarget};

/// One private xattr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Private {
    /// A metadata-only upper copy: where its data is (`-o metacopy=on`).
    Metacopy,
    /// On an upper copy: the inode number of the object it was copied up from.
    Ino,
    /// On a renamed merged directory: where the lowers hold its contents.
    Redirect,
    /// Immutable/append-only flags of an object whose layer cannot hold them itself.
    Protattr,
    /// The statistics report, served (not stored) on the mount's root.
    Stats,
    /// overlayfs' whiteout and opaque markers, when `whiteout=overlay` writes them.
    OvlWhiteout,
    OvlOpaque,
}

impl Private {
    /// (trusted name, user name)
    const fn names(self) -> (&'static str, &'static str) {
        match self {
            Private::Metacopy => ("trusted.stratafs.metacopy", "user.stratafs.metacopy"),
            Private::Ino => ("trusted.stratafs.ino", "user.stratafs.ino"),
            Private::Redirect => ("trusted.stratafs.redirect", "user.stratafs.redirect"),
            Private::Protattr => ("trusted.stratafs.protattr", "user.stratafs.protattr"),
            Private::Stats => ("trusted.stratafs.stats", "user.stratafs.stats"),
            Private::OvlWhiteout => ("trusted.overlay.whiteout", "user.overlay.whiteout"),
            Private::OvlOpaque => ("trusted.overlay.opaque", "user.overlay.opaque"),
        }
    }

    /// The name this process reads and writes.
    pub fn name(self) -> &'static OsStr {
        let (trusted, user) = self.names();
        OsStr::new(if USER_NAMESPACE.load(Ordering::Relaxed) {
            user
        } else {
            trusted
        })
    }

    /// Both names, trusted first: for readers of layers any mount may have written.
    pub fn both(self) -> [&'static OsStr; 2] {
        let (trusted, user) = self.names();
        [OsStr::new(trusted), OsStr::new(user)]
    }
}

static USER_NAMESPACE: AtomicBool = AtomicBool::new(false);

/// Chooses `user.*` (true) or `trusted.*` for this process; set once, at mount.
pub fn use_user_namespace(on: bool) {
    USER_NAMESPACE.store(on, Ordering::Relaxed);
}

/// Whether this process writes `user.*` names.
pub fn in_user_namespace() -> bool {
    USER_NAMESPACE.load(Ordering::Relaxed)
}

/// Xattrs private to the union, in either namespace: hidden from the merged view (S8).
pub fn is_private(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"trusted.overlay.")
        || b.starts_with(b"user.overlay.")
        || b.starts_with(b"trusted.stratafs.")
        || b.starts_with(b"user.stratafs.")
}

/// The xattrs of `target` that are not the union's private ones, with their values; none
/// where the filesystem has no xattrs. One removed between the listing and the read is
/// left out.
pub fn public_xattrs(target: XTarget<'_>) -> SysResult<Vec<(OsString, Vec<u8>)>> {
    let names = match sys::listxattr(target) {
        Ok(n) => n,
        Err(Errno::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        if is_private(&n) {
            continue;
        }
        match sys::getxattr(target, &n) {
            Ok(v) => out.push((n, v)),
            Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namespaces_are_private_and_the_chosen_one_is_named() {
        for p in [Private::Metacopy, Private::Ino, Private::OvlOpaque] {
            let [t, u] = p.both();
            assert!(is_private(t) && is_private(u));
            assert!(t.as_bytes().starts_with(b"trusted.") && u.as_bytes().starts_with(b"user."));
        }
        assert!(!is_private(OsStr::new("user.mime_type")));
        assert!(!is_private(OsStr::new("trusted.other")));
    }
}
