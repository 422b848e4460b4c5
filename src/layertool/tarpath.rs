//! Turning a path found in a tar (an entry name or a hard-link target) into the plain
//! components it names inside the layer, or refusing it: absolute paths and `..`
//! components could land outside the layer dir. Pure logic, no filesystem access.

#[derive(Debug, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    ParentComponent,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::Absolute => f.write_str("absolute path"),
            PathProblem::ParentComponent => f.write_str("path has a '..' component"),
        }
    }
}

/// The normal components of `raw`: empty and `.` components (`./a//b/`) are dropped; an
/// empty result names the layer root.
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>, PathProblem> {
    if raw.first() == Some(&b'/') {
        return Err(PathProblem::Absolute);
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(PathProblem::ParentComponent),
            name => out.push(name),
        }
    }
    Ok(out)
}

/// The components joined with `/` (for messages and maps).
pub fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_split_into_components() {
        assert_eq!(
            components(b"a/b/c").unwrap(),
            vec![b"a".as_slice(), b"b", b"c"]
        );
        assert_eq!(components(b"./a//b/").unwrap(), vec![b"a".as_slice(), b"b"]);
        assert_eq!(components(b"dir/").unwrap(), vec![b"dir".as_slice()]);
        assert_eq!(components(b"a/./b").unwrap(), vec![b"a".as_slice(), b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b".").unwrap().is_empty());
    }

    #[test]
    fn names_that_merely_contain_dots_are_fine() {
        assert_eq!(
            components(b"..a/b..").unwrap(),
            vec![b"..a".as_slice(), b"b.."]
        );
        assert_eq!(
            components(b".wh..wh..opq").unwrap(),
            vec![b".wh..wh..opq".as_slice()]
        );
    }

    #[test]
    fn absolute_paths_are_refused() {
        assert_eq!(components(b"/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(components(b"//x"), Err(PathProblem::Absolute));
    }

    #[test]
    fn parent_components_are_refused_anywhere() {
        assert_eq!(components(b".."), Err(PathProblem::ParentComponent));
        assert_eq!(components(b"../x"), Err(PathProblem::ParentComponent));
        assert_eq!(components(b"a/../../x"), Err(PathProblem::ParentComponent));
        assert_eq!(components(b"a/.."), Err(PathProblem::ParentComponent));
        assert_eq!(components(b"./a/b/../c"), Err(PathProblem::ParentComponent));
    }

    #[test]
    fn joined_rebuilds_the_clean_path() {
        let parts = components(b"./a//b/").unwrap();
        assert_eq!(joined(&parts), b"a/b".to_vec());
    }
}
