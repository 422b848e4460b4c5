//! The merged view of the lower layers alone, which `diff --lowerdir` compares an upper
//! with: the children of a directory when only the lowers are stacked (S4-S6, with the
//! lowers' own whiteouts and opaque directories honoured).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::layerdir::{self, ChildKind, Reading};
use super::{ToolError, ToolResult};
use crate::sys;

pub struct LowerView {
    roots: Vec<(PathBuf, OwnedFd)>,
}

/// A directory of the merged lowers: the lowers (by index, top first) that contribute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LowerDir {
    layers: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerEntry {
    Dir(LowerDir),
    NonDir,
}

impl LowerView {
    /// Opens `A:B:C` (top first).
    pub fn open(spec: &str) -> ToolResult<LowerView> {
        let mut roots = Vec::new();
        for part in spec.split(':') {
            if part.is_empty() {
                return Err(ToolError::new("--lowerdir has an empty path"));
            }
            let path = PathBuf::from(part);
            let fd = layerdir::open_root(&path, "lower dir")?;
            roots.push((path, fd));
        }
        Ok(LowerView { roots })
    }

    /// The root directory, to which every lower contributes.
    pub fn root(&self) -> LowerDir {
        LowerDir {
            layers: (0..self.roots.len()).collect(),
        }
    }

    /// The visible children of the merged directory `dir`, found at `rel` in each lower.
    pub fn children(
        &self,
        dir: &LowerDir,
        rel: &[u8],
    ) -> ToolResult<BTreeMap<OsString, LowerEntry>> {
        let mut merged: BTreeMap<OsString, (LowerEntry, bool)> = BTreeMap::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        for &idx in &dir.layers {
            let (root_path, root) = &self.roots[idx];
            let fd = sys::open_beneath(
                root.as_fd(),
                OsStr::from_bytes(rel),
                libc::O_PATH | libc::O_DIRECTORY,
            )
            .map_err(|e| {
                ToolError(format!(
                    "cannot open '{}' in lower dir '{}': {e}",
                    layerdir::shown(rel),
                    root_path.display()
                ))
            })?;
            let listing = layerdir::read_layer_dir(fd.as_fd(), Reading::Lower, rel)?;
            for child in listing
                .children
                .iter()
                .filter(|c| c.kind == ChildKind::Object)
            {
                if hidden.contains(&child.name) {
                    continue;
                }
                match merged.get_mut(&child.name) {
                    None => {
                        let entry = if child.is_dir() {
                            (
                                LowerEntry::Dir(LowerDir { layers: vec![idx] }),
                                child.opaque,
                            )
                        } else {
                            (LowerEntry::NonDir, true)
                        };
                        merged.insert(child.name.clone(), entry);
                    }
                    Some((LowerEntry::Dir(d), closed)) if !*closed => {
                        if child.is_dir() {
                            d.layers.push(idx);
                            *closed = child.opaque;
                        } else {
                            // A non-directory hides what is below it (S4).
                            *closed = true;
                        }
                    }
                    Some(_) => {}
                }
            }
            // A whiteout hides its name in the layers below its own (S5).
            for child in listing
                .children
                .iter()
                .filter(|c| c.kind != ChildKind::Object)
            {
                if let Some((_, closed)) = merged.get_mut(&child.name) {
                    *closed = true;
                }
                hidden.insert(child.name.clone());
            }
        }
        Ok(merged.into_iter().map(|(n, (e, _))| (n, e)).collect())
    }
}
