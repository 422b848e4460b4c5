//! Full disks and other errors under the daemon (issue 6).
//!
//! - The upper (and its workdir) on an 8 MiB tmpfs, a lower file of 16 MiB: its copy-up
//!   fails with ENOSPC (by write-open, truncate, chmod and rename alike), the merged view
//!   keeps showing the lower file intact, nothing partial is left in the upper or the
//!   workdir, and writes that fit keep working, also after the upper was filled up.
//! - A lower directory made unreadable underneath (chmod 000) while mounted. As root the
//!   daemon would not notice (CAP_DAC_OVERRIDE lets it read anything), so the daemon runs
//!   as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (`setpriv --bounding-set`),
//!   as a hardened service would: it then meets the real EACCES from the lower. Only that
//!   path fails (EACCES or EIO), everything else keeps being served, and the path works
//!   again once the mode is restored. A second test checks the kernel's side: with
//!   `allow_other,default_permissions`, an unprivileged user gets EACCES from the mode
//!   bits the merged view shows.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bin, errno, is_mounted, Layers, Mount};

/// A tmpfs mounted for one test; unmounted (lazily if busy) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..100 {
            if !is_mounted(&self.dir) {
                return;
            }
            if Command::new("umount")
                .arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// splitmix64 bytes: real data (no holes, not compressible).
fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(n);
    v
}

fn free_bytes(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid out-parameter; c is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail * s.f_frsize
}

/// Every entry under `dir`, recursively, as "relative path (size)".
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push(format!("{rel} ({} bytes)", md.len()));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

fn expect_enospc<T: std::fmt::Debug>(what: &str, r: io::Result<T>) {
    match r {
        Err(e) if errno(&e) == libc::ENOSPC => {}
        other => panic!("{what}: expected ENOSPC, got {other:?}"),
    }
}

fn copy_up_enospc(extra: &str) {
    let layers = Layers::new(1);
    let big = random_bytes(16 << 20, 1);
    let small = random_bytes(100 << 10, 2);
    layers.put(0, "keep.txt", "kept\n");
    fs::create_dir_all(layers.lower(0, "dir")).unwrap();
    fs::write(layers.lower(0, "dir/big"), &big).unwrap();
    fs::write(layers.lower(0, "dir/small"), &small).unwrap();

    // Upper and workdir on an 8 MiB tmpfs (one filesystem, as S3 demands).
    let fsdir = layers.tmp.path().join("smallfs");
    let _tmpfs = Tmpfs::new(&fsdir, "8m");
    let (upper, work) = (fsdir.join("upper"), fsdir.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        layers.lowers[0].display(),
        upper.display(),
        work.display()
    );
    if !extra.is_empty() {
        opts = format!("{opts},{extra}");
    }
    let _m = Mount::new(&opts, &layers.mnt);
    let free0 = free_bytes(&fsdir);
    assert!(
        free0 < big.len() as u64,
        "the tmpfs has room for the big file"
    );

    let p = layers.m("dir/big");
    let check_intact = |when: &str| {
        let got = fs::read(&p).unwrap_or_else(|e| panic!("{when}: read dir/big: {e}"));
        assert!(
            got == big,
            "{when}: dir/big through the mount has {} bytes, not the lower's 16 MiB",
            got.len()
        );
        assert!(
            !upper.join("dir/big").exists(),
            "{when}: a (partial) dir/big is in the upper: {:?}",
            listing(&upper)
        );
        // The scratch dir and the workdir's record of the xattr namespace (S8), nothing else.
        let scratch = listing(&work);
        assert!(
            scratch
                .iter()
                .all(|e| e.starts_with("stratafs.work ") || e.starts_with("stratafs.xattrs ")),
            "{when}: leftovers in the workdir: {scratch:?}"
        );
    };

    // Every way to copy the big file up fails with ENOSPC and leaves no trace.
    expect_enospc(
        "open O_RDWR",
        OpenOptions::new().read(true).write(true).open(&p),
    );
    check_intact("after open O_RDWR");
    expect_enospc(
        "open O_WRONLY|O_APPEND",
        OpenOptions::new().append(true).open(&p),
    );
    check_intact("after open O_APPEND");
    expect_enospc(
        "chmod",
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)),
    );
    check_intact("after chmod");
    let t = File::open(&p).unwrap();
    drop(t);
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let r = unsafe { libc::truncate(c.as_ptr(), 1 << 20) };
        let e = io::Error::last_os_error();
        assert!(
            r != 0 && errno(&e) == libc::ENOSPC,
            "truncate to 1 MiB: {r} {e}"
        );
    }
    check_intact("after truncate");
    expect_enospc("rename", fs::rename(&p, layers.m("dir/big2")));
    check_intact("after rename");
    assert!(
        !layers.m("dir/big2").exists(),
        "rename half-done: dir/big2 exists"
    );
    let mut names: Vec<String> = fs::read_dir(layers.m("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["big", "small"],
        "merged dir after the failed copy-ups"
    );
    let free1 = free_bytes(&fsdir);
    assert!(
        free1 + (64 << 10) >= free0,
        "failed copy-ups leaked space: {free0} free before, {free1} after"
    );

    // Writes that fit keep working: a copy-up of a small file, a new file.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(layers.m("dir/small"))
        .expect("copy-up of a small file");
    f.write_all(b"HEAD").unwrap();
    drop(f);
    let mut want = small.clone();
    want[..4].copy_from_slice(b"HEAD");
    assert!(fs::read(layers.m("dir/small")).unwrap() == want);
    assert!(fs::read(upper.join("dir/small")).unwrap() == want);
    let one = random_bytes(1 << 20, 3);
    fs::write(layers.m("new1"), &one).expect("a 1 MiB file on a disk with ~8 MiB free");
    assert!(fs::read(layers.m("new1")).unwrap() == one);

    // Fill the upper up: the write that does not fit fails with ENOSPC, the daemon lives
    // on, and once space is freed everything works again.
    let mut filler = File::create(layers.m("filler")).unwrap();
    let chunk = random_bytes(256 << 10, 4);
    let mut written = 0u64;
    let err = loop {
        match filler.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(written < 64 << 20, "wrote 64 MiB into an 8 MiB tmpfs");
    };
    assert_eq!(errno(&err), libc::ENOSPC, "filling the upper: {err}");
    drop(filler);
    assert!(fs::read(layers.m("keep.txt")).unwrap() == b"kept\n");
    assert!(fs::read(layers.m("new1")).unwrap() == one);
    expect_enospc(
        "create on a full upper",
        fs::write(layers.m("dir/newfile"), random_bytes(64 << 10, 5)),
    );
    fs::remove_file(layers.m("filler")).unwrap();
    let _ = fs::remove_file(layers.m("dir/newfile"));
    check_intact("after filling the upper");
    fs::write(layers.m("dir/after"), b"fits\n").expect("a small write after freeing space");
    assert_eq!(fs::read(layers.m("dir/after")).unwrap(), b"fits\n");
    expect_enospc(
        "open O_RDWR again",
        OpenOptions::new().read(true).write(true).open(&p),
    );
    check_intact("at the end");

    // An O_TRUNC open copies no data, so it fits.
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .expect("open O_TRUNC needs no space"),
    );
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    assert_eq!(
        fs::read(layers.lower(0, "dir/big")).unwrap().len(),
        big.len()
    );
}

#[test]
fn copy_up_larger_than_free_space_fails_with_enospc() {
    copy_up_enospc("");
}

#[test]
fn copy_up_larger_than_free_space_fails_with_enospc_no_passthrough() {
    copy_up_enospc("passthrough=off");
}

/// Reads a whole file, the result as a short string for assertions.
fn read_result(p: &Path) -> Result<Vec<u8>, i32> {
    let mut v = Vec::new();
    match File::open(p).and_then(|mut f| f.read_to_end(&mut v)) {
        Ok(_) => Ok(v),
        Err(e) => Err(errno(&e)),
    }
}

fn list_result(p: &Path) -> Result<Vec<String>, i32> {
    match fs::read_dir(p) {
        Ok(rd) => {
            let mut v = Vec::new();
            for e in rd {
                match e {
                    Ok(e) => v.push(e.file_name().to_string_lossy().into_owned()),
                    Err(e) => return Err(errno(&e)),
                }
            }
            v.sort();
            Ok(v)
        }
        Err(e) => Err(errno(&e)),
    }
}

fn is_access_error(r: i32) -> bool {
    r == libc::EACCES || r == libc::EIO
}

#[test]
fn unreadable_lower_dir_fails_on_that_path_only() {
    if Command::new("setpriv").arg("--help").output().is_err() {
        panic!("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE from the daemon");
    }
    // l0 on top of l1; "merged" has one entry in each.
    let layers = Layers::new(2);
    layers.put(0, "secret/a", "secret a\n");
    layers.put(0, "secret/sub/c", "secret c\n");
    layers.put(0, "open/b", "open b\n");
    layers.put(0, "merged/x", "x\n");
    layers.put(1, "merged/y", "y\n");
    layers.put(1, "other/z", "z\n");
    // The lowers change beneath the live mount here: the kernel sees that once its cache
    // times out (`timeout=`, an hour by default), so the test asks for 1 s.
    let opts = format!("{},timeout=1", layers.opts());
    let out = Command::new("setpriv")
        .arg("--bounding-set=-dac_override,-dac_read_search")
        .arg(bin())
        .arg("-o")
        .arg(&opts)
        .arg(&layers.mnt)
        .output()
        .expect("run setpriv stratafs");
    assert!(
        out.status.success(),
        "mount without CAP_DAC_OVERRIDE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _m = Mount {
        mnt: layers.mnt.clone(),
    };
    let m = |r: &str| layers.m(r);
    // Before: everything readable.
    assert_eq!(read_result(&m("secret/a")), Ok(b"secret a\n".to_vec()));
    assert_eq!(list_result(&m("merged")), Ok(vec!["x".into(), "y".into()]));

    // Underneath, while mounted: the dir becomes unreadable. Wait out the kernel's entry
    // and attribute cache (timeout=1 s).
    common::chmod(&layers.lower(0, "secret"), 0o000);
    common::chmod(&layers.lower(1, "merged"), 0o000);
    std::thread::sleep(Duration::from_millis(1300));

    let r = read_result(&m("secret/a"));
    assert!(
        matches!(r, Err(e) if is_access_error(e)),
        "read secret/a of an unreadable lower dir: {r:?}"
    );
    let r = list_result(&m("secret"));
    assert!(
        matches!(r, Err(e) if is_access_error(e)),
        "list an unreadable lower dir: {r:?}"
    );
    let r = read_result(&m("secret/sub/c"));
    assert!(
        matches!(r, Err(e) if is_access_error(e)),
        "read below an unreadable lower dir: {r:?}"
    );
    // A merged dir whose lower part is unreadable: an error, not a listing that silently
    // lacks y (which would invite creating a y that hides the real one forever).
    let r = list_result(&m("merged"));
    eprintln!(
        "DEBUG merged listing: {r:?}; secret: {:?} {:?}",
        read_result(&m("secret/a")),
        list_result(&m("secret"))
    );
    assert!(
        matches!(r, Err(e) if is_access_error(e)),
        "list a merged dir whose lower part is unreadable: {r:?}"
    );

    // Everything else is served as before, reads and writes.
    assert_eq!(read_result(&m("open/b")), Ok(b"open b\n".to_vec()));
    assert_eq!(read_result(&m("other/z")), Ok(b"z\n".to_vec()));
    let root = list_result(&layers.mnt).expect("list the root");
    assert_eq!(root, ["merged", "open", "other", "secret"]);
    fs::write(m("open/new"), b"new\n").expect("create beside");
    OpenOptions::new()
        .append(true)
        .open(m("open/b"))
        .and_then(|mut f| f.write_all(b"more\n"))
        .expect("copy-up beside");
    assert_eq!(read_result(&m("open/b")), Ok(b"open b\nmore\n".to_vec()));
    assert!(is_mounted(&layers.mnt), "the daemon died");

    // Readable again: the path works again (no error remembered).
    common::chmod(&layers.lower(0, "secret"), 0o755);
    common::chmod(&layers.lower(1, "merged"), 0o755);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(read_result(&m("secret/a")), Ok(b"secret a\n".to_vec()));
    assert_eq!(read_result(&m("secret/sub/c")), Ok(b"secret c\n".to_vec()));
    assert_eq!(list_result(&m("merged")), Ok(vec!["x".into(), "y".into()]));
}

/// Runs `prog args` as user nobody; returns (success, stderr).
fn as_nobody(prog: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new(prog)
        .args(args)
        .uid(65534)
        .gid(65534)
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("run {prog} as nobody: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreadable_lower_dir_as_an_unprivileged_user() {
    let layers = Layers::new(1);
    common::chmod(layers.tmp.path(), 0o755);
    layers.put(0, "secret/a", "secret a\n");
    layers.put(0, "open/b", "open b\n");
    // The lower changes beneath the live mount: seen once the kernel's cache times out.
    let _m = layers.mount("allow_other,default_permissions,timeout=1");
    let (ok, err) = as_nobody("cat", &[&layers.m("secret/a")]);
    assert!(ok, "nobody reads secret/a before the chmod: {err}");
    common::chmod(&layers.lower(0, "secret"), 0o000);
    std::thread::sleep(Duration::from_millis(1300));
    let (ok, err) = as_nobody("cat", &[&layers.m("secret/a")]);
    assert!(
        !ok && err.contains("Permission denied"),
        "nobody reads secret/a below a 000 lower dir: ok={ok} {err}"
    );
    let (ok, err) = as_nobody("ls", &[&layers.m("secret")]);
    assert!(
        !ok && err.contains("Permission denied"),
        "nobody lists a 000 lower dir: ok={ok} {err}"
    );
    let (ok, err) = as_nobody("cat", &[&layers.m("open/b")]);
    assert!(ok, "nobody reads open/b beside it: {err}");
    // Root (the daemon's own view) still reads it: the merged mode is the lower's.
    let md = fs::metadata(layers.m("secret")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0);
    common::chmod(&layers.lower(0, "secret"), 0o755);
}
