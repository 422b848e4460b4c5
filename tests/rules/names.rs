//! S8-S9: reserved `.wh.` names and directory listings.

use super::*;

// ------------------------------------------------------------------------------ S8

#[test]
fn s8_wh_names_never_listed_or_looked_up() {
    let l = Layers::new(2);
    l.put(0, ".wh.gone", "");
    l.put(0, ".wh.a", "");
    l.put(0, "d/.wh..wh..opq", "");
    l.put(0, "d/x", "x\n");
    l.put(0, "d/.wh.orphan", "");
    l.put(1, "a", "a\n");
    l.put(1, "b", "b\n");
    l.put(1, ".wh.lowest", "");
    l.put_upper(".wh.c", "");
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(names(&l.mnt), ["b", "d"]);
    assert_eq!(names(&l.m("d")), ["x"]);
    let mut raw = raw_names(&l.mnt);
    raw.sort();
    assert_eq!(raw, [".", "..", "b", "d"]);
    for p in [
        ".wh.gone",
        ".wh.a",
        ".wh.c",
        ".wh.lowest",
        "d/.wh..wh..opq",
        "d/.wh.orphan",
    ] {
        assert_gone(&l.m(p));
        assert_eq!(fails(File::open(l.m(p))), libc::ENOENT, "{p}");
    }
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s8_creating_reserved_names_fails_eperm() {
    let l = Layers::new(1);
    l.put(0, "f", "f\n");
    l.put(0, ".wh.f", "");
    l.mkdir(0, "d");
    let lo = l.snap_lowers();
    let m = l.mount("");
    let f = l.m("f");
    for n in [
        ".wh.x",
        ".wh..wh..opq",
        ".wh.f",
        "d/.wh.y",
        "d/.wh..wh..opq",
    ] {
        let p = l.m(n);
        assert_eq!(fails(fs::write(&p, "x")), libc::EPERM, "create {n}");
        assert_eq!(fails(fs::create_dir(&p)), libc::EPERM, "mkdir {n}");
        assert_eq!(fails(symlink("f", &p)), libc::EPERM, "symlink {n}");
        assert_eq!(
            fails(mknod(&p, libc::S_IFIFO | 0o600, 0, 0)),
            libc::EPERM,
            "mknod {n}"
        );
        assert_eq!(fails(fs::hard_link(&f, &p)), libc::EPERM, "link {n}");
        assert_eq!(fails(fs::rename(&f, &p)), libc::EPERM, "rename to {n}");
    }
    assert_eq!(read(&f), "f\n");
    assert_eq!(names(&l.mnt), ["d", "f"]);
    unmount(m);
    assert!(
        all_paths(&l.upper).iter().all(|p| !p.contains(".wh.")),
        "{:?}",
        all_paths(&l.upper)
    );
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s8_private_xattrs_hidden() {
    let l = Layers::new(1);
    l.put(0, "f", "f\n");
    let lf = l.lower(0, "f");
    set_xattr(&lf, "user.keep", b"1").unwrap();
    set_xattr(&lf, "trusted.keep", b"2").unwrap();
    set_xattr(&lf, "trusted.overlay.origin", b"xx").unwrap();
    set_xattr(&lf, "trusted.overlay.redirect", b"/elsewhere").unwrap();
    set_xattr(&lf, "user.overlay.foo", b"bar").unwrap();
    l.put(0, "o/inner", "i\n");
    set_xattr(&l.lower(0, "o"), "trusted.overlay.opaque", b"y").unwrap();
    set_xattr(&l.lower(0, "o"), "user.dirkeep", b"3").unwrap();
    set_xattr(&l.upper, "trusted.overlay.impure", b"y").unwrap();
    set_xattr(&l.upper, "user.overlay.x", b"1").unwrap();
    set_xattr(&l.upper, "user.rootkeep", b"r").unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("");
    assert_eq!(list_xattr(&l.mnt).unwrap(), ["user.rootkeep"]);
    assert_eq!(
        fails(get_xattr(&l.mnt, "trusted.overlay.impure")),
        libc::ENODATA
    );
    let f = l.m("f");
    assert_eq!(list_xattr(&f).unwrap(), ["trusted.keep", "user.keep"]);
    assert_eq!(get_xattr(&f, "user.keep").unwrap(), b"1");
    for x in [
        "trusted.overlay.origin",
        "trusted.overlay.redirect",
        "user.overlay.foo",
    ] {
        assert_eq!(fails(get_xattr(&f, x)), libc::ENODATA, "{x}");
    }
    assert_eq!(list_xattr(&l.m("o")).unwrap(), ["user.dirkeep"]);
    assert_eq!(
        fails(get_xattr(&l.m("o"), "trusted.overlay.opaque")),
        libc::ENODATA
    );
    // After a copy-up the view is the same plus the new name.
    set_xattr(&f, "user.new", b"4").unwrap();
    assert_eq!(
        list_xattr(&f).unwrap(),
        ["trusted.keep", "user.keep", "user.new"]
    );
    assert_eq!(fails(get_xattr(&f, "user.overlay.foo")), libc::ENODATA);
    // A directory made opaque by the daemon shows no private xattr either.
    fs::remove_file(l.m("o/inner")).unwrap();
    fs::remove_dir(l.m("o")).unwrap();
    fs::create_dir(l.m("o")).unwrap();
    assert_eq!(list_xattr(&l.m("o")).unwrap(), Vec::<String>::new());
    unmount(m);
    let m = l.mount("whiteout=overlay");
    fs::remove_dir(l.m("o")).unwrap();
    fs::create_dir(l.m("o")).unwrap();
    assert_eq!(list_xattr(&l.m("o")).unwrap(), Vec::<String>::new());
    assert_eq!(
        fails(get_xattr(&l.m("o"), "trusted.overlay.opaque")),
        libc::ENODATA
    );
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

// ------------------------------------------------------------------------------ S9

/// Asserts no name appears twice and returns the names as a set.
#[track_caller]
fn no_repeats(list: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for n in list {
        assert!(seen.insert(n.clone()), "'{n}' listed twice");
    }
    seen
}

#[test]
fn s9_readdir_lists_each_name_once_with_dot_and_dotdot() {
    let l = Layers::new(3);
    l.put(0, "d/a", "a0");
    l.put(0, "d/b", "b0");
    l.put(0, "d/.wh.c", "");
    l.put(1, "d/b", "b1");
    l.put(1, "d/c", "c1");
    l.put(1, "d/e", "e1");
    l.put(1, "d/sub/x", "x1");
    l.put(2, "d/a", "a2");
    l.put(2, "d/f", "f2");
    l.put(2, "d/sub/y", "y2");
    l.put_upper("d/u", "u");
    l.put_upper("d/b", "bu");
    l.put_upper("d/.wh.e", "");
    let lo = l.snap_lowers();
    let m = l.mount("");
    let raw = raw_names(&l.m("d"));
    let set = no_repeats(&raw);
    assert_eq!(
        set.into_iter().collect::<Vec<_>>(),
        [".", "..", "a", "b", "f", "sub", "u"]
    );
    let raw = raw_names(&l.m("d/sub"));
    assert_eq!(no_repeats(&raw).len(), 4, "{raw:?}");
    assert_eq!(names(&l.m("d/sub")), ["x", "y"]);
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s9_large_listing_split_across_calls() {
    let l = Layers::new(3);
    let name = |i: usize| format!("entry-with-a-rather-long-name-to-fill-buffers-{i:05}");
    for i in 0..1000 {
        l.put(0, &format!("d/{}", name(i)), "0");
        l.put(1, &format!("d/{}", name(i + 500)), "1");
        l.put(2, &format!("d/{}", name(i + 1000)), "2");
    }
    for i in 1200..1250 {
        l.put(0, &format!("d/.wh.{}", name(i)), "");
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    let raw = raw_names(&l.m("d"));
    let got = no_repeats(&raw);
    let mut want: BTreeSet<String> = (0..2000)
        .filter(|i| !(1200..1250).contains(i))
        .map(name)
        .collect();
    want.insert(".".into());
    want.insert("..".into());
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(read(&l.m(&format!("d/{}", name(700)))), "0");
    assert_eq!(read(&l.m(&format!("d/{}", name(1100)))), "1");
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}

#[test]
fn s9_readdir_stable_while_changing() {
    let l = Layers::new(2);
    for i in 0..300 {
        l.put(0, &format!("d/a{i:03}"), "a");
        l.put(1, &format!("d/b{i:03}"), "b");
    }
    for i in 0..50 {
        l.put(1, &format!("d/a{i:03}"), "a below");
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    let d = l.m("d");
    let mut initial: BTreeSet<String> = (0..300)
        .flat_map(|i| [format!("a{i:03}"), format!("b{i:03}")])
        .collect();
    initial.insert(".".into());
    initial.insert("..".into());

    let mut dir = RawDir::open(&d);
    // First 150 entries, with the stream position after each.
    let mut first: Vec<String> = Vec::new();
    let mut pos: Vec<libc::c_long> = Vec::new();
    for _ in 0..150 {
        first.push(dir.read_name().expect("at least 150 entries"));
        pos.push(dir.tell());
    }
    // Change the directory while the handle is half read: remove 20 names already read
    // and 50 not read yet, create 200 new ones.
    let read_so_far: BTreeSet<String> = first.iter().cloned().collect();
    let mut removed: BTreeSet<String> = first[..60]
        .iter()
        .filter(|n| *n != "." && *n != "..")
        .take(20)
        .cloned()
        .collect();
    removed.extend(
        initial
            .iter()
            .filter(|n| !read_so_far.contains(*n) && *n != "." && *n != "..")
            .step_by(7)
            .take(50)
            .cloned(),
    );
    assert_eq!(removed.len(), 70);
    for n in &removed {
        fs::remove_file(d.join(n)).unwrap();
    }
    let created: BTreeSet<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    for n in &created {
        fs::write(d.join(n), "c").unwrap();
    }
    let rest = dir.read_rest();
    let all: Vec<String> = first.iter().chain(rest.iter()).cloned().collect();
    let got = no_repeats(&all);
    for n in initial.difference(&removed) {
        assert!(got.contains(n), "'{n}' was skipped");
    }
    for n in &got {
        assert!(
            initial.contains(n) || created.contains(n),
            "'{n}' is not a name of this directory"
        );
    }

    // seekdir to remembered positions replays the same listing.
    let live = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|n| !removed.contains(*n))
            .cloned()
            .collect()
    };
    for k in (0..149).step_by(9) {
        dir.seek(pos[k]);
        let replay = dir.read_rest();
        no_repeats(&replay);
        assert_eq!(
            live(&replay),
            live(&all[k + 1..]),
            "replay after seekdir to the position after entry {k}"
        );
    }
    // A rewound handle lists the directory as it is now.
    dir.rewind();
    let now = dir.read_rest();
    let now = no_repeats(&now);
    let mut want: BTreeSet<String> = initial.difference(&removed).cloned().collect();
    want.extend(created.iter().cloned());
    assert_eq!(now, want);
    drop(dir);
    let mut fresh = raw_names(&d);
    fresh.sort();
    assert_eq!(fresh, want.iter().cloned().collect::<Vec<_>>());
    unmount(m);
    l.assert_lowers_unchanged(&lo);
}
