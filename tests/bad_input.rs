//! S20 in depth: a table of bad mount inputs, each refused before mounting with the exact
//! one-line message on stderr, nothing on stdout, exit status 1, nothing mounted, and the
//! whole temp tree (layers, workdir, mountpoint, a tmpfs inside it) unchanged, byte for
//! byte and mtime for mtime. This is the one S20 table: it pins the exact wording of every
//! message, and covers the inputs that need more set-up too: a second filesystem, a busy
//! mountpoint, no /dev/fuse, no permission on it.
mod common;
use common::*;

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What a case expects on stderr.
enum Want {
    /// This exact line (without the trailing newline).
    Exact(String),
    /// The message is not pinned (see the reason); it must still be one line and name all
    /// of these.
    Names(Vec<String>, &'static str),
}

struct Case {
    what: String,
    args: Vec<String>,
    want: Want,
}

fn case(what: &str, opts: &str, mnt: &str, want: Want) -> Case {
    Case {
        what: what.to_string(),
        args: vec!["-o".into(), opts.into(), mnt.into()],
        want,
    }
}

fn exact(s: String) -> Want {
    Want::Exact(format!("stratafs: {s}"))
}

fn d(p: &Path) -> String {
    p.display().to_string()
}

const ENOENT: &str = "No such file or directory";
const ENOTDIR: &str = "Not a directory";

/// The layer set-up every case runs against.
struct Bed {
    // Declared first so that it is unmounted before the temp dir is removed.
    _tmpfs: Mount,
    l: Layers,
    afile: PathBuf,
    tmpfs_work: PathBuf,
}

impl Bed {
    fn new() -> Bed {
        let l = Layers::new(2);
        l.put(0, "f", "f\n");
        l.put(1, "g", "g\n");
        l.mkdir(0, "sub");
        fs::create_dir(l.up("inner")).unwrap();
        fs::create_dir(l.work.join("inner")).unwrap();
        fs::write(l.up("u"), "u\n").unwrap();
        let root = l.root().to_path_buf();
        let afile = root.join("afile");
        fs::write(&afile, "a file\n").unwrap();
        symlink(&l.lowers[0], root.join("l0link")).unwrap();
        let tmpfs = mount_tmpfs(&root.join("shm"), "4m");
        let tmpfs_work = root.join("shm/work");
        fs::create_dir(&tmpfs_work).unwrap();
        Bed {
            l,
            afile,
            tmpfs_work,
            _tmpfs: tmpfs,
        }
    }

    fn root(&self) -> &Path {
        self.l.root()
    }

    fn std(&self, lower: &str, upper: &str, work: &str) -> String {
        format!("lowerdir={lower},upperdir={upper},workdir={work}")
    }
}

/// Runs the binary as `cmd` and checks everything a refusal must satisfy.
fn check_refused(root: &Path, what: &str, mut cmd: Command, mnt: &str, want: &Want) {
    let before = snapshot(root);
    let out: Output = cmd.output().expect("run stratafs");
    let mounted = !mnt.is_empty() && is_mounted(Path::new(mnt));
    if mounted {
        let mut m = Mount {
            mnt: PathBuf::from(mnt),
        };
        m.unmount();
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !mounted,
        "{what}: mounted despite bad input (stderr {stderr:?})"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status; stderr {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "{what}: stderr must be exactly one line, got {stderr:?}"
    );
    let line = stderr.trim_end_matches('\n');
    match want {
        Want::Exact(w) => assert_eq!(line, w, "{what}: message"),
        Want::Names(parts, _) => {
            assert!(line.starts_with("stratafs: "), "{what}: {line:?}");
            for p in parts {
                assert!(line.contains(p.as_str()), "{what}: {line:?} lacks {p:?}");
            }
        }
    }
    assert_same_tree(&format!("{what}: the temp tree"), &before, &snapshot(root));
}

fn stratafs_cmd(args: &[String]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    c
}

#[test]
fn s20_bad_mount_inputs_exact_messages() {
    let bed = Bed::new();
    let l = &bed.l;
    let root = bed.root().to_path_buf();
    let (l0, l1, up, wk, mnt) = (
        d(&l.lowers[0]),
        d(&l.lowers[1]),
        d(&l.upper),
        d(&l.work),
        d(&l.mnt),
    );
    let nope = d(&root.join("nope"));
    let file = d(&bed.afile);
    let shm_wk = d(&bed.tmpfs_work);
    let l0_sub = format!("{l0}/sub");
    let up_inner = format!("{up}/inner");
    let wk_inner = format!("{wk}/inner");
    let l0link = d(&root.join("l0link"));
    let ok = bed.std(&format!("{l0}:{l1}"), &up, &wk);
    // The volatile marker of a mount that did not stop cleanly sits in its own workdir.
    let vol = root.join("vol");
    fs::create_dir_all(vol.join("up")).unwrap();
    fs::create_dir_all(vol.join("wk")).unwrap();
    fs::write(vol.join("wk/stratafs.volatile"), "").unwrap();
    let (vol_up, vol_wk) = (d(&vol.join("up")), d(&vol.join("wk")));

    let mut cases = vec![
        // ---- lowerdir
        case(
            "no lowerdir",
            &format!("upperdir={up},workdir={wk}"),
            &mnt,
            exact("option 'lowerdir' is required".into()),
        ),
        case(
            "no options at all",
            "",
            &mnt,
            exact("option 'lowerdir' is required".into()),
        ),
        case(
            "empty lowerdir",
            &format!("lowerdir=,upperdir={up},workdir={wk}"),
            &mnt,
            exact("option 'lowerdir' needs at least one directory".into()),
        ),
        case(
            "lowerdir without '='",
            "lowerdir",
            &mnt,
            exact("option 'lowerdir' needs at least one directory".into()),
        ),
        case(
            "empty path between colons",
            &format!("lowerdir={l0}::{l1}"),
            &mnt,
            exact(format!(
                "option 'lowerdir' has an empty path in '{l0}::{l1}'"
            )),
        ),
        case(
            "trailing colon",
            &format!("lowerdir={l0}:"),
            &mnt,
            exact(format!("option 'lowerdir' has an empty path in '{l0}:'")),
        ),
        case(
            "leading colon",
            &format!("lowerdir=:{l0}"),
            &mnt,
            exact(format!("option 'lowerdir' has an empty path in ':{l0}'")),
        ),
        case(
            "missing lower",
            &bed.std(&format!("{nope}:{l1}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{nope}': {ENOENT}")),
        ),
        case(
            "missing second lower",
            &bed.std(&format!("{l0}:{nope}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{nope}': {ENOENT}")),
        ),
        case(
            "lower is a file",
            &bed.std(&format!("{l0}:{file}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{file}': not a directory")),
        ),
        case(
            "lower below a file",
            &bed.std(&format!("{file}/x"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{file}/x': {ENOTDIR}")),
        ),
        case(
            "lower is a file of a lower",
            &bed.std(&format!("{l0}/f"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{l0}/f': not a directory")),
        ),
        case(
            "same lower twice",
            &bed.std(&format!("{l0}:{l1}:{l0}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{l0}': listed twice")),
        ),
        case(
            "same lower twice, spelt with a trailing slash",
            &bed.std(&format!("{l0}:{l0}/"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{l0}/': listed twice")),
        ),
        case(
            "same lower twice, through a symlink",
            &bed.std(&format!("{l0}:{l0link}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{l0link}': listed twice")),
        ),
        case(
            "same lower twice, through '..'",
            &bed.std(&format!("{l0}:{l0}/sub/.."), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{l0}/sub/..': listed twice")),
        ),
        // ---- upperdir / workdir
        case(
            "missing upper",
            &bed.std(&l0, &nope, &wk),
            &mnt,
            exact(format!("upperdir '{nope}': {ENOENT}")),
        ),
        case(
            "upper is a file",
            &bed.std(&l0, &file, &wk),
            &mnt,
            exact(format!("upperdir '{file}': not a directory")),
        ),
        case(
            "empty upperdir",
            &format!("lowerdir={l0},upperdir=,workdir={wk}"),
            &mnt,
            exact("option 'upperdir' needs a value".into()),
        ),
        case(
            "missing workdir",
            &bed.std(&l0, &up, &nope),
            &mnt,
            exact(format!("workdir '{nope}': {ENOENT}")),
        ),
        case(
            "workdir is a file",
            &bed.std(&l0, &up, &file),
            &mnt,
            exact(format!("workdir '{file}': not a directory")),
        ),
        case(
            "empty workdir",
            &format!("lowerdir={l0},upperdir={up},workdir="),
            &mnt,
            exact("option 'workdir' needs a value".into()),
        ),
        case(
            "upper without workdir",
            &format!("lowerdir={l0},upperdir={up}"),
            &mnt,
            exact(format!(
                "upperdir '{up}': option 'workdir' is required with it"
            )),
        ),
        case(
            "workdir without upper",
            &format!("lowerdir={l0},workdir={wk}"),
            &mnt,
            exact(format!(
                "workdir '{wk}': option 'upperdir' is required with it"
            )),
        ),
        case(
            "upper inside a lower",
            &bed.std(&format!("{l0}:{l1}"), &l0_sub, &wk),
            &mnt,
            exact(format!("upperdir '{l0_sub}': inside lowerdir '{l0}'")),
        ),
        case(
            "upper is a lower",
            &bed.std(&format!("{l0}:{l1}"), &l1, &wk),
            &mnt,
            exact(format!("upperdir '{l1}': inside lowerdir '{l1}'")),
        ),
        case(
            "lower inside the upper",
            &bed.std(&format!("{l0}:{up_inner}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{up_inner}': inside upperdir '{up}'")),
        ),
        case(
            "workdir inside a lower",
            &bed.std(&l0, &up, &l0_sub),
            &mnt,
            exact(format!("workdir '{l0_sub}': inside lowerdir '{l0}'")),
        ),
        case(
            "workdir on another filesystem",
            &bed.std(&l0, &up, &shm_wk),
            &mnt,
            exact(format!(
                "workdir '{shm_wk}': not on the same filesystem as upperdir '{up}'"
            )),
        ),
        case(
            "workdir inside the upper",
            &bed.std(&l0, &up, &up_inner),
            &mnt,
            exact(format!(
                "workdir '{up_inner}': must not be inside upperdir '{up}' or contain it"
            )),
        ),
        case(
            "upper inside the workdir",
            &bed.std(&l0, &wk_inner, &wk),
            &mnt,
            exact(format!(
                "workdir '{wk}': must not be inside upperdir '{wk_inner}' or contain it"
            )),
        ),
        case(
            "workdir is the upper",
            &bed.std(&l0, &up, &up),
            &mnt,
            exact(format!(
                "workdir '{up}': must not be inside upperdir '{up}' or contain it"
            )),
        ),
        case(
            "workdir left by an unclean volatile mount",
            &format!("{},volatile", bed.std(&l0, &vol_up, &vol_wk)),
            &mnt,
            exact(format!(
                "workdir '{vol_wk}': a volatile mount did not stop cleanly, the upper may be \
                 torn; remove '{vol_wk}/stratafs.volatile' to mount anyway"
            )),
        ),
        // ---- initdir
        case(
            "missing initdir",
            &format!("{ok},initdir={nope}"),
            &mnt,
            exact(format!("initdir '{nope}': {ENOENT}")),
        ),
        case(
            "initdir is a lower",
            &format!("{ok},initdir={l1}"),
            &mnt,
            exact(format!("initdir '{l1}': overlaps lowerdir '{l1}'")),
        ),
        case(
            "initdir inside the upper",
            &format!("{ok},initdir={up_inner}"),
            &mnt,
            exact(format!(
                "initdir '{up_inner}': overlaps upperdir or workdir"
            )),
        ),
        // ---- other options
        case(
            "unknown option",
            &format!("{ok},bogus"),
            &mnt,
            exact("unknown option 'bogus'".into()),
        ),
        case(
            "unknown option with a value",
            &format!("{ok},bogus=1"),
            &mnt,
            exact("unknown option 'bogus=1'".into()),
        ),
        case(
            "passed-along option given a value",
            &format!("{ok},nodev=1"),
            &mnt,
            exact("unknown option 'nodev=1'".into()),
        ),
        case(
            "option names are case-sensitive",
            &format!("{ok},LOWERDIR={l0}"),
            &mnt,
            exact(format!("unknown option 'LOWERDIR={l0}'")),
        ),
        case(
            "whiteout form",
            &format!("{ok},whiteout=zfs"),
            &mnt,
            exact("option 'whiteout' takes aufs or overlay, not 'zfs'".into()),
        ),
        case(
            "uidmapping not triples",
            &format!("{ok},uidmapping=0:1000"),
            &mnt,
            exact(
                "option 'uidmapping' takes ID:MAPPED_ID:LENGTH triples joined by ':', not '0:1000'"
                    .into(),
            ),
        ),
        case(
            "gidmapping empty range",
            &format!("{ok},gidmapping=0:1000:0"),
            &mnt,
            exact("option 'gidmapping': range 0:1000:0 is empty or passes the last id".into()),
        ),
        case(
            "xattr_permissions 3",
            &format!("{ok},xattr_permissions=3"),
            &mnt,
            exact("option 'xattr_permissions' takes 0, 1 or 2, not '3'".into()),
        ),
        case(
            "xino value",
            &format!("{ok},xino=maybe"),
            &mnt,
            exact("option 'xino' takes off, auto or on, not 'maybe'".into()),
        ),
        case(
            "ino32_t given a value",
            &format!("{ok},ino32_t=1"),
            &mnt,
            exact("unknown option 'ino32_t=1'".into()),
        ),
        case(
            "threads 0",
            &format!("{ok},threads=0"),
            &mnt,
            exact("option 'threads' takes 1 to 64, not '0'".into()),
        ),
        case(
            "threads 65",
            &format!("{ok},threads=65"),
            &mnt,
            exact("option 'threads' takes 1 to 64, not '65'".into()),
        ),
        case(
            "threads not a number",
            &format!("{ok},threads=two"),
            &mnt,
            exact("option 'threads' takes 1 to 64, not 'two'".into()),
        ),
        case(
            "threads without a value",
            &format!("{ok},threads"),
            &mnt,
            exact("option 'threads' needs a value".into()),
        ),
        case(
            "negative timeout",
            &format!("{ok},timeout=-1"),
            &mnt,
            exact("option 'timeout' takes seconds, not '-1'".into()),
        ),
        case(
            "infinite timeout",
            &format!("{ok},timeout=inf"),
            &mnt,
            exact("option 'timeout' takes seconds, not 'inf'".into()),
        ),
        case(
            "NaN timeout",
            &format!("{ok},timeout=NaN"),
            &mnt,
            exact("option 'timeout' takes seconds, not 'NaN'".into()),
        ),
        case(
            "passthrough value",
            &format!("{ok},passthrough=maybe"),
            &mnt,
            exact("option 'passthrough' takes all, upper or off, not 'maybe'".into()),
        ),
        case(
            "empty fsname",
            &format!("{ok},fsname="),
            &mnt,
            exact("option 'fsname' needs a value".into()),
        ),
        case(
            "empty logfile",
            &format!("{ok},logfile="),
            &mnt,
            exact("option 'logfile' needs a value".into()),
        ),
        // Malformed escapes: a lone trailing backslash. The message names the value but
        // not the option (reported); pinned loosely until it does.
        case(
            "lone backslash at the end of lowerdir",
            &format!("lowerdir={l0}\\"),
            &mnt,
            Want::Names(vec![format!("'{l0}\\'")], "message lacks the option name"),
        ),
        case(
            "lone backslash at the end of upperdir",
            &format!("lowerdir={l0},workdir={wk},upperdir={up}\\"),
            &mnt,
            Want::Names(vec![format!("'{up}\\'")], "message lacks the option name"),
        ),
        case(
            "escaped colon makes a missing lower",
            &bed.std(&format!("{l0}\\:{l1}"), &up, &wk),
            &mnt,
            exact(format!("lowerdir '{l0}:{l1}': {ENOENT}")),
        ),
        case(
            "escaped comma swallows the next option",
            &format!("lowerdir={l0},upperdir={up}\\,workdir={wk}"),
            &mnt,
            exact(format!(
                "upperdir '{up},workdir={wk}': option 'workdir' is required with it"
            )),
        ),
        // ---- mountpoint
        case(
            "missing mountpoint",
            &ok,
            &nope,
            exact(format!("mountpoint '{nope}': {ENOENT}")),
        ),
        case(
            "mountpoint is a file",
            &ok,
            &file,
            exact(format!("mountpoint '{file}': not a directory")),
        ),
        case(
            "mountpoint is a lower",
            &ok,
            &l1,
            exact(format!("mountpoint '{l1}': overlaps layer '{l1}'")),
        ),
        case(
            "mountpoint inside a lower",
            &ok,
            &l0_sub,
            exact(format!("mountpoint '{l0_sub}': overlaps layer '{l0}'")),
        ),
        case(
            "mountpoint inside the upper",
            &ok,
            &up_inner,
            exact(format!("mountpoint '{up_inner}': overlaps layer '{up}'")),
        ),
        case(
            "mountpoint is the workdir",
            &ok,
            &wk,
            exact(format!("mountpoint '{wk}': overlaps layer '{wk}'")),
        ),
        case(
            "mountpoint holds the layers",
            &ok,
            &d(&root),
            exact(format!("mountpoint '{}': overlaps layer '{l0}'", d(&root))),
        ),
    ];
    // ---- the command line itself
    let cl = |what: &str, args: &[&str], want: Want| Case {
        what: what.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        want,
    };
    cases.push(cl(
        "-o without a value",
        &["-o"],
        exact("a value is required for '-o <OPTIONS>' but none was supplied".into()),
    ));
    cases.push(cl(
        "unknown flag",
        &["--frob", "-o", &ok, &mnt],
        exact("unexpected argument '--frob' found".into()),
    ));
    cases.push(cl(
        "three positional arguments",
        &["-o", &ok, "src", &mnt, "extra"],
        exact("unexpected value 'extra' for '<MOUNTPOINT>...' found; no more were expected".into()),
    ));
    // clap's first line alone does not say which argument is missing (reported).
    cases.push(cl(
        "no mountpoint",
        &["-o", &ok],
        Want::Names(
            vec!["required".into()],
            "message does not name the mountpoint",
        ),
    ));

    let n = cases.len();
    let mut loose = Vec::new();
    for c in &cases {
        let mnt_arg = c.args.last().cloned().unwrap_or_default();
        check_refused(
            bed.root(),
            &c.what,
            stratafs_cmd(&c.args),
            &mnt_arg,
            &c.want,
        );
        if let Want::Names(_, why) = &c.want {
            loose.push(format!("{}: {why}", c.what));
        }
    }
    // The same refusals through the mount(8) helper entry point (argv[0] mount.stratafs).
    let helper = root.join("mount.stratafs");
    symlink(bin(), &helper).unwrap();
    let mut helper_cases = 0;
    for c in cases
        .iter()
        .filter(|c| c.args.len() == 3 && c.args[0] == "-o")
    {
        let mut cmd = Command::new(&helper);
        cmd.args(["stratafs", &c.args[2], "-o", &c.args[1]]);
        let before = snapshot(bed.root());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !is_mounted(Path::new(&c.args[2])),
            "{}: mounted via helper",
            c.what
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} via helper: {stderr:?}",
            c.what
        );
        assert_eq!(
            stderr.matches('\n').count(),
            1,
            "{} via helper: {stderr:?}",
            c.what
        );
        assert_same_tree(&c.what, &before, &snapshot(bed.root()));
        helper_cases += 1;
    }
    fs::remove_file(&helper).unwrap();
    eprintln!(
        "bad_input: {n} bad inputs refused with exact checks ({} only loosely: {loose:?}); \
         {helper_cases} again through mount.stratafs",
        loose.len()
    );
}

// ------------------------------------------------------------------------------ failures
// after the layer checks: the daemon must still leave nothing behind.

/// A command that runs stratafs in a private mount namespace, where `prep` arranges
/// /dev (as root), then drops to `uid` (when given) before exec.
fn in_private_ns(args: &[String], prep: DevPrep, uid: Option<u32>) -> Command {
    let mut c = stratafs_cmd(args);
    // SAFETY: the closure runs in the forked child before exec and only makes raw
    // syscalls (no allocation, no locks).
    unsafe {
        c.pre_exec(move || {
            let ok = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            ok(libc::unshare(libc::CLONE_NEWNS))?;
            ok(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            match prep {
                DevPrep::NoFuse => ok(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/dev".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=64k".as_ptr().cast(),
                ))?,
                DevPrep::BindFuse(node) => ok(libc::mount(
                    node.as_ptr(),
                    c"/dev/fuse".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?,
            }
            if let Some(u) = uid {
                ok(libc::setgroups(0, std::ptr::null()))?;
                ok(libc::setgid(u))?;
                ok(libc::setuid(u))?;
            }
            Ok(())
        });
    }
    c
}

#[derive(Clone, Copy)]
enum DevPrep {
    /// A tmpfs over /dev: no /dev/fuse at all.
    NoFuse,
    /// This node (a 0600 root-owned copy of /dev/fuse) bound over /dev/fuse.
    BindFuse(&'static std::ffi::CStr),
}

/// A set of layers that `uid` may use: world-traversable root, its own dirs.
fn user_layers(uid: u32) -> Layers {
    let l = Layers::new(1);
    l.put(0, "f", "f\n");
    chmod(l.root(), 0o755);
    for p in [&l.lowers[0], &l.upper, &l.work, &l.mnt] {
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
    l
}

/// The failures that happen after the layer checks, each on fresh layers:
/// (what, layers, command, expected line).
fn late_failures(node: &'static std::ffi::CStr) -> Vec<(String, Layers, Command, Want)> {
    let mut v = Vec::new();
    let enoent = exact("/dev/fuse: No such file or directory".into());
    for (what, extra, prep, uid, want) in [
        ("no /dev/fuse", "", DevPrep::NoFuse, None, enoent),
        (
            "no /dev/fuse, volatile",
            ",volatile",
            DevPrep::NoFuse,
            None,
            exact("/dev/fuse: No such file or directory".into()),
        ),
        (
            "no permission on /dev/fuse (uid 54321)",
            "",
            DevPrep::BindFuse(node),
            Some(54321),
            Want::Names(vec!["/dev/fuse".into()], "must name /dev/fuse"),
        ),
    ] {
        let l = user_layers(54321);
        let args = vec!["-o".to_string(), format!("{}{extra}", l.opts()), d(&l.mnt)];
        let cmd = in_private_ns(&args, prep, uid);
        v.push((what.to_string(), l, cmd, want));
    }
    v
}

/// Makes the 0600 root-owned fuse node the no-permission case binds over /dev/fuse.
fn fuse_node(dir: &Path) -> &'static std::ffi::CStr {
    let p = dir.join("fuse-0600");
    mknod(&p, libc::S_IFCHR | 0o600, 10, 229).unwrap();
    let c = cpath(&p);
    Box::leak(c.into_boxed_c_str())
}

/// The failures after the layer checks give one line and exit 1, and mount nothing.
#[test]
fn s20_late_failures_refused_with_one_line() {
    let bed = Bed::new();
    let node = fuse_node(bed.root());
    for (what, l, mut cmd, _) in late_failures(node) {
        let lo = l.snap_lowers();
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!is_mounted(&l.mnt), "{what}: mounted");
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr:?}");
        assert!(out.stdout.is_empty(), "{what}: stdout");
        assert_eq!(stderr.matches('\n').count(), 1, "{what}: {stderr:?}");
        assert!(stderr.starts_with("stratafs: "), "{what}: {stderr:?}");
        l.assert_lowers_unchanged(&lo);
        assert!(names(&l.upper).is_empty(), "{what}: upper");
        eprintln!("{what}: {stderr:?}, workdir now {:?}", names(&l.work));
    }
}

/// The same failures must leave every dir as it was (no `stratafs.work`, no volatile
/// marker), and the no-permission case names /dev/fuse.
#[test]
fn s20_late_failures_change_nothing() {
    let bed = Bed::new();
    let node = fuse_node(bed.root());
    for (what, l, cmd, want) in late_failures(node) {
        check_refused(l.root(), &what, cmd, &d(&l.mnt), &want);
    }
}

/// A mountpoint where another stratafs is already mounted is refused (the issue lists
/// "mountpoint busy").
#[test]
fn s20_busy_mountpoint_refused() {
    let bed = Bed::new();
    let l = &bed.l;
    let first = l.mount("");
    let other = Layers::new(1);
    let opts = other.opts();
    let mnt = d(&l.mnt);
    let mut cmd = stratafs_cmd(&["-o".into(), opts, mnt.clone()]);
    let before = snapshot(other.root());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let stacked = mounts
        .lines()
        .filter(|m| m.split(' ').nth(1) == Some(&mnt))
        .count();
    if stacked > 1 {
        let _ = Command::new("umount").arg(&l.mnt).status();
    }
    drop(first);
    assert_eq!(stacked, 1, "a second mount stacked on {mnt}: {stderr:?}");
    assert_eq!(out.status.code(), Some(1), "{stderr:?}");
    assert_eq!(stderr.matches('\n').count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("mountpoint") && stderr.contains(&mnt),
        "{stderr:?}"
    );
    assert_same_tree("the second mount's dirs", &before, &snapshot(other.root()));
}
