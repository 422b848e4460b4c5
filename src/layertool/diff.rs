//! `stratafs diff UPPERDIR [--lowerdir A:B]`: the changes an upper holds, as `docker diff`
//! prints them (`A /path`, `C /path`, `D /path`, sorted by path).
//!
//! With the lowers known, an upper object is A when the merged lowers have nothing at its
//! path and C when they do; a whiteout is D when it hides something; in an opaque
//! directory, whatever the lowers have that the upper does not is D (a hidden directory is
//! one D line, not one per entry under it). Without the lowers: a whiteout is D, a
//! directory is C (the union copies up the parents of whatever changes), anything else is
//! A. Init-layer files are never listed (S18).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::layerdir::{self, ChildKind};
use super::lowerview::{LowerDir, LowerEntry, LowerView};
use super::{is_init_layer_file, ToolError, ToolResult};
use crate::whiteout::WhiteoutForm;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Changed,
    Deleted,
}

impl Change {
    fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Changed => 'C',
            Change::Deleted => 'D',
        }
    }
}

/// What the lowers are known to hold at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowerKnowledge {
    /// No --lowerdir given.
    Unknown,
    Present,
    Absent,
}

/// The change an upper object stands for.
pub fn classify_object(lower: LowerKnowledge, is_dir: bool) -> Change {
    match lower {
        LowerKnowledge::Present => Change::Changed,
        LowerKnowledge::Absent => Change::Added,
        LowerKnowledge::Unknown if is_dir => Change::Changed,
        LowerKnowledge::Unknown => Change::Added,
    }
}

/// The change an upper whiteout stands for, if any: none when the upper also holds an
/// object of that name (that object is listed instead) or when it hides nothing.
pub fn classify_whiteout(lower: LowerKnowledge, upper_has_object: bool) -> Option<Change> {
    if upper_has_object || lower == LowerKnowledge::Absent {
        None
    } else {
        Some(Change::Deleted)
    }
}

struct Differ<'a> {
    form: WhiteoutForm,
    lowers: Option<&'a LowerView>,
    changes: Vec<(Vec<u8>, Change)>,
}

impl Differ<'_> {
    fn knowledge(&self, found: bool) -> LowerKnowledge {
        match (self.lowers.is_some(), found) {
            (false, _) => LowerKnowledge::Unknown,
            (true, true) => LowerKnowledge::Present,
            (true, false) => LowerKnowledge::Absent,
        }
    }

    fn record(&mut self, rel: Vec<u8>, change: Change) {
        if !is_init_layer_file(&rel) {
            self.changes.push((rel, change));
        }
    }

    /// Diffs the upper directory `dir` at `rel`; `lower_here` is the merged lower directory
    /// at the same path (if the lowers have one), `opaque` whether the upper one is opaque.
    fn dir(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        lower_here: Option<&LowerDir>,
        opaque: bool,
    ) -> ToolResult<()> {
        let listing = layerdir::read_upper_dir(dir, self.form, rel)?;
        let lower_children: BTreeMap<OsString, LowerEntry> = match (self.lowers, lower_here) {
            (Some(view), Some(d)) => view.children(d, rel)?,
            _ => BTreeMap::new(),
        };
        let objects: HashSet<&OsString> = listing
            .children
            .iter()
            .filter(|c| c.kind == ChildKind::Object)
            .map(|c| &c.name)
            .collect();
        let mut whiteouts_listed: HashSet<&OsString> = HashSet::new();

        for child in &listing.children {
            let child_rel = layerdir::join(rel, &child.name);
            if is_init_layer_file(&child_rel) {
                continue;
            }
            let lower_entry = lower_children.get(&child.name);
            let lower = self.knowledge(lower_entry.is_some());
            match child.kind {
                ChildKind::Whiteout { .. } => {
                    let upper_has_object = objects.contains(&child.name);
                    if let Some(change) = classify_whiteout(lower, upper_has_object) {
                        if whiteouts_listed.insert(&child.name) {
                            self.record(child_rel, change);
                        }
                    }
                }
                ChildKind::Object => {
                    self.record(child_rel.clone(), classify_object(lower, child.is_dir()));
                    if child.is_dir() {
                        let fd = layerdir::open_child_dir(dir, &child.name, &child_rel)?;
                        let lower_dir = match lower_entry {
                            Some(LowerEntry::Dir(d)) => Some(d),
                            _ => None,
                        };
                        // Under an opaque directory the lowers' subtree is hidden whole.
                        self.dir(fd.as_fd(), &child_rel, lower_dir, child.opaque || opaque)?;
                    }
                }
            }
        }
        if opaque {
            for name in lower_children.keys() {
                if !objects.contains(name) && !whiteouts_listed.contains(name) {
                    self.record(layerdir::join(rel, name), Change::Deleted);
                }
            }
        }
        Ok(())
    }
}

/// Computes the sorted change list of `upper`.
pub fn changes(
    upper: &Path,
    lowerdir: Option<&str>,
    form: WhiteoutForm,
) -> ToolResult<Vec<(Vec<u8>, Change)>> {
    let root = layerdir::open_root(upper, "upper dir")?;
    let view = lowerdir.map(LowerView::open).transpose()?;
    let mut differ = Differ {
        form,
        lowers: view.as_ref(),
        changes: Vec::new(),
    };
    let lower_root = view.as_ref().map(|v| v.root());
    differ.dir(root.as_fd(), b"", lower_root.as_ref(), false)?;
    let mut changes = differ.changes;
    changes.sort();
    Ok(changes)
}

pub fn run(upper: &Path, lowerdir: Option<&str>, form: WhiteoutForm) -> ToolResult<()> {
    let changes = changes(upper, lowerdir, form)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let write_err = |e: std::io::Error| ToolError(format!("cannot write the listing: {e}"));
    for (rel, change) in changes {
        write!(out, "{} /", change.letter()).map_err(write_err)?;
        out.write_all(&rel).map_err(write_err)?;
        out.write_all(b"\n").map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_without_lowers_follow_the_documented_rule() {
        assert_eq!(
            classify_object(LowerKnowledge::Unknown, true),
            Change::Changed
        );
        assert_eq!(
            classify_object(LowerKnowledge::Unknown, false),
            Change::Added
        );
    }

    #[test]
    fn objects_with_lowers_are_added_or_changed() {
        assert_eq!(classify_object(LowerKnowledge::Absent, true), Change::Added);
        assert_eq!(
            classify_object(LowerKnowledge::Absent, false),
            Change::Added
        );
        assert_eq!(
            classify_object(LowerKnowledge::Present, false),
            Change::Changed
        );
        assert_eq!(
            classify_object(LowerKnowledge::Present, true),
            Change::Changed
        );
    }

    #[test]
    fn whiteouts_are_deletions_when_they_hide_something() {
        assert_eq!(
            classify_whiteout(LowerKnowledge::Unknown, false),
            Some(Change::Deleted)
        );
        assert_eq!(
            classify_whiteout(LowerKnowledge::Present, false),
            Some(Change::Deleted)
        );
        assert_eq!(classify_whiteout(LowerKnowledge::Absent, false), None);
        assert_eq!(classify_whiteout(LowerKnowledge::Present, true), None);
    }

    #[test]
    fn changes_sort_by_path_then_kind() {
        let mut v = [
            (b"b".to_vec(), Change::Added),
            (b"a/x".to_vec(), Change::Deleted),
            (b"a".to_vec(), Change::Changed),
        ];
        v.sort();
        let paths: Vec<&[u8]> = v.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(paths, vec![b"a".as_slice(), b"a/x", b"b"]);
    }
}
