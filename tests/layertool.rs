//! The layer tools through the real binary: `diff` on hand-made uppers, `commit` (digest
//! determinism, independent readers: Python's tarfile and GNU tar), `import` (refusals,
//! both whiteout forms), the commit -> import round trip, and `init-layer`. No mounts.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

mod common;
use common::{chmod, cpath, mknod, names, run_stratafs, set_xattr, stratafs_ok, Layers, Mount};

// ---------------------------------------------------------------------------------------
// Helpers

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn stratafs<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let out = run_stratafs(args);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The arguments `SUBCOMMAND PATH... EXTRA...`.
fn tool_args<'a>(subcommand: &'a str, paths: &[&'a Path], extra: &[&'a str]) -> Vec<&'a OsStr> {
    let mut args = vec![OsStr::new(subcommand)];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    args.extend(extra.iter().map(|e| OsStr::new(*e)));
    args
}

/// `stratafs SUBCOMMAND PATH... EXTRA...`.
fn tool_run(subcommand: &str, paths: &[&Path], extra: &[&str]) -> Run {
    stratafs(&tool_args(subcommand, paths, extra))
}

/// `stratafs import TAR DIR EXTRA...`, which must succeed.
fn import(tar: &Path, dir: &Path, extra: &[&str]) -> String {
    stratafs_ok(&tool_args("import", &[tar, dir], extra))
}

/// `stratafs diff UPPER EXTRA...`, which must succeed.
fn diff(upper: &Path, extra: &[&str]) -> String {
    stratafs_ok(&tool_args("diff", &[upper], extra))
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stratafs-layertool.")
        .tempdir()
        .expect("tempdir")
}

fn put(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap();
}

fn check(r: libc::c_int, what: &str, p: &Path) {
    assert!(
        r == 0,
        "{what} {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: buffer valid for its length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0, "lgetxattr {}", p.display());
        v.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

/// Sets atime and/or mtime (None leaves it) without following a symlink.
fn set_times(p: &Path, atime: Option<(i64, i64)>, mtime: Option<(i64, i64)>) {
    let ts = |t: Option<(i64, i64)>| match t {
        Some((s, ns)) => libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    };
    let c = cpath(p);
    let times = [ts(atime), ts(mtime)];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r, "utimensat", p);
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Everything the round trip must keep of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
    rdev: Option<(u32, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// For hard-linked objects: every path sharing the inode, sorted.
    same_inode: Vec<Vec<u8>>,
}

/// A snapshot of every entry under `root` (not the root itself), keyed by relative path.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, PathBuf)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.push((rel, p.clone()));
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, root, &mut paths);
    let mut by_inode: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for (rel, p) in &paths {
        let md = fs::symlink_metadata(p).unwrap();
        if !md.is_dir() && md.nlink() > 1 {
            by_inode.entry(md.ino()).or_default().push(rel.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (rel, p) in paths {
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut same_inode = by_inode.get(&md.ino()).cloned().unwrap_or_default();
        same_inode.sort();
        let is_dev = ft.is_char_device() || ft.is_block_device();
        out.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                content: ft.is_file().then(|| fs::read(&p).unwrap()),
                target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                rdev: is_dev.then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
                xattrs: xattrs(&p)
                    .into_iter()
                    .filter(|(k, _)| !stratafs::private_xattrs::is_private(OsStr::new(k)))
                    .collect(),
                same_inode,
            },
        );
    }
    out
}

/// A ustar entry with its name written verbatim (so that bad names can be made).
fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish_tar(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

// ---------------------------------------------------------------------------------------
// diff

/// Lowers l0 (top) and l1, and an upper with every form of whiteout and opaque dir.
fn diff_fixture(root: &Path) -> (PathBuf, String) {
    let (l0, l1, u) = (root.join("l0"), root.join("l1"), root.join("upper"));
    for rel in [
        "a/f",
        "a/sub/g",
        "keep/k",
        "p",
        "z",
        "dir2/deep/file",
        "etc/hosts",
    ] {
        put(&l1.join(rel), b"lower1");
    }
    put(&l0.join(".wh.z"), b""); // l0 hides l1's z
    put(&l0.join("q"), b"lower0");
    put(&l0.join("dir2/top"), b"lower0");

    put(&u.join(".wh.p"), b""); // aufs whiteout of a lower file
    mknod(&u.join("q"), libc::S_IFCHR | 0o600, 0, 0).unwrap(); // overlay whiteout
    put(&u.join(".wh.z"), b""); // hides what l0 already hid
    put(&u.join(".wh.never"), b""); // hides nothing
    put(&u.join("a/.wh..wh..opq"), b""); // aufs opaque dir
    put(&u.join("a/n"), b"new");
    mkdir(&u.join("dir2/deep"));
    set_xattr(&u.join("dir2"), "trusted.overlay.opaque", b"y").unwrap(); // overlay opaque dir
    put(&u.join("dir2/deep/new"), b"new");
    put(&u.join("newdir/f"), b"new");
    put(&u.join("keep/k"), b"changed");
    put(&u.join("etc/hosts"), b"init file: never listed");
    put(&u.join("etc/.wh.resolv.conf"), b"");
    let lowers = format!("{}:{}", l0.display(), l1.display());
    (u, lowers)
}

#[test]
fn diff_with_lowers_tells_added_from_changed_and_lists_what_opaque_dirs_hide() {
    let t = tmpdir();
    let (u, lowers) = diff_fixture(t.path());
    let out = diff(&u, &["--lowerdir", &lowers]);
    assert_eq!(
        out,
        "C /a\nD /a/f\nA /a/n\nD /a/sub\n\
         C /dir2\nC /dir2/deep\nD /dir2/deep/file\nA /dir2/deep/new\nD /dir2/top\n\
         C /etc\nC /keep\nC /keep/k\nA /newdir\nA /newdir/f\nD /p\nD /q\n"
    );
}

#[test]
fn diff_without_lowers_follows_the_documented_rule() {
    let t = tmpdir();
    let (u, _) = diff_fixture(t.path());
    let out = diff(&u, &[]);
    // Whiteouts are D, directories C, everything else A; init files never listed.
    assert_eq!(
        out,
        "C /a\nA /a/n\nC /dir2\nC /dir2/deep\nA /dir2/deep/new\nC /etc\nC /keep\nA /keep/k\n\
         D /never\nC /newdir\nA /newdir/f\nD /p\nD /q\nD /z\n"
    );
}

#[test]
fn diff_under_aufs_form_takes_char00_for_a_device() {
    let t = tmpdir();
    let (u, lowers) = diff_fixture(t.path());
    let out = diff(&u, &["--lowerdir", &lowers, "--whiteout=aufs"]);
    // q is now a device node replacing l0's q.
    assert!(out.contains("C /q\n"), "{out}");
    assert!(!out.contains("D /q"), "{out}");
}

/// diff --lowerdir merges the lowers as a mount of them does (one implementation of S4-S6):
/// here an opaque marker at the root of the top lower hides the lower below it.
#[test]
fn diff_merges_the_lowers_as_the_mount_does() {
    let l = Layers::new(2);
    l.put(0, ".wh..wh..opq", "");
    l.put(0, "a", "a\n");
    l.put(1, "b", "b\n");
    l.put_upper(".wh.a", "");
    l.put_upper(".wh.b", "");
    let opts = l.lowers_only_opts();
    let shown = {
        let _m = Mount::new(&opts, &l.mnt);
        names(&l.mnt)
    };
    assert_eq!(shown, ["a"], "the mount of the lowers");
    let lowers = opts.strip_prefix("lowerdir=").unwrap();
    assert_eq!(diff(&l.upper, &["--lowerdir", lowers]), "D /a\n");
}

#[test]
fn diff_refuses_a_missing_upper_with_one_line() {
    let t = tmpdir();
    let r = tool_run("diff", &[&t.path().join("nope")], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("stratafs diff: cannot open upper dir"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// commit

/// An upper with every kind of entry (aufs whiteout form, so that the round trip gives
/// the very same tree back).
fn rich_upper(u: &Path) {
    mkdir(&u.join("d/ro"));
    put(&u.join("d/file"), b"hello\n");
    put(&u.join("d/ro/inside"), b"in a read-only dir");
    lchown(&u.join("d"), 1000, 1001);
    lchown(&u.join("d/file"), 1000, 1001);
    set_xattr(&u.join("d/file"), "user.color", b"blue").unwrap();
    set_xattr(&u.join("d/file"), "trusted.note", b"\x00\x01binary").unwrap();
    set_xattr(&u.join("d/file"), "user.overlay.secret", b"private").unwrap();
    set_xattr(&u.join("d"), "user.dirattr", b"yes").unwrap();
    chmod(&u.join("d/file"), 0o4755);
    chmod(&u.join("d"), 0o750);
    put(&u.join("empty"), b"");
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    put(&u.join("blob"), &blob);
    symlink("d/file", u.join("link")).unwrap();
    symlink("t".repeat(150), u.join("longlink")).unwrap();
    let long = format!(
        "long/{}/{}/{}",
        "n".repeat(60),
        "m".repeat(60),
        "f".repeat(90)
    );
    put(&u.join(&long), b"long path");
    put(&u.join("hl1"), b"shared inode");
    fs::hard_link(u.join("hl1"), u.join("d/hl2")).unwrap();
    fs::hard_link(u.join("hl1"), u.join("hl3")).unwrap();
    mknod(&u.join("chr"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    mknod(&u.join("blk"), libc::S_IFBLK | 0o660, 7, 0).unwrap();
    mknod(&u.join("fifo"), libc::S_IFIFO | 0o644, 0, 0).unwrap();
    put(&u.join("ünïcødé name"), b"utf-8");
    put(&u.join(OsStr::from_bytes(b"raw\xffbyte")), b"not utf-8");
    put(&u.join(".wh.gone"), b"");
    put(&u.join("opq/.wh..wh..opq"), b"");
    put(&u.join("opq/kept"), b"kept");
    set_times(&u.join("empty"), None, Some((1_000_000_000, 123_456_789)));
    set_times(&u.join("link"), None, Some((1_100_000_000, 0)));
    chmod(&u.join("d/ro"), 0o555);
}

fn commit(u: &Path, out: &Path, gzip: bool) -> String {
    let out_arg = format!("--output={}", out.to_str().unwrap());
    let mut extra = vec![out_arg.as_str()];
    if gzip {
        extra.push("--gzip");
    }
    let printed = stratafs_ok(&tool_args("commit", &[u], &extra));
    let digest = printed.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{printed}");
    assert_eq!(
        digest,
        format!("sha256:{}", sha256_hex(&fs::read(out).unwrap()))
    );
    digest
}

#[test]
fn commit_is_deterministic_and_ignores_atimes() {
    let t = tmpdir();
    let u = t.path().join("upper");
    rich_upper(&u);
    for gzip in [false, true] {
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        let da = commit(&u, &a, gzip);
        let db = commit(&u, &b, gzip);
        assert_eq!(da, db);
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        // Reading files and setting atimes changes nothing.
        let _ = fs::read(u.join("d/file")).unwrap();
        set_times(&u.join("blob"), Some((5, 5)), None);
        set_times(&u.join("d"), Some((7, 0)), None);
        assert_eq!(commit(&u, &c, gzip), da);
        for p in [a, b, c] {
            fs::remove_file(p).unwrap();
        }
    }
    // Nothing but the outputs was written beside them.
    assert_eq!(names(t.path()), vec!["upper"]);
}

#[test]
fn commit_same_tree_elsewhere_gives_same_digest() {
    // Other inode numbers and another directory order: the bytes do not change.
    let t = tmpdir();
    let (u1, u2) = (t.path().join("u1"), t.path().join("u2"));
    for (u, order) in [(&u1, ["b", "a", "c"]), (&u2, ["c", "a", "b"])] {
        for n in order {
            put(&u.join("dir").join(n), n.as_bytes());
        }
        fs::hard_link(u.join("dir/a"), u.join("a-link")).unwrap();
        for n in ["dir/a", "dir/b", "dir/c", "dir", "a-link"] {
            set_times(&u.join(n), None, Some((1_500_000_000, 42)));
        }
    }
    let d1 = commit(&u1, &t.path().join("1.tar"), false);
    let d2 = commit(&u2, &t.path().join("2.tar"), false);
    assert_eq!(d1, d2);
}

#[test]
fn commit_gzip_header_is_fixed() {
    let t = tmpdir();
    let u = t.path().join("upper");
    put(&u.join("f"), b"x");
    let out = t.path().join("l.tar.gz");
    commit(&u, &out, true);
    let b = fs::read(&out).unwrap();
    assert_eq!(&b[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(b[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
    assert_eq!(&b[4..8], &[0, 0, 0, 0], "mtime 0");
    assert_eq!(b[9], 255, "OS unknown");
}

#[test]
fn commit_output_is_read_by_python_tarfile_and_gnu_tar() {
    let t = tmpdir();
    let u = t.path().join("upper");
    rich_upper(&u);
    mknod(&u.join("ovl-wh"), libc::S_IFCHR | 0o644, 0, 0).unwrap();
    mkdir(&u.join("ovl-opq"));
    set_xattr(&u.join("ovl-opq"), "trusted.overlay.opaque", b"y").unwrap();
    put(&u.join("etc/hosts"), b"init layer file");
    let tarfile = t.path().join("layer.tar");
    commit(&u, &tarfile, false);

    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        xs = sorted(k[len("SCHILY.xattr."):] for k in m.pax_headers if k.startswith("SCHILY.xattr."))
        print("%s\t%s\t%d\t%o\t%s\t%s" % (m.name, m.type.decode(), m.size, m.mode, m.linkname, ",".join(xs)))
"#;
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&tarfile)
        .output()
        .expect("python3 is needed for this test");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let listing = String::from_utf8_lossy(&py.stdout).into_owned();
    let rows: BTreeMap<String, Vec<String>> = listing
        .lines()
        .map(|l| {
            let cols: Vec<String> = l.split('\t').map(String::from).collect();
            (cols[0].clone(), cols)
        })
        .collect();
    for name in rows.keys() {
        assert!(!name.starts_with('/'), "absolute name {name}");
    }
    // Whiteouts (both forms) and opaque markers are empty regular files.
    for wh in [
        ".wh.gone",
        ".wh.ovl-wh",
        "opq/.wh..wh..opq",
        "ovl-opq/.wh..wh..opq",
    ] {
        let row = rows
            .get(wh)
            .unwrap_or_else(|| panic!("{wh} missing:\n{listing}"));
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            ("0", "0"),
            "{wh}: {row:?}"
        );
    }
    assert!(!rows.contains_key("ovl-wh"));
    // xattrs ride in PAX headers; the union's private ones do not.
    assert_eq!(rows["d/file"][5], "trusted.note,user.color");
    assert_eq!(rows["d/file"][3], "4755");
    assert_eq!(rows["d"][5], "user.dirattr");
    assert_eq!(rows["ovl-opq"][5], "");
    // Kinds: symlink, hard links, devices, fifo, long names via PAX.
    assert_eq!(rows["link"][1], "2");
    assert_eq!(rows["link"][4], "d/file");
    assert_eq!(rows["longlink"][4], "t".repeat(150));
    let hard: Vec<&Vec<String>> = ["d/hl2", "hl1", "hl3"].iter().map(|n| &rows[*n]).collect();
    assert_eq!(
        hard[0][1], "0",
        "first occurrence in path order carries the data"
    );
    assert_eq!((hard[1][1].as_str(), hard[1][4].as_str()), ("1", "d/hl2"));
    assert_eq!((hard[2][1].as_str(), hard[2][4].as_str()), ("1", "d/hl2"));
    assert_eq!(rows["chr"][1], "3");
    assert_eq!(rows["blk"][1], "4");
    assert_eq!(rows["fifo"][1], "6");
    let long = format!(
        "long/{}/{}/{}",
        "n".repeat(60),
        "m".repeat(60),
        "f".repeat(90)
    );
    assert_eq!(rows[&long][1], "0");
    // Init-layer files are never shipped.
    assert!(!rows.contains_key("etc/hosts"), "{listing}");

    let gnu = Command::new("tar")
        .arg("-tvf")
        .arg(&tarfile)
        .output()
        .unwrap();
    assert!(
        gnu.status.success(),
        "{}",
        String::from_utf8_lossy(&gnu.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&gnu.stderr), "");
    let gnu_list = String::from_utf8_lossy(&gnu.stdout);
    assert!(gnu_list.contains(".wh.gone"), "{gnu_list}");
    assert!(gnu_list.contains(&long), "{gnu_list}");
    assert!(
        gnu_list
            .lines()
            .any(|l| l.starts_with("hrw") && l.contains("hl3 link to d/hl2")),
        "{gnu_list}"
    );
}

// ---------------------------------------------------------------------------------------
// import

/// Imports `tar_bytes` into `t/layer` and expects a refusal with exactly `message`,
/// leaving nothing behind.
fn expect_refusal(tar_bytes: Vec<u8>, message: &str) {
    let t = tmpdir();
    let tarfile = t.path().join("bad.tar");
    fs::write(&tarfile, finish_tar(tar_bytes)).unwrap();
    let dir = t.path().join("layer");
    let r = tool_run("import", &[&tarfile, &dir], &[]);
    assert_eq!(r.code, 1, "stdout {} stderr {}", r.stdout, r.stderr);
    assert_eq!(r.stderr, format!("stratafs import: {message}\n"));
    assert_eq!(
        names(t.path()),
        vec!["bad.tar"],
        "something was left behind"
    );
}

#[test]
fn import_refuses_absolute_paths() {
    let mut t = Vec::new();
    raw_entry(&mut t, b"ok.txt", tar::EntryType::Regular, b"", b"fine");
    raw_entry(
        &mut t,
        b"/tmp/stratafs-evil",
        tar::EntryType::Regular,
        b"",
        b"evil",
    );
    expect_refusal(t, "refusing entry '/tmp/stratafs-evil': absolute path");
    assert!(!Path::new("/tmp/stratafs-evil").exists());
}

#[test]
fn import_refuses_parent_components() {
    let mut t = Vec::new();
    raw_entry(&mut t, b"a/", tar::EntryType::Directory, b"", b"");
    raw_entry(
        &mut t,
        b"a/../../evil",
        tar::EntryType::Regular,
        b"",
        b"evil",
    );
    expect_refusal(
        t,
        "refusing entry 'a/../../evil': path has a '..' component",
    );
}

#[test]
fn import_refuses_a_path_through_a_symlink_unpacked_earlier() {
    let outside = tmpdir();
    let mut t = Vec::new();
    raw_entry(
        &mut t,
        b"lnk",
        tar::EntryType::Symlink,
        outside.path().as_os_str().as_bytes(),
        b"",
    );
    raw_entry(&mut t, b"lnk/evil", tar::EntryType::Regular, b"", b"evil");
    expect_refusal(
        t,
        "refusing entry 'lnk/evil': path goes through symlink 'lnk'",
    );
    assert!(names(outside.path()).is_empty());

    // The same through a relative symlink deeper down.
    let mut t = Vec::new();
    raw_entry(&mut t, b"d/", tar::EntryType::Directory, b"", b"");
    raw_entry(&mut t, b"d/up", tar::EntryType::Symlink, b"../..", b"");
    raw_entry(
        &mut t,
        b"d/up/x/evil",
        tar::EntryType::Regular,
        b"",
        b"evil",
    );
    expect_refusal(
        t,
        "refusing entry 'd/up/x/evil': path goes through symlink 'd/up'",
    );
}

#[test]
fn import_refuses_hard_links_to_outside_or_missing_entries() {
    for (target, why) in [
        (
            &b"/etc/passwd"[..],
            "hard link target '/etc/passwd' is outside the layer",
        ),
        (
            b"../outside",
            "hard link target '../outside' is outside the layer",
        ),
        (b"nope", "hard link target 'nope' does not exist"),
        (
            b"lnk/passwd",
            "hard link target 'lnk/passwd' goes through symlink 'lnk'",
        ),
    ] {
        let mut t = Vec::new();
        raw_entry(&mut t, b"lnk", tar::EntryType::Symlink, b"/etc", b"");
        raw_entry(&mut t, b"h", tar::EntryType::Link, target, b"");
        expect_refusal(t, &format!("refusing entry 'h': {why}"));
    }
}

#[test]
fn import_failure_keeps_an_empty_target_dir_empty() {
    let t = tmpdir();
    let mut bytes = Vec::new();
    raw_entry(&mut bytes, b"a", tar::EntryType::Regular, b"", b"a");
    raw_entry(&mut bytes, b"../b", tar::EntryType::Regular, b"", b"b");
    let tarfile = t.path().join("bad.tar");
    fs::write(&tarfile, finish_tar(bytes)).unwrap();
    let dir = t.path().join("layer");
    mkdir(&dir);
    let r = tool_run("import", &[&tarfile, &dir], &[]);
    assert_eq!(r.code, 1);
    assert!(names(&dir).is_empty());
    assert_eq!(names(t.path()), vec!["bad.tar", "layer"]);
}

#[test]
fn import_refuses_a_non_empty_target() {
    let t = tmpdir();
    let dir = t.path().join("layer");
    put(&dir.join("x"), b"");
    let tarfile = t.path().join("l.tar");
    fs::write(&tarfile, finish_tar(Vec::new())).unwrap();
    let r = tool_run("import", &[&tarfile, &dir], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!(
            "stratafs import: '{}' exists and is not empty\n",
            dir.display()
        )
    );
}

fn whiteout_tar() -> Vec<u8> {
    let mut t = Vec::new();
    raw_entry(&mut t, b".wh.gone", tar::EntryType::Regular, b"", b"");
    raw_entry(&mut t, b"d/", tar::EntryType::Directory, b"", b"");
    raw_entry(&mut t, b"d/.wh..wh..opq", tar::EntryType::Regular, b"", b"");
    raw_entry(&mut t, b"d/f", tar::EntryType::Regular, b"", b"f");
    // A whiteout and a directory of the same name in one layer: the dir hides the lowers'.
    raw_entry(&mut t, b".wh.x", tar::EntryType::Regular, b"", b"");
    raw_entry(&mut t, b"x/", tar::EntryType::Directory, b"", b"");
    raw_entry(&mut t, b"x/kept", tar::EntryType::Regular, b"", b"k");
    finish_tar(t)
}

#[test]
fn import_writes_aufs_whiteouts_by_default() {
    let t = tmpdir();
    let tarfile = t.path().join("l.tar");
    fs::write(&tarfile, whiteout_tar()).unwrap();
    let dir = t.path().join("layer");
    import(&tarfile, &dir, &[]);
    assert_eq!(names(&dir), vec![".wh.gone", ".wh.x", "d", "x"]);
    assert_eq!(names(&dir.join("d")), vec![".wh..wh..opq", "f"]);
    assert!(fs::symlink_metadata(dir.join(".wh.gone"))
        .unwrap()
        .is_file());
    assert!(xattrs(&dir.join("d")).is_empty());
}

#[test]
fn import_writes_overlay_whiteouts_on_request() {
    let t = tmpdir();
    let tarfile = t.path().join("l.tar");
    fs::write(&tarfile, whiteout_tar()).unwrap();
    let dir = t.path().join("layer");
    import(&tarfile, &dir, &["--whiteout=overlay"]);
    assert_eq!(names(&dir), vec!["d", "gone", "x"]);
    assert_eq!(names(&dir.join("d")), vec!["f"]);
    let gone = fs::symlink_metadata(dir.join("gone")).unwrap();
    assert_eq!(gone.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(gone.rdev(), 0);
    assert_eq!(
        xattrs(&dir.join("d")).get("trusted.overlay.opaque"),
        Some(&b"y".to_vec())
    );
    assert_eq!(
        xattrs(&dir.join("x")).get("trusted.overlay.opaque"),
        Some(&b"y".to_vec())
    );
    assert_eq!(names(&dir.join("x")), vec!["kept"]);
}

// ---------------------------------------------------------------------------------------
// round trip

#[test]
fn commit_then_import_gives_the_identical_tree() {
    for gzip in [false, true] {
        let t = tmpdir();
        let u = t.path().join("upper");
        rich_upper(&u);
        let tarfile = t.path().join(if gzip { "l.tar.gz" } else { "l.tar" });
        commit(&u, &tarfile, gzip);
        let dir = t.path().join("imported");
        import(&tarfile, &dir, &[]);

        let before = snapshot(&u);
        let after = snapshot(&dir);
        let names = |m: &BTreeMap<Vec<u8>, Entry>| -> Vec<String> {
            m.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(names(&before), names(&after));
        for (path, entry) in &before {
            assert_eq!(
                Some(entry),
                after.get(path),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        // Hard links share one inode again.
        let ino = |p: &str| fs::metadata(dir.join(p)).unwrap().ino();
        assert_eq!(ino("hl1"), ino("d/hl2"));
        assert_eq!(ino("hl1"), ino("hl3"));
        // And the private xattr stayed behind.
        assert!(!xattrs(&dir.join("d/file")).contains_key("user.overlay.secret"));
        chmod(&u.join("d/ro"), 0o755);
        chmod(&dir.join("d/ro"), 0o755);
    }
}

#[test]
fn import_of_the_overlay_forms_round_trips_to_overlay_forms() {
    let t = tmpdir();
    let u = t.path().join("upper");
    mkdir(&u);
    mknod(&u.join("gone"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    put(&u.join("opq/kept"), b"kept");
    set_xattr(&u.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    let tarfile = t.path().join("l.tar");
    commit(&u, &tarfile, false);
    let dir = t.path().join("imported");
    import(&tarfile, &dir, &["--whiteout=overlay"]);
    assert_eq!(names(&dir), vec!["gone", "opq"]);
    assert_eq!(names(&dir.join("opq")), vec!["kept"]);
    assert_eq!(fs::symlink_metadata(dir.join("gone")).unwrap().rdev(), 0);
    assert_eq!(
        xattrs(&dir.join("opq")).get("trusted.overlay.opaque"),
        Some(&b"y".to_vec())
    );
    // Both uppers tell the same story.
    let d1 = diff(&u, &[]);
    let d2 = diff(&dir, &[]);
    assert_eq!(d1, d2);
}

// ---------------------------------------------------------------------------------------
// init-layer

#[test]
fn init_layer_writes_hosts_hostname_and_resolv_conf() {
    let t = tmpdir();
    let dir = t.path().join("init");
    stratafs_ok(&[
        "init-layer",
        dir.to_str().unwrap(),
        "--hostname",
        "web",
        "--add-host",
        "db:10.0.0.2",
        "--add-host",
        "v6:2001:db8::5",
        "--dns",
        "1.1.1.1",
        "--dns",
        "2606:4700::1111",
        "--dns-search",
        "example.com",
    ]);
    assert_eq!(
        fs::read_to_string(dir.join("etc/hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         127.0.1.1\tweb\n10.0.0.2\tdb\n2001:db8::5\tv6\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("etc/hostname")).unwrap(),
        "web\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("etc/resolv.conf")).unwrap(),
        "nameserver 1.1.1.1\nnameserver 2606:4700::1111\nsearch example.com\n"
    );
    assert_eq!(
        names(&dir.join("etc")),
        vec!["hostname", "hosts", "resolv.conf"]
    );
    let mode = fs::metadata(dir.join("etc/hosts")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // Run again without a hostname: the files are replaced.
    stratafs_ok(&["init-layer", dir.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(dir.join("etc/hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    // An init layer is what diff and commit leave out.
    let d = diff(&dir, &[]);
    assert_eq!(d, "C /etc\n");
}

#[test]
fn init_layer_refuses_bad_addresses_with_one_line() {
    let t = tmpdir();
    let dir = t.path().join("init");
    for (args, message) in [
        (
            vec!["--add-host", "db:300.1.2.3"],
            "--add-host 'db:300.1.2.3': '300.1.2.3' is not an IPv4 or IPv6 address",
        ),
        (
            vec!["--dns", "fe80::1::2"],
            "--dns 'fe80::1::2' is not an IPv4 or IPv6 address",
        ),
        (
            vec!["--add-host", "nocolon"],
            "--add-host 'nocolon' is not of the form NAME:IP",
        ),
        (
            vec!["--hostname", "bad name"],
            "--hostname 'bad name' is not a valid hostname",
        ),
    ] {
        let mut all = vec!["init-layer", dir.to_str().unwrap()];
        all.extend(args);
        let r = stratafs(&all);
        assert_eq!(r.code, 1);
        assert_eq!(r.stderr, format!("stratafs init-layer: {message}\n"));
        assert!(!dir.exists(), "nothing is written on a refusal");
    }
}

#[test]
fn init_layer_does_not_write_through_a_symlinked_etc() {
    let t = tmpdir();
    let dir = t.path().join("init");
    let elsewhere = t.path().join("elsewhere");
    mkdir(&dir);
    mkdir(&elsewhere);
    symlink(&elsewhere, dir.join("etc")).unwrap();
    let r = stratafs(&["init-layer", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("stratafs init-layer: cannot open"),
        "{}",
        r.stderr
    );
    assert!(names(&elsewhere).is_empty());
}

#[test]
fn layer_tools_answer_help_and_bad_flags() {
    let r = stratafs(&["commit", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--gzip"));
    let r = stratafs(&["import", "a.tar", "dir", "--whiteout=bogus"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("stratafs import: "), "{}", r.stderr);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"not a tar at all, just some text that is longer than nothing")
        .unwrap();
    let t = tmpdir();
    let r = tool_run("import", &[f.path(), &t.path().join("x")], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn commit_into_the_upper_leaves_its_own_output_out() {
    let t = tmpdir();
    let u = t.path().join("upper");
    put(&u.join("f"), b"x");
    let out = u.join("layer.tar");
    commit(&u, &out, false);
    let mut archive = tar::Archive::new(fs::File::open(&out).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["f"]);
    assert_eq!(common::names(&u), vec!["f", "layer.tar"]);
}

#[test]
fn import_lets_a_later_entry_replace_an_earlier_one() {
    let t = tmpdir();
    let mut bytes = Vec::new();
    raw_entry(&mut bytes, b"a/", tar::EntryType::Directory, b"", b"");
    raw_entry(
        &mut bytes,
        b"a/inner",
        tar::EntryType::Regular,
        b"",
        b"inner",
    );
    raw_entry(
        &mut bytes,
        b"a",
        tar::EntryType::Regular,
        b"",
        b"now a file",
    );
    raw_entry(&mut bytes, b"s", tar::EntryType::Symlink, b"/etc", b"");
    raw_entry(&mut bytes, b"s/", tar::EntryType::Directory, b"", b"");
    raw_entry(&mut bytes, b"s/x", tar::EntryType::Regular, b"", b"x");
    let tarfile = t.path().join("l.tar");
    fs::write(&tarfile, finish_tar(bytes)).unwrap();
    let dir = t.path().join("layer");
    import(&tarfile, &dir, &[]);
    assert_eq!(fs::read(dir.join("a")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(dir.join("s")).unwrap().is_dir());
    assert_eq!(fs::read(dir.join("s/x")).unwrap(), b"x");
}
