//! Metadata-only copy-up (`-o metacopy=on`): a chmod, chown, utimes or xattr change of a
//! lower file makes an upper copy of its metadata only, sized but without data blocks,
//! marked with an xattr that names where the data still is. Reads go to that lower
//! file; the first write-open copies the data in and drops the mark, so a crash at any
//! point leaves either the marked copy (data from the lower) or the complete file.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use super::inodes::Node;
use super::Union;
use crate::sys::{self, Errno, Stat, SysResult, XTarget};

use crate::private_xattrs::Private;

/// In the workdir: this upper has held metadata-only copies.
pub const METACOPY_MARKER: &str = "stratafs.metacopy";

/// "<layer index>:<path in that layer>".
pub fn encode_origin(layer: usize, path: &OsStr) -> Vec<u8> {
    let mut v = format!("{layer}:").into_bytes();
    v.extend_from_slice(path.as_bytes());
    v
}

pub fn decode_origin(v: &[u8]) -> Option<(usize, OsString)> {
    let colon = v.iter().position(|b| *b == b':')?;
    let layer = std::str::from_utf8(&v[..colon]).ok()?.parse().ok()?;
    let path = &v[colon + 1..];
    if path.is_empty() || path.starts_with(b"/") || path.split(|b| *b == b'/').any(|c| c == b"..") {
        return None;
    }
    Some((layer, OsStr::from_bytes(path).to_os_string()))
}

impl Union {
    /// The data origin of an upper file at `path`, if it is a metadata-only copy. Only a
    /// fully sparse regular file can be one, which keeps the xattr probe off most files.
    pub(super) fn metacopy_origin_of(&self, st: &Stat, path: &OsStr) -> Option<(usize, OsString)> {
        // A metadata-only copy has no data blocks: at most one block for its xattrs.
        let allocated = st.st_blocks as u64 * 512;
        if !self.may_hold_metacopies()
            || st.st_mode & libc::S_IFMT != libc::S_IFREG
            || st.st_size == 0
            || (allocated > 4096 && allocated >= st.st_size as u64)
        {
            return None;
        }
        let (dir, name) = self.parent_fd(0, path).ok()?;
        let v = sys::getxattr(XTarget::At(dir.as_fd(), name), Private::Metacopy.name()).ok()?;
        decode_origin(&v).filter(|(l, _)| *l > 0 && *l < self.layers.layers.len())
    }

    /// Whether this upper may hold metadata-only copies: mounted with metacopy=on now, or
    /// a marker in the workdir says an earlier mount made some. Spares every other mount
    /// the xattr probe.
    pub(super) fn may_hold_metacopies(&self) -> bool {
        self.behaviour.metacopy
            || self
                .metacopy_marker
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes in the workdir that this upper now holds metadata-only copies.
    pub(super) fn note_metacopy(&self) -> SysResult<()> {
        if let Some(w) = &self.layers.workdir {
            if !self
                .metacopy_marker
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                sys::openat(
                    w.as_fd(),
                    OsStr::new(METACOPY_MARKER),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o600,
                )?;
            }
        }
        Ok(())
    }

    /// A metadata-only copy reports the blocks its data occupies in the lower.
    pub(super) fn metacopy_blocks(&self, st: &mut Stat, data: &Option<(usize, OsString)>) {
        if let Some((layer, path)) = data {
            if let Ok(d) = self.stat_in(*layer, path) {
                st.st_blocks = d.st_blocks;
            }
        }
    }

    /// Copies the data of a metadata-only copy into it (or just drops the mark when the
    /// data is about to be truncated away). Callers hold the node's copy-up lock.
    pub(super) fn complete_metacopy(
        &self,
        node: &Node,
        origin: &(usize, OsString),
        with_data: bool,
    ) -> SysResult<()> {
        let path = self.path_of(node)?;
        let (udir, name) = self.parent_fd(0, &path)?;
        if with_data {
            let (sdir, sname) = self.parent_fd(origin.0, &origin.1)?;
            let src = sys::openat(sdir.as_fd(), sname, libc::O_RDONLY, 0)?;
            let size = sys::fstat(src.as_fd())?.st_size as u64;
            let dst = sys::openat(udir.as_fd(), name, libc::O_WRONLY, 0)?;
            super::datacopy::copy_data(src.as_fd(), dst.as_fd(), size)?;
            if self.behaviour.syncs() {
                sys::fsync(dst.as_fd(), false)?;
            }
        }
        match sys::removexattr(XTarget::At(udir.as_fd(), name), Private::Metacopy.name()) {
            Ok(()) | Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
        node.state.lock().data = None;
        self.attributes_changed(node.ino);
        self.files.retarget(node.ino, || {
            sys::openat(udir.as_fd(), name, libc::O_RDONLY, 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_and_refuse_escapes() {
        let v = encode_origin(3, OsStr::new("usr/bin/big file"));
        assert_eq!(
            decode_origin(&v),
            Some((3, OsString::from("usr/bin/big file")))
        );
        assert_eq!(decode_origin(b"2:/etc/passwd"), None);
        assert_eq!(decode_origin(b"2:a/../../x"), None);
        assert_eq!(decode_origin(b"x:a"), None);
        assert_eq!(decode_origin(b"1:"), None);
    }
}
