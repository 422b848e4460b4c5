//! `-o redirect_dir=on` (issue 3, S16): renaming a merged directory writes a redirect
//! instead of copying the tree: O(1) in its size, and it survives a remount.
mod common;
use common::*;

use std::fs;
use std::time::Instant;

const FILES: usize = 2000;

fn merged_dir_image() -> Layers {
    let l = Layers::new(2);
    for i in 0..FILES {
        l.put(1, &format!("d/f{i}"), &format!("{i}\n"));
    }
    l.put(1, "d/sub/deep", "deep\n");
    l.put(0, "d/top", "top\n");
    l.put(0, "d/.wh.f0", "");
    l.put(1, "other/x", "x\n");
    l
}

fn check_moved(l: &Layers, at: &str) {
    let names = names(&l.m(at));
    assert_eq!(names.len(), FILES - 1 + 2, "f1..f{} + sub + top", FILES - 1);
    assert!(
        !names.contains(&"f0".to_string()),
        "whiteout of a lower still applies"
    );
    assert_eq!(fs::read_to_string(l.m(&format!("{at}/f7"))).unwrap(), "7\n");
    assert_eq!(
        fs::read_to_string(l.m(&format!("{at}/top"))).unwrap(),
        "top\n"
    );
    assert_eq!(
        fs::read_to_string(l.m(&format!("{at}/sub/deep"))).unwrap(),
        "deep\n"
    );
}

#[test]
fn rename_of_a_merged_dir_is_a_redirect() {
    let l = merged_dir_image();
    let lo = [snapshot(&l.lowers[0]), snapshot(&l.lowers[1])];
    {
        let _m = l.mount("redirect_dir=on");
        let t = Instant::now();
        fs::rename(l.m("d"), l.m("moved")).unwrap();
        eprintln!(
            "rename of a merged dir of {FILES} lower files: {:?}",
            t.elapsed()
        );
        assert!(!l.m("d").exists(), "old name gone");
        check_moved(&l, "moved");
        // Nothing of the tree was copied: the upper holds the dir and its redirect.
        let upper_entries: Vec<String> = names(&l.upper.join("moved"));
        assert!(
            upper_entries.len() <= 2,
            "upper copy of the tree: {upper_entries:?}"
        );
        assert_eq!(
            get_xattr(&l.upper.join("moved"), "trusted.stratafs.redirect").unwrap(),
            b"d"
        );
        // Changes inside work as in any merged dir.
        fs::write(l.m("moved/f9"), "changed\n").unwrap();
        fs::remove_file(l.m("moved/f10")).unwrap();
        fs::write(l.m("moved/new"), "new\n").unwrap();
        // A new dir at the old name starts empty.
        fs::create_dir(l.m("d")).unwrap();
        assert!(names(&l.m("d")).is_empty());
    }
    {
        // After a remount, and after a second rename under a dir that only the upper has.
        let _m = l.mount("redirect_dir=on");
        assert_eq!(fs::read_to_string(l.m("moved/f9")).unwrap(), "changed\n");
        assert!(!l.m("moved/f10").exists());
        fs::create_dir(l.m("fresh")).unwrap();
        fs::rename(l.m("moved"), l.m("fresh/again")).unwrap();
        assert_eq!(
            fs::read_to_string(l.m("fresh/again/f9")).unwrap(),
            "changed\n"
        );
        assert_eq!(fs::read_to_string(l.m("fresh/again/new")).unwrap(), "new\n");
        assert_eq!(fs::read_to_string(l.m("fresh/again/f11")).unwrap(), "11\n");
        assert_eq!(names(&l.m("fresh/again")).len(), FILES - 2 + 3);
    }
    assert_same_tree("lower 0", &lo[0], &snapshot(&l.lowers[0]));
    assert_same_tree("lower 1", &lo[1], &snapshot(&l.lowers[1]));
    // A layer tar cannot express a redirect: commit says so.
    let tar = l.tmp.path().join("x.tar");
    let upper = l.upper.to_str().unwrap();
    let err = stratafs_refuses(&["commit", upper, "--output", tar.to_str().unwrap()]);
    assert!(err.contains("redirect_dir"), "{err}");
}

#[test]
fn without_the_option_the_tree_is_copied_and_self_contained() {
    let l = merged_dir_image();
    {
        let _m = l.mount("");
        fs::rename(l.m("d"), l.m("moved")).unwrap();
        check_moved(&l, "moved");
    }
    assert!(get_xattr(&l.upper.join("moved"), "trusted.stratafs.redirect").is_err());
    assert!(names(&l.upper.join("moved")).len() >= FILES);
}
