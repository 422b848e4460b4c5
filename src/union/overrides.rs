//! Owners and modes kept in an xattr (`xattr_permissions=1|2`, see `override_stat`): which
//! layers hold such overrides, what an object shows with one, and where chown and chmod
//! write one instead of changing the real object. A layer takes part when its root
//! carries an override (fuse-overlayfs' marker) or the mount asks to write them; the upper
//! root gets its marker at mount time, so the next mount reads the upper's overrides
//! whatever options it is given.

use std::ffi::OsStr;

use super::Union;
use crate::layers::LayerSet;
use crate::override_stat::{self, OverrideStat};
use crate::sys::{self, Errno, Stat, SysResult, XTarget};

/// What a mount does with override xattrs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Objects show the owner and mode of their override, where they have one.
    pub read: bool,
    /// The name chown, chmod and new objects write (None: they change the real object).
    pub write: Option<&'static str>,
    /// Whether an override may show a device node (`:char-M-m`, `:block-M-m`): only on a
    /// `nodev` mount, where such a node cannot be opened; elsewhere a layer's xattr would
    /// hand out the host's devices, so the regular file shows as what it is.
    pub devices: bool,
}

fn root_marker(t: XTarget<'_>) -> Option<&'static str> {
    override_stat::NAMES
        .into_iter()
        .find(|n| sys::getxattr(t, OsStr::new(n)).is_ok())
}

impl Overrides {
    /// From `xattr_permissions` (0, 1 or 2) and the layers' root markers; marks the upper
    /// root when writing.
    pub fn set_up(xattr_permissions: u8, layers: &LayerSet, nodev: bool) -> SysResult<Overrides> {
        let marked = layers
            .layers
            .iter()
            .any(|l| root_marker(XTarget::Fd(l.fd())).is_some());
        let mut o = Overrides {
            read: marked || xattr_permissions != 0,
            write: None,
            devices: nodev,
        };
        if !layers.has_upper {
            return Ok(o);
        }
        let upper = XTarget::Fd(layers.layers[0].fd());
        if xattr_permissions == 0 {
            // An upper that a mount with xattr_permissions started keeps its owners and
            // modes in overrides: a chown or chmod must change the override shown, not the
            // real object behind it.
            o.write = root_marker(upper);
            return Ok(o);
        }
        let name = match (xattr_permissions, root_marker(upper)) {
            (1, _) => override_stat::SECURITY,
            // fuse-overlayfs up to 1.10 wrote this one: an upper it started keeps it.
            (_, Some(override_stat::FUSE_OVERLAYFS)) => override_stat::FUSE_OVERLAYFS,
            _ => override_stat::CONTAINERS,
        };
        if sys::getxattr(upper, OsStr::new(name)).is_err() {
            // The root's marker: its own attributes, or those of the first lower that
            // has one.
            let from_lower = layers.layers[1..].iter().find_map(|l| {
                let t = XTarget::Fd(l.fd());
                root_marker(t).and_then(|n| sys::getxattr(t, OsStr::new(n)).ok())
            });
            let value = match from_lower {
                Some(v) => v,
                None => {
                    let st = sys::fstat(layers.layers[0].fd())?;
                    OverrideStat::of(&st).to_bytes(st.st_mode & libc::S_IFMT)
                }
            };
            sys::setxattr(upper, OsStr::new(name), &value, 0)?;
        }
        o.write = Some(name);
        Ok(o)
    }
}

/// The override an object carries, if any (directories and regular files only).
pub fn read(t: XTarget<'_>) -> Option<OverrideStat> {
    override_stat::NAMES
        .into_iter()
        .find_map(|n| sys::getxattr(t, OsStr::new(n)).ok())
        .and_then(|v| OverrideStat::parse(&v))
}

impl Union {
    /// Shows the override of the object at `t` in `st`, where the mount reads them.
    pub(super) fn show_override(&self, t: XTarget<'_>, st: &mut Stat) {
        let fmt = st.st_mode & libc::S_IFMT;
        if !self.overrides.read || (fmt != libc::S_IFDIR && fmt != libc::S_IFREG) {
            return;
        }
        if let Some(mut o) = read(t) {
            if !self.overrides.devices
                && o.kind
                    .is_some_and(|(k, _)| k == libc::S_IFCHR || k == libc::S_IFBLK)
            {
                o.kind = None;
            }
            o.apply(st);
        }
    }

    /// `show_override` for the object at `path` in `layer`.
    pub(super) fn show_override_at(&self, layer: usize, path: &OsStr, st: &mut Stat) {
        if self.overrides.read {
            let _ = self.xtarget_at(layer, path, |t| {
                self.show_override(t, st);
                Ok(())
            });
        }
    }

    /// Whether `name` is one of the override xattrs, which no mount lets a caller read or
    /// set (as fuse-overlayfs hides its own): one set through a mount that does not read
    /// them would take effect at a later mount that does (a setuid root file, a device).
    pub(super) fn is_override_name(&self, name: &OsStr) -> bool {
        override_stat::NAMES.iter().any(|n| name == OsStr::new(n))
    }

    /// chown and chmod under `xattr_permissions`: the object (already in the upper, at
    /// `t`, real stat `real`) gets a new override instead of a new owner or mode. None:
    /// the mount does not write overrides, or the object cannot take one.
    pub(super) fn write_override(
        &self,
        t: XTarget<'_>,
        real: &Stat,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Option<SysResult<()>> {
        let name = self.overrides.write?;
        let fmt = real.st_mode & libc::S_IFMT;
        if fmt != libc::S_IFDIR && fmt != libc::S_IFREG {
            return None;
        }
        let mut o = read(t).unwrap_or_else(|| OverrideStat::of(real));
        o.uid = uid.unwrap_or(o.uid);
        o.gid = gid.unwrap_or(o.gid);
        o.perm = mode.map_or(o.perm, |m| m & 0o7777);
        let written = sys::setxattr(t, OsStr::new(name), &o.to_bytes(fmt), 0).map(|()| {
            // One override per object: another name copied from a lower would be read
            // first by a reader with another order.
            for other in override_stat::NAMES.into_iter().filter(|n| *n != name) {
                let _ = sys::removexattr(t, OsStr::new(other));
            }
        });
        Some(written)
    }

    /// chown and chmod of an object in the upper (`t`): into its override where the mount
    /// keeps owners and modes there, on the object itself otherwise.
    pub(super) fn set_owner_and_mode(
        &self,
        t: XTarget<'_>,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> SysResult<()> {
        if uid.is_none() && gid.is_none() && mode.is_none() {
            return Ok(());
        }
        if self.overrides.write.is_some() {
            // The real stat only matters to an override (its type, and what it starts
            // from): a mount that writes none pays no extra syscall per chown or chmod.
            let real = sys::stat_target(t)?;
            if let Some(written) = self.write_override(t, &real, uid, gid, mode) {
                return written;
            }
        }
        if uid.is_some() || gid.is_some() {
            sys::chown_target(t, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        match mode {
            Some(m) => sys::chmod_target(t, m & 0o7777),
            None => Ok(()),
        }
    }

    /// After a chown of a new or copied object failed with EPERM (a mount without the
    /// privilege to give objects other owners): records the owner in an override instead,
    /// where the mount writes them; the EPERM otherwise.
    pub(super) fn owner_into_override(
        &self,
        t: XTarget<'_>,
        fmt: u32,
        shown: OverrideStat,
    ) -> SysResult<()> {
        match self.overrides.write {
            Some(name) if fmt == libc::S_IFDIR || fmt == libc::S_IFREG => {
                if read(t).is_some() {
                    return Ok(()); // copied from the source
                }
                sys::setxattr(t, OsStr::new(name), &shown.to_bytes(fmt), 0)
            }
            _ => Err(Errno::EPERM),
        }
    }
}

/// Real permission bits for an object whose shown mode is in an override: the daemon
/// must still read and write it (and search a directory).
pub fn real_perm(fmt: u32, perm: u32) -> u32 {
    perm | if fmt == libc::S_IFDIR { 0o700 } else { 0o600 }
}
