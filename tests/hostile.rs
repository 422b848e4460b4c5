//! Hostile layers and names (S8, S19): layers holding symlinks out of the layer (absolute,
//! climbing `../../..`, loops), directories flipped to symlinks while the mount is in use,
//! hard links to files outside, device nodes and fifos, names with newlines, invalid UTF-8,
//! 255/256-byte names and paths past 4096 bytes.
//!
//! Every test keeps an `outside` dir next to the layers (sentinel files with known content,
//! modes and mtimes, a hard-link victim, a subdir) and asserts at the end that nothing in
//! it changed and nothing was added, that no read through the mount ever returned outside
//! content, and that the mount still answers. Operations are done without following
//! symlinks on the client side (lchown, lsetxattr, utimensat NOFOLLOW, rename, link,
//! unlink, O_NOFOLLOW): a symlink followed by the *caller's* kernel path walk is not the
//! daemon's doing. Errnos are compared with the same operation on a plain directory laid
//! out like the merged view. Each escape attempt is counted; the totals are printed.
mod common;
use common::*;

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "OUTSIDE-SECRET-CONTENT\n";

/// The dir outside every layer, and a snapshot of it.
struct Outside {
    dir: PathBuf,
    before: Tree,
}

impl Outside {
    fn new(root: &Path) -> Outside {
        let dir = root.join("outside");
        fs::create_dir_all(dir.join("sub")).unwrap();
        for n in [
            "secret",
            "victim",
            "sub/inner",
            "f0",
            "f1",
            "f2",
            "a",
            "b",
            "x",
        ] {
            fs::write(dir.join(n), SECRET).unwrap();
        }
        chmod(&dir.join("secret"), 0o640);
        set_xattr(&dir.join("secret"), "user.k", b"outside").unwrap();
        for n in ["secret", "victim", "sub/inner", "sub", ""] {
            set_times(&dir.join(n), (1_000_000_000, 0), (1_000_000_000, 0)).unwrap();
        }
        let before = snapshot(&dir);
        Outside { dir, before }
    }

    /// `../` enough times to reach `/` from anywhere in a layer, then down to the dir.
    fn climbing(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}{}/{rel}",
            "../".repeat(40),
            self.dir.display().to_string().trim_start_matches('/')
        ))
    }

    #[track_caller]
    fn assert_untouched(&self) {
        assert_same_tree("the outside dir", &self.before, &snapshot(&self.dir));
    }
}

/// Counts escape attempts and collects what went wrong.
#[derive(Default)]
struct Attempts {
    n: AtomicUsize,
}

impl Attempts {
    fn count(&self) {
        self.n.fetch_add(1, Ordering::Relaxed);
    }
    fn total(&self) -> usize {
        self.n.load(Ordering::Relaxed)
    }
}

fn err_of<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => errno(&e),
    }
}

fn lstat(p: &Path) -> io::Result<fs::Metadata> {
    fs::symlink_metadata(p)
}

fn lchown(p: &Path, id: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(id), Some(id))
}

fn open_nofollow(p: &Path, write: bool) -> io::Result<fs::File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// Reads a file through the mount; panics if it ever shows outside content.
fn read_checked(p: &Path) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    open_nofollow(p, false)?.read_to_end(&mut v)?;
    assert!(
        !String::from_utf8_lossy(&v).contains("OUTSIDE-SECRET"),
        "read outside content through {}",
        p.display()
    );
    Ok(v)
}

/// An operation on a dir that returns an errno (0 for success).
type ErrnoOp<'a> = Box<dyn Fn(&Path) -> i32 + 'a>;

/// Every no-follow operation on the entry `name` in the merged dir `dir`, also done on the
/// plain dir `plain` (which has the same entry): the errnos must match. Returns how many
/// operations were tried.
fn same_as_plain(att: &Attempts, mnt_dir: &Path, plain: &Path, name: &OsStr, fresh: &str) -> usize {
    let ops: Vec<(&str, ErrnoOp)> = vec![
        (
            "lstat",
            Box::new(move |d: &Path| err_of(lstat(&d.join(name)))),
        ),
        (
            "stat",
            Box::new(move |d: &Path| err_of(fs::metadata(d.join(name)))),
        ),
        (
            "readlink",
            Box::new(move |d: &Path| err_of(fs::read_link(d.join(name)))),
        ),
        (
            "open O_NOFOLLOW",
            Box::new(move |d: &Path| err_of(open_nofollow(&d.join(name), false))),
        ),
        (
            "open O_NOFOLLOW|O_WRONLY",
            Box::new(move |d: &Path| err_of(open_nofollow(&d.join(name), true))),
        ),
        (
            "lchown",
            Box::new(move |d: &Path| err_of(lchown(&d.join(name), 4321))),
        ),
        (
            "utimensat NOFOLLOW",
            Box::new(move |d: &Path| err_of(set_times(&d.join(name), (7, 0), (8, 0)))),
        ),
        (
            "lsetxattr trusted",
            Box::new(move |d: &Path| err_of(set_xattr(&d.join(name), "trusted.hostile", b"x"))),
        ),
        (
            "lsetxattr user",
            Box::new(move |d: &Path| err_of(set_xattr(&d.join(name), "user.hostile", b"x"))),
        ),
        (
            "link",
            Box::new(move |d: &Path| {
                err_of(fs::hard_link(d.join(name), d.join(format!("{fresh}.link"))))
            }),
        ),
        (
            "mknod over it",
            Box::new(move |d: &Path| err_of(mknod(&d.join(name), libc::S_IFIFO | 0o644, 0, 0))),
        ),
        (
            "mkdir over it",
            Box::new(move |d: &Path| err_of(fs::create_dir(d.join(name)))),
        ),
        (
            "rename",
            Box::new(move |d: &Path| {
                err_of(fs::rename(d.join(name), d.join(format!("{fresh}.moved"))))
            }),
        ),
        (
            "rename back",
            Box::new(move |d: &Path| {
                err_of(fs::rename(d.join(format!("{fresh}.moved")), d.join(name)))
            }),
        ),
        (
            "unlink",
            Box::new(move |d: &Path| err_of(fs::remove_file(d.join(name)))),
        ),
    ];
    for (what, op) in &ops {
        att.count();
        let (a, b) = (op(mnt_dir), op(plain));
        assert_eq!(
            a, b,
            "{what} of {name:?}: errno through the mount ({a}) differs from a plain dir ({b})"
        );
    }
    ops.len()
}

#[test]
fn symlinks_out_of_the_layer_are_objects_never_paths() {
    let att = Attempts::default();
    let l = Layers::new(2);
    let out = Outside::new(l.root());
    let plain = l.root().join("plain");
    fs::create_dir(&plain).unwrap();
    // (name, target): absolute, climbing, loops, a dangling one, a self-dir loop.
    let links: Vec<(&str, PathBuf)> = vec![
        ("abs", out.dir.join("secret")),
        ("absdir", out.dir.clone()),
        ("rel", out.climbing("secret")),
        ("reldir", out.climbing("")),
        ("root", PathBuf::from("/")),
        ("up3", PathBuf::from("../../..")),
        ("loop", PathBuf::from("loop")),
        ("ping", PathBuf::from("pong")),
        ("pong", PathBuf::from("ping")),
        ("dotdot", PathBuf::from("..")),
        ("dangling", out.dir.join("does-not-exist")),
    ];
    for (i, (n, t)) in links.iter().enumerate() {
        l.symlink(i % 2, n, t);
        symlink(t, plain.join(n)).unwrap();
    }
    let lo = l.snap_lowers();
    let m = l.mount("timeout=0");
    // ELOOP as the kernel gives it: following a loop, O_NOFOLLOW on a link.
    for n in ["loop", "ping"] {
        att.count();
        assert_eq!(err_of(fs::metadata(l.m(n))), libc::ELOOP, "stat {n}");
        assert_eq!(err_of(fs::File::open(l.m(n))), libc::ELOOP, "open {n}");
    }
    att.count();
    assert_eq!(err_of(open_nofollow(&l.m("ping"), false)), libc::ELOOP);
    let mut ops = 0;
    for (n, _) in &links {
        ops += same_as_plain(&att, &l.mnt, &plain, OsStr::new(n), &format!("{n}.x"));
    }
    // Fresh links made through the mount, then every operation again on them.
    for (n, t) in &links {
        let name = format!("new_{n}");
        att.count();
        symlink(t, l.m(&name)).unwrap();
        symlink(t, plain.join(&name)).unwrap();
        assert_eq!(fs::read_link(l.m(&name)).unwrap(), *t);
        ops += same_as_plain(
            &att,
            &l.mnt,
            &plain,
            OsStr::new(&name),
            &format!("{name}.x"),
        );
    }
    assert_eq!(
        names(&l.mnt),
        names(&plain),
        "the merged root vs the plain dir"
    );
    assert!(stat_ok(&l.mnt));
    drop(m);
    out.assert_untouched();
    l.assert_lowers_unchanged(&lo);
    // Nothing the daemon wrote points anywhere new: every symlink in the upper has one of
    // the targets given.
    let targets: Vec<PathBuf> = links.iter().map(|(_, t)| t.clone()).collect();
    for (rel, o) in snapshot(&l.upper) {
        if let Some(t) = &o.target {
            assert!(targets.contains(t), "upper/{rel} -> {}", t.display());
        }
    }
    eprintln!(
        "hostile symlink objects: {} escape attempts ({ops} compared with a plain dir)",
        att.total()
    );
}

fn stat_ok(p: &Path) -> bool {
    fs::metadata(p).is_ok()
}

/// Every change the merged view allows inside `dir` (a merged dir whose lower part is a
/// symlink out of the layer): the outside must not see any of it.
fn churn_inside(att: &Attempts, dir: &Path, tag: &str) -> Vec<(String, i32)> {
    let mut results = Vec::new();
    let mut r = |what: &str, e: i32| {
        att.count();
        results.push((format!("{tag}: {what}"), e));
    };
    for n in ["secret", "victim", "x", "sub", "sub/inner"] {
        let p = dir.join(n);
        r(&format!("lstat {n}"), err_of(lstat(&p)));
        r(&format!("read {n}"), err_of(read_checked(&p)));
        r(&format!("write {n}"), err_of(open_nofollow(&p, true)));
        r(
            &format!("chmod {n}"),
            err_of(fs::set_permissions(
                &p,
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )),
        );
        r(&format!("lchown {n}"), err_of(lchown(&p, 4321)));
        r(&format!("truncate {n}"), err_of(truncate(&p, 0)));
        r(
            &format!("utimes {n}"),
            err_of(set_times(&p, (1, 0), (2, 0))),
        );
        r(
            &format!("setxattr {n}"),
            err_of(set_xattr(&p, "user.k", b"pwned")),
        );
        r(
            &format!("removexattr {n}"),
            err_of(remove_xattr(&p, "user.k")),
        );
        r(&format!("unlink {n}"), err_of(fs::remove_file(&p)));
        r(&format!("rmdir {n}"), err_of(fs::remove_dir(&p)));
        r(
            &format!("rename {n}"),
            err_of(fs::rename(&p, dir.join("renamed"))),
        );
        r(
            &format!("link {n}"),
            err_of(fs::hard_link(&p, dir.join("linked"))),
        );
    }
    // New names that exist outside: create, mknod, mkdir, symlink, link and rename onto them.
    let own = dir.join("own");
    r("create own", err_of(fs::write(&own, "own\n")));
    r(
        "create secret",
        err_of(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join("secret")),
        ),
    );
    r(
        "mknod a",
        err_of(mknod(&dir.join("a"), libc::S_IFIFO | 0o600, 0, 0)),
    );
    r(
        "mknod chr b",
        err_of(mknod(&dir.join("b"), libc::S_IFCHR | 0o600, 1, 3)),
    );
    r("mkdir sub", err_of(fs::create_dir(dir.join("sub"))));
    r(
        "mkdir sub/inner",
        err_of(fs::create_dir(dir.join("sub/inner"))),
    );
    r("symlink f0", err_of(symlink("/etc/passwd", dir.join("f0"))));
    r(
        "link own -> f1",
        err_of(fs::hard_link(&own, dir.join("f1"))),
    );
    r("rename own -> f2", err_of(fs::rename(&own, dir.join("f2"))));
    r("read f2", err_of(read_checked(&dir.join("f2"))));
    r("unlink f2", err_of(fs::remove_file(dir.join("f2"))));
    r("setxattr dir", err_of(set_xattr(dir, "user.dir", b"v")));
    r("list", err_of(fs::read_dir(dir).map(|rd| rd.count())));
    results
}

#[test]
fn symlinked_dirs_in_lowers_never_merge() {
    let att = Attempts::default();
    let l = Layers::new(3);
    let out = Outside::new(l.root());
    // A real dir on top; below it, symlinks out of the layer at the same path.
    for (d, i, t) in [
        ("etc", 1, out.dir.clone()),
        ("var", 1, out.climbing("")),
        ("opt", 2, PathBuf::from("../../../../../../../../../..")),
        ("srv", 1, PathBuf::from("srv")),
    ] {
        l.put(0, &format!("{d}/keep"), "keep\n");
        l.symlink(i, d, &t);
    }
    // Deeper: a symlink in the middle of a lower's path, under real dirs above.
    l.put(0, "usr/lib/keep", "keep\n");
    l.mkdir(1, "usr");
    l.symlink(1, "usr/lib", out.climbing(""));
    l.symlink(2, "usr", &out.dir);
    // The upper has a dir whose lower counterpart is a symlink.
    l.mkdir(1, "home");
    l.symlink(2, "home/user", &out.dir);
    fs::create_dir_all(l.up("home/user")).unwrap();
    let lo = l.snap_lowers();
    let m = l.mount("timeout=0");
    for d in ["etc", "var", "opt", "srv", "usr/lib", "home/user"] {
        let dir = l.m(d);
        let before = names(&dir);
        assert!(
            before.iter().all(|n| n == "keep"),
            "{d} shows outside names: {before:?}"
        );
        for (what, e) in churn_inside(&att, &dir, d) {
            assert_ne!(e, libc::EIO, "{what}: EIO");
        }
        assert!(stat_ok(&dir), "{d} still answers");
    }
    assert!(stat_ok(&l.mnt));
    drop(m);
    out.assert_untouched();
    l.assert_lowers_unchanged(&lo);
    eprintln!(
        "hostile symlinked lower dirs: {} escape attempts",
        att.total()
    );
}

/// A thread flips dirs of a lower, of the upper and the workdir's scratch dir to symlinks
/// out of the layer and back, while other threads copy up, create, unlink, rename, link,
/// setxattr and mknod through the mount, and read.
#[test]
fn dirs_flipped_to_symlinks_while_in_use() {
    let att = Arc::new(Attempts::default());
    let l = Layers::new(2);
    let out = Outside::new(l.root());
    for i in 0..3 {
        l.put(0, &format!("rd/f{i}"), &format!("lower rd f{i}\n"));
        l.put(1, &format!("ud/f{i}"), &format!("lower ud f{i}\n"));
    }
    l.put(1, "rd/x", "lower rd x\n");
    fs::create_dir_all(l.up("ud")).unwrap();
    fs::write(l.up("ud/a"), "upper a\n").unwrap();
    let m = l.mount("timeout=0,threads=4");
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    // Flippers: (dir, symlink targets to alternate).
    for (dir, targets) in [
        (l.lower(0, "rd"), vec![out.dir.clone(), out.climbing("")]),
        (l.up("ud"), vec![out.dir.clone(), out.climbing("")]),
        (l.scratch(), vec![out.dir.clone()]),
    ] {
        let (stop, flips) = (stop.clone(), flips.clone());
        handles.push(std::thread::spawn(move || {
            let aside = dir.with_extension("real");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if fs::rename(&dir, &aside).is_ok() {
                    let _ = symlink(&targets[i % targets.len()], &dir);
                    std::thread::sleep(Duration::from_micros(300));
                    let _ = fs::remove_file(&dir);
                    // The daemon may have made a real dir there meanwhile (a copy-up of
                    // the parent): the original goes back over it.
                    if fs::rename(&aside, &dir).is_err() {
                        let _ = fs::remove_dir_all(&dir);
                        let _ = fs::rename(&aside, &dir);
                    }
                    flips.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        }));
    }
    let errors = Arc::new(parking_lot_free::Errs::default());
    for t in 0..3 {
        let (stop, att, mnt, errors) = (stop.clone(), att.clone(), l.mnt.clone(), errors.clone());
        handles.push(std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                for d in ["rd", "ud"] {
                    // The merged dir may be a symlink right now (the flipped one is on
                    // top): open it without following, and work below that fd only, so
                    // that no path walk of ours follows a symlink out.
                    let dfd = match OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
                        .open(mnt.join(d))
                    {
                        Ok(f) => f,
                        Err(e) => {
                            att.count();
                            errors.add("open dir", errno(&e));
                            continue;
                        }
                    };
                    let dir = PathBuf::from(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&dfd)
                    ));
                    let f = dir.join(format!("f{}", k % 3));
                    let n = dir.join(format!("t{t}_{k}"));
                    let rec = |what: &str, e: i32| {
                        att.count();
                        errors.add(what, e);
                    };
                    rec("read", err_of(read_checked(&f)));
                    rec(
                        "copy-up write",
                        err_of(open_nofollow(&f, true).and_then(|mut h| h.write_all(b"w\n"))),
                    );
                    rec(
                        "create",
                        err_of(
                            OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .open(&n)
                                .and_then(|mut h| h.write_all(b"new\n")),
                        ),
                    );
                    rec("setxattr", err_of(set_xattr(&n, "user.t", b"v")));
                    rec("link", err_of(fs::hard_link(&n, n.with_extension("l"))));
                    rec("rename", err_of(fs::rename(&n, n.with_extension("r"))));
                    rec(
                        "mknod",
                        err_of(mknod(&n.with_extension("p"), libc::S_IFIFO | 0o600, 0, 0)),
                    );
                    rec("unlink", err_of(fs::remove_file(n.with_extension("r"))));
                    rec("unlink lower", err_of(fs::remove_file(dir.join("x"))));
                    rec(
                        "chmod",
                        err_of(fs::set_permissions(
                            &f,
                            std::os::unix::fs::PermissionsExt::from_mode(0o600),
                        )),
                    );
                    match fs::read_dir(&dir) {
                        Ok(rd) => {
                            for e in rd.flatten() {
                                let name = e.file_name();
                                assert!(
                                    !["secret", "victim", "sub"]
                                        .contains(&name.to_str().unwrap_or("")),
                                    "{d} lists the outside entry {name:?}"
                                );
                            }
                        }
                        Err(e) => errors.add("list", errno(&e)),
                    }
                }
            }
        }));
    }
    let secs = std::env::var("STRATAFS_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a thread panicked (see above)");
    }
    let started = Instant::now();
    assert!(stat_ok(&l.mnt), "the mount answers after the race");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Layers changed underneath a live mount are undefined territory (overlayfs says so
    // too): errors such as ELOOP, ENOENT or EIO during the race are tolerated. A copy-up
    // that ran while a lower dir was a symlink may have copied that symlink (the layer's
    // content at that moment) into the upper; the merged view then shows a symlink, which
    // only a caller's own path walk would follow. Otherwise, once the flipping stops, the
    // mount works normally again.
    let mut copied_links = 0;
    let after_errors = parking_lot_free::Errs::default();
    for d in ["rd", "ud"] {
        let md = lstat(&l.m(d)).unwrap_or_else(|e| panic!("lstat {d} after the race: {e}"));
        if md.file_type().is_symlink() {
            let t = fs::read_link(l.m(d)).unwrap();
            assert!(
                t == out.dir || t == out.climbing(""),
                "{d} became a symlink to {}",
                t.display()
            );
            copied_links += 1;
            continue;
        }
        assert!(md.is_dir(), "{d} after the race");
        let list = fs::read_dir(l.m(d)).map(|rd| rd.count());
        assert!(list.is_ok(), "list {d} after the race: {list:?}");
        for i in 0..3 {
            let p = l.m(&format!("{d}/f{i}"));
            // The upper was changed under the daemon (dirs replaced, removed): cached
            // dir fds may be stale, so errors are counted, not failed; reads never show
            // outside content (read_checked asserts it).
            after_errors.add("read after", err_of(read_checked(&p)));
            after_errors.add("write after", err_of(fs::write(&p, "after\n")));
        }
        after_errors.add(
            "create after",
            err_of(fs::write(l.m(&format!("{d}/after")), "x")),
        );
    }
    eprintln!(
        "hostile flip race: {copied_links} dirs ended as copied-up symlinks; errors after \
         the race: {:?}",
        after_errors.summary()
    );
    drop(m);
    out.assert_untouched();
    let errs = errors.summary();
    eprintln!(
        "hostile flip race: {} escape attempts during {} flips; errnos seen: {errs:?}",
        att.total(),
        flips.load(Ordering::Relaxed)
    );
}

/// A tiny mutex-protected errno histogram (std only).
mod parking_lot_free {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Errs(Mutex<BTreeMap<(String, i32), usize>>);

    impl Errs {
        pub fn add(&self, what: &str, e: i32) {
            if e != 0 {
                *self
                    .0
                    .lock()
                    .unwrap()
                    .entry((what.to_string(), e))
                    .or_default() += 1;
            }
        }
        pub fn summary(&self) -> Vec<(String, i32, usize)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|((w, e), n)| (w.clone(), *e, *n))
                .collect()
        }
    }
}

#[test]
fn hard_links_to_outside_files_are_copied_never_shared() {
    let att = Attempts::default();
    let l = Layers::new(1);
    let out_dir = l.root().join("outside");
    fs::create_dir(&out_dir).unwrap();
    // Link first, then snapshot: the victims' nlink is 2 (lower + outside) from now on.
    let ops: [&str; 12] = [
        "write",
        "append",
        "truncate",
        "chmod",
        "chown",
        "utimes",
        "setxattr",
        "removexattr",
        "link",
        "rename",
        "unlink",
        "fallocate",
    ];
    for op in ops {
        let v = out_dir.join(format!("victim_{op}"));
        fs::write(&v, SECRET).unwrap();
        set_xattr(&v, "user.k", b"outside").unwrap();
        set_times(&v, (1_000_000_000, 0), (1_000_000_000, 0)).unwrap();
        fs::hard_link(&v, l.lower(0, op)).unwrap();
    }
    let before = snapshot(&out_dir);
    let m = l.mount("");
    for op in ops {
        att.count();
        let p = l.m(op);
        let r = match op {
            "write" => fs::write(&p, "changed\n"),
            "append" => OpenOptions::new()
                .append(true)
                .open(&p)
                .and_then(|mut f| f.write_all(b"more")),
            "truncate" => truncate(&p, 3),
            "chmod" => fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777)),
            "chown" => lchown(&p, 4321),
            "utimes" => set_times(&p, (5, 0), (5, 0)),
            "setxattr" => set_xattr(&p, "user.k", b"changed"),
            "removexattr" => remove_xattr(&p, "user.k"),
            "link" => fs::hard_link(&p, l.m("link2")),
            "rename" => fs::rename(&p, l.m("renamed")),
            "unlink" => fs::remove_file(&p),
            "fallocate" => OpenOptions::new().write(true).open(&p).and_then(|f| {
                // SAFETY: a valid fd for the call.
                let r =
                    unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, 1 << 20) };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }),
            _ => unreachable!(),
        };
        r.unwrap_or_else(|e| panic!("{op} through the mount: {e}"));
    }
    assert_eq!(fs::read_to_string(l.m("write")).unwrap(), "changed\n");
    assert_eq!(fs::read_to_string(l.m("renamed")).unwrap(), SECRET);
    assert_eq!(
        lstat(&l.m("link")).unwrap().nlink(),
        2,
        "link and link2 in the upper"
    );
    drop(m);
    assert_same_tree("the outside victims", &before, &snapshot(&out_dir));
    // The upper copies are their own inodes.
    let victims: Vec<u64> = ops
        .iter()
        .map(|op| lstat(&out_dir.join(format!("victim_{op}"))).unwrap().ino())
        .collect();
    for (rel, o) in snapshot(&l.upper) {
        assert!(
            !victims.contains(&o.ino),
            "upper/{rel} shares an inode with an outside file"
        );
    }
    eprintln!("hostile hard links: {} escape attempts", att.total());
}

#[test]
fn device_nodes_and_fifos_copy_up_as_nodes() {
    let att = Attempts::default();
    let l = Layers::new(1);
    let out = Outside::new(l.root());
    // /dev/zero, /dev/null, /dev/mem-like and a block device, and a fifo nobody writes to:
    // a copy-up that opened any of them would hang or read forever.
    let nodes: [(&str, u32, u32, u32); 5] = [
        ("zero", libc::S_IFCHR, 1, 5),
        ("null", libc::S_IFCHR, 1, 3),
        ("mem", libc::S_IFCHR, 1, 1),
        ("blk", libc::S_IFBLK, 7, 250),
        ("fifo", libc::S_IFIFO, 0, 0),
    ];
    for (n, k, ma, mi) in nodes {
        mknod(&l.lower(0, n), k | 0o640, ma, mi).unwrap();
    }
    let lo = l.snap_lowers();
    let m = l.mount("");
    let started = Instant::now();
    for (n, k, ma, mi) in nodes {
        let p = l.m(n);
        for op in ["chmod", "chown", "utimes", "setxattr", "link", "rename"] {
            att.count();
            let r = match op {
                "chmod" => {
                    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                }
                "chown" => lchown(&p, 4321),
                "utimes" => set_times(&p, (3, 0), (4, 0)),
                "setxattr" => set_xattr(&p, "trusted.k", b"v"),
                "link" => fs::hard_link(&p, l.m(&format!("{n}.link"))),
                _ => fs::rename(&p, l.m(&format!("{n}.moved"))),
            };
            r.unwrap_or_else(|e| panic!("{op} {n}: {e}"));
        }
        let md = lstat(&l.up(&format!("{n}.moved"))).unwrap();
        assert_eq!(md.mode() & libc::S_IFMT, k, "{n}: type in the upper");
        assert_eq!(md.rdev(), libc::makedev(ma, mi), "{n}: rdev in the upper");
        assert_eq!(md.uid(), 4321);
        assert_eq!(md.nlink(), 2);
        // mknod through the mount as root works as on a plain dir.
        att.count();
        mknod(&l.m(&format!("{n}.new")), k | 0o600, ma, mi).unwrap();
        assert_eq!(
            lstat(&l.up(&format!("{n}.new"))).unwrap().rdev(),
            libc::makedev(ma, mi)
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "copy-up of nodes took {:?}",
        started.elapsed()
    );
    // The fifo still works as a fifo through the mount (the kernel serves it).
    let fifo = l.m("fifo.moved");
    assert!(lstat(&fifo).unwrap().file_type().is_fifo());
    att.count();
    assert_eq!(
        err_of(
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
        ),
        libc::ENXIO,
        "a fifo with no reader"
    );
    // Reserved names through mknod are refused (S8).
    att.count();
    assert_eq!(
        err_of(mknod(&l.m(".wh.zero"), libc::S_IFCHR | 0o600, 0, 0)),
        libc::EPERM
    );
    drop(m);
    out.assert_untouched();
    l.assert_lowers_unchanged(&lo);
    eprintln!("hostile nodes: {} escape attempts", att.total());
}

// ------------------------------------------------------------------------------ names

/// Names as bytes, sorted (common::names is lossy for invalid UTF-8).
fn raw_names(dir: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// name bytes -> (mode, mtime, content) of every file of a flat dir (any byte names).
type RawTree = std::collections::BTreeMap<Vec<u8>, (u32, i64, i64, Vec<u8>)>;

fn raw_tree(dir: &Path) -> RawTree {
    use std::os::unix::ffi::OsStrExt;
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let md = lstat(&e.path()).unwrap();
            let data = if md.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.file_name().as_bytes().to_vec(),
                (md.mode(), md.mtime(), md.mtime_nsec(), data),
            )
        })
        .collect()
}

fn suffixed(n: &OsStr, suffix: &str) -> OsString {
    let mut s = n.to_os_string();
    s.push(suffix);
    s
}

fn bytes_name(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// Runs `op` on the mount and on a plain dir; the errnos must match.
#[track_caller]
fn parity(att: &Attempts, what: &str, mnt: &Path, plain: &Path, op: &dyn Fn(&Path) -> i32) {
    att.count();
    let (a, b) = (op(mnt), op(plain));
    assert_eq!(a, b, "{what}: the mount gives errno {a}, a plain dir {b}");
}

#[test]
fn odd_names_behave_as_on_a_plain_dir() {
    let att = Attempts::default();
    let l = Layers::new(1);
    let out = Outside::new(l.root());
    let plain = l.root().join("plain");
    fs::create_dir(&plain).unwrap();
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    let odd: Vec<OsString> = vec![
        bytes_name(b"new\nline"),
        bytes_name(b"\nlead"),
        bytes_name(b"trail\n"),
        bytes_name(b"bad\xff\xfeutf8"),
        bytes_name(b"\xc3\x28"),
        bytes_name(b"tab\tand space "),
        bytes_name(b"back\\slash:colon,comma"),
        bytes_name(b"..."),
        bytes_name(b"-dash"),
        bytes_name(n255.as_bytes()),
        bytes_name(b".wh"),
        bytes_name(b"wh..wh..opq"),
    ];
    // The same names in the lower (and the plain dir), with content.
    for n in &odd {
        fs::write(l.lowers[0].join(n), "lower\n").unwrap();
        fs::write(plain.join(n), "lower\n").unwrap();
    }
    let lo = raw_tree(&l.lowers[0]);
    let m = l.mount("");
    assert_eq!(
        raw_names(&l.mnt),
        raw_names(&plain),
        "listing of odd lower names"
    );
    for n in &odd {
        let what = format!("{n:?}");
        parity(&att, &format!("lstat {what}"), &l.mnt, &plain, &|d| {
            err_of(lstat(&d.join(n)))
        });
        parity(&att, &format!("read {what}"), &l.mnt, &plain, &|d| {
            err_of(read_checked(&d.join(n)))
        });
        parity(&att, &format!("copy-up {what}"), &l.mnt, &plain, &|d| {
            err_of(
                OpenOptions::new()
                    .append(true)
                    .open(d.join(n))
                    .and_then(|mut f| f.write_all(b"x")),
            )
        });
        parity(&att, &format!("setxattr {what}"), &l.mnt, &plain, &|d| {
            err_of(set_xattr(&d.join(n), "user.k", b"v"))
        });
        let mut moved = n.clone();
        moved.push("~");
        if moved.len() <= 255 {
            parity(&att, &format!("rename {what}"), &l.mnt, &plain, &|d| {
                err_of(fs::rename(d.join(n), d.join(&moved)))
            });
            parity(&att, &format!("link {what}"), &l.mnt, &plain, &|d| {
                err_of(fs::hard_link(d.join(&moved), d.join(n)))
            });
            parity(&att, &format!("unlink {what}"), &l.mnt, &plain, &|d| {
                err_of(fs::remove_file(d.join(&moved)))
            });
        }
        // New objects with the odd name, in a fresh dir.
        let sub = format!("sub_{}", att.total());
        fs::create_dir(l.m(&sub)).unwrap();
        fs::create_dir(plain.join(&sub)).unwrap();
        let (ms, ps) = (l.m(&sub), plain.join(&sub));
        parity(&att, &format!("create {what}"), &ms, &ps, &|d| {
            err_of(fs::write(d.join(n), "new"))
        });
        parity(&att, &format!("mkdir {what}/"), &ms, &ps, &|d| {
            err_of(fs::create_dir(d.join(suffixed(n, "~d"))))
        });
        parity(&att, &format!("mknod {what}"), &ms, &ps, &|d| {
            err_of(mknod(
                &d.join(suffixed(n, "~p")),
                libc::S_IFIFO | 0o600,
                0,
                0,
            ))
        });
        parity(&att, &format!("symlink {what}"), &ms, &ps, &|d| {
            err_of(symlink(n, d.join(suffixed(n, "~s"))))
        });
        assert_eq!(raw_names(&ms), raw_names(&ps), "{what}: listing");
    }
    // 256 bytes: ENAMETOOLONG everywhere, as the kernel's own filesystems answer.
    let long = OsString::from(&n256);
    for (what, op) in [
        (
            "lookup",
            Box::new(|d: &Path| err_of(lstat(&d.join(&long)))) as Box<dyn Fn(&Path) -> i32>,
        ),
        (
            "create",
            Box::new(|d: &Path| err_of(fs::write(d.join(&long), "x"))),
        ),
        (
            "mkdir",
            Box::new(|d: &Path| err_of(fs::create_dir(d.join(&long)))),
        ),
        (
            "mknod",
            Box::new(|d: &Path| err_of(mknod(&d.join(&long), libc::S_IFIFO | 0o600, 0, 0))),
        ),
        (
            "symlink",
            Box::new(|d: &Path| err_of(symlink("t", d.join(&long)))),
        ),
        (
            "link",
            Box::new(|d: &Path| err_of(fs::hard_link(d.join("-dash"), d.join(&long)))),
        ),
        (
            "rename",
            Box::new(|d: &Path| err_of(fs::rename(d.join("-dash"), d.join(&long)))),
        ),
        (
            "unlink",
            Box::new(|d: &Path| err_of(fs::remove_file(d.join(&long)))),
        ),
    ] {
        parity(
            &att,
            &format!("{what} of a 256-byte name"),
            &l.mnt,
            &plain,
            &op,
        );
        assert_eq!(op(&l.mnt), libc::ENAMETOOLONG, "{what} of a 256-byte name");
    }
    // Reserved names (S8) and the escape forms of names: EPERM or ENOENT, never a whiteout.
    for n in [".wh.-dash", ".wh..wh..opq", ".wh.nope"] {
        att.count();
        assert_eq!(err_of(fs::write(l.m(n), "x")), libc::EPERM, "create {n}");
        att.count();
        assert_eq!(
            err_of(fs::rename(l.m("-dash"), l.m(n))),
            libc::EPERM,
            "rename to {n}"
        );
        att.count();
        assert_eq!(
            err_of(fs::hard_link(l.m("-dash"), l.m(n))),
            libc::EPERM,
            "link to {n}"
        );
        att.count();
        assert_eq!(err_of(lstat(&l.m(n))), libc::ENOENT, "lookup {n}");
    }
    assert!(lstat(&l.m("-dash")).is_ok(), "-dash is still there");
    for x in [
        "trusted.overlay.opaque",
        "user.overlay.opaque",
        "trusted.overlay.whiteout",
        "user.overlay.whiteout",
    ] {
        att.count();
        assert_eq!(
            err_of(set_xattr(&l.m("-dash"), x, b"y")),
            libc::EPERM,
            "setxattr {x}"
        );
    }
    assert!(
        lstat(&l.m("-dash")).is_ok(),
        "-dash is still there after the xattrs"
    );
    drop(m);
    out.assert_untouched();
    assert_eq!(raw_tree(&l.lowers[0]), lo, "the lower changed");
    eprintln!("hostile names: {} escape attempts", att.total());
}

/// unlink/rmdir/rename of a lower entry whose name is 252..255 bytes long, as a plain dir
/// and kernel overlayfs do it: `.wh.<name>` would pass NAME_MAX, so under the aufs form
/// such a name gets the xattr-form whiteout at the name itself.
#[test]
fn long_lower_names_can_be_removed() {
    let l = Layers::new(1);
    let plain = l.root().join("plain");
    fs::create_dir(&plain).unwrap();
    for len in [251usize, 252, 255] {
        for d in [&l.lowers[0], &plain] {
            fs::write(d.join("f".repeat(len)), "x").unwrap();
            fs::create_dir(d.join("d".repeat(len))).unwrap();
            fs::write(d.join("r".repeat(len)), "x").unwrap();
        }
    }
    let m = l.mount("");
    for len in [251usize, 252, 255] {
        for d in [&l.mnt, &plain] {
            fs::remove_file(d.join("f".repeat(len)))
                .unwrap_or_else(|e| panic!("unlink of a {len}-byte name in {}: {e}", d.display()));
            fs::remove_dir(d.join("d".repeat(len)))
                .unwrap_or_else(|e| panic!("rmdir of a {len}-byte name in {}: {e}", d.display()));
            fs::rename(d.join("r".repeat(len)), d.join("moved"))
                .unwrap_or_else(|e| panic!("rename of a {len}-byte name in {}: {e}", d.display()));
            fs::remove_file(d.join("moved")).unwrap();
        }
    }
    assert!(names(&l.mnt).is_empty(), "{:?}", names(&l.mnt));
    drop(m);
}

// ------------------------------------------------------------------------------ deep paths

/// mkdir + open of `levels` nested 200-byte dirs with *at calls from `base`, then a file;
/// returns (levels reached, errno of the first failure or 0).
fn dig(base: &Path, levels: usize) -> (usize, i32) {
    let comp = std::ffi::CString::new("c".repeat(200)).unwrap();
    // SAFETY: valid C strings; every fd opened here is closed here.
    unsafe {
        let mut fd = libc::open(cpath(base).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(fd >= 0);
        let mut depth = 0;
        let mut err = 0;
        for _ in 0..levels {
            if libc::mkdirat(fd, comp.as_ptr(), 0o755) < 0 && errno_now() != libc::EEXIST {
                err = errno_now();
                break;
            }
            let n = libc::openat(fd, comp.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if n < 0 {
                err = errno_now();
                break;
            }
            libc::close(fd);
            fd = n;
            depth += 1;
        }
        if err == 0 {
            let f = libc::openat(fd, c"leaf".as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if f < 0 {
                err = errno_now();
            } else {
                libc::close(f);
            }
        }
        libc::close(fd);
        (depth, err)
    }
}

fn errno_now() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Paths of 4096 bytes and more: the mount answers ENAMETOOLONG (never EIO, never a crash)
/// where it cannot go, and nothing lands outside.
#[test]
fn paths_past_path_max_fail_cleanly() {
    let att = Attempts::default();
    let l = Layers::new(1);
    let out = Outside::new(l.root());
    // A lower tree deeper than PATH_MAX, made with *at calls.
    let (d, e) = dig(&l.lowers[0], 25);
    assert_eq!((d, e), (25, 0), "a plain dir takes 25 levels of 201 bytes");
    let m = l.mount("");
    // A whole path over 4096 bytes in one string: the caller's kernel refuses it.
    let long_path = l.mnt.join(format!("{}/x", "c".repeat(200)).repeat(21));
    att.count();
    assert_eq!(err_of(lstat(&long_path)), libc::ENAMETOOLONG);
    // Walking down with *at calls: in the lower tree (read) and a new tree (create).
    let (rd, re) = dig(&l.mnt, 25);
    att.count();
    let (nd, ne) = {
        fs::create_dir(l.m("new")).unwrap();
        dig(&l.m("new"), 25)
    };
    att.count();
    for (what, depth, e) in [("lower tree", rd, re), ("new tree", nd, ne)] {
        assert!(
            e == 0 || e == libc::ENAMETOOLONG,
            "{what}: errno {e} at depth {depth} (want 0 or ENAMETOOLONG)"
        );
        eprintln!("deep {what}: reached depth {depth} of 25, errno {e}");
    }
    assert!(stat_ok(&l.mnt));
    drop(m);
    out.assert_untouched();
    eprintln!("hostile deep paths: {} escape attempts", att.total());
}

/// The same walk must get as deep as on a plain dir (kernel overlayfs does): layer paths
/// past PATH_MAX are walked in pieces.
#[test]
fn paths_past_path_max_work_as_on_a_plain_dir() {
    let l = Layers::new(1);
    assert_eq!(dig(&l.lowers[0], 25), (25, 0));
    let m = l.mount("");
    assert_eq!(dig(&l.mnt, 25), (25, 0), "the lower tree through the mount");
    fs::create_dir(l.m("new")).unwrap();
    assert_eq!(
        dig(&l.m("new"), 25),
        (25, 0),
        "a new tree through the mount"
    );
    drop(m);
}
