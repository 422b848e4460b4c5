//! The merged view of the lower layers alone, which `diff --lowerdir` compares an upper
//! with: a read-only union of the lowers, so that the tools and the mount merge layers by
//! one implementation of rules S4-S6.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::layerdir::{self, shown};
use super::{ToolError, ToolResult};
use crate::layers::LayerSet;
use crate::union::{Behaviour, Union, ROOT_INO};

pub struct LowerView {
    union: Union,
}

/// A directory of the merged lowers (its node in the union of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerDir {
    node: u64,
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
        let union = LayerSet::lowers_only(roots)
            .and_then(|layers| Union::new(layers, Behaviour::default()))
            .map_err(|e| ToolError(format!("cannot read the lower dirs: {e}")))?;
        Ok(LowerView { union })
    }

    /// The root directory.
    pub fn root(&self) -> LowerDir {
        LowerDir { node: ROOT_INO }
    }

    /// The visible children of the merged directory `dir`, which is at `rel`.
    pub fn children(
        &self,
        dir: &LowerDir,
        rel: &[u8],
    ) -> ToolResult<BTreeMap<OsString, LowerEntry>> {
        let err = |e| ToolError(format!("cannot read '{}' in the lowers: {e}", shown(rel)));
        let mut listed = Vec::new();
        self.union
            .readdir(dir.node, 0, |_, e| {
                if e.name != "." && e.name != ".." {
                    listed.push((e.name.clone(), e.kind == libc::S_IFDIR));
                }
                false
            })
            .map_err(err)?;
        let mut children = BTreeMap::new();
        for (name, is_dir) in listed {
            let entry = if is_dir {
                let node = self.union.lookup(dir.node, &name).map_err(err)?.nodeid;
                LowerEntry::Dir(LowerDir { node })
            } else {
                LowerEntry::NonDir
            };
            children.insert(name, entry);
        }
        Ok(children)
    }
}
