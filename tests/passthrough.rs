//! Lower files read in place (S28 of docs/semantics.md; issue 12, lever 3): a read-only open
//! of a lower file is served by the kernel from the lower file itself, so every mount of an
//! image shares one page cache, and a copy-up while such opens live moves the object to a
//! new kernel inode without any write reaching the lower (S2) and without st_ino changing
//! (S13).
mod common;
use common::*;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// How many requests of `op` (e.g. "READ") the daemon of the mount at `mnt` served.
fn requests(mnt: &Path, op: &str) -> u64 {
    let out = run_stratafs(&["stats", mnt.to_str().unwrap()]);
    assert!(out.status.success(), "stratafs stats failed");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    report_count(&report, op)
}

/// Pages of the file `p` in the page cache, as mincore sees them through a read-only map.
fn resident_pages(p: &Path) -> usize {
    let f = File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    // SAFETY: a read-only shared map of an open file, released below; mincore writes one
    // byte per page into a vector of that many bytes.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap {}", p.display());
        let mut vec = vec![0u8; pages];
        let r = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(r, 0, "mincore");
        vec.iter().filter(|b| **b & 1 != 0).count()
    }
}

/// Drops the page cache of file `p` (unmapped pages only).
fn drop_file_pages(p: &Path) {
    let f = File::open(p).unwrap();
    f.sync_all().ok();
    // SAFETY: an open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A lower file read through the mount never reaches the daemon, and what the kernel cached
/// of it is the lower file's own pages: once those are dropped nothing of the file is left
/// cached through the mount. With `passthrough=upper` the daemon serves the reads, and the
/// mount keeps a second copy in its own page cache (the check can fail).
#[test]
fn lower_files_are_read_in_place_with_one_page_cache() {
    for (extra, in_place) in [("", true), ("passthrough=upper", false)] {
        let l = Layers::new(1);
        let data = pattern(4 << 20, 7);
        fs::write(l.lower(0, "img"), &data).unwrap();
        let _m = l.mount(extra);
        let reads_before = requests(&l.mnt, "READ");
        assert!(fs::read(l.m("img")).unwrap() == data, "{extra}: content");
        let reads = requests(&l.mnt, "READ") - reads_before;
        let pages = data.len() / 4096;
        assert!(
            resident_pages(&l.lower(0, "img")) == pages,
            "{extra}: read via the lower"
        );
        drop_file_pages(&l.lower(0, "img"));
        let left = resident_pages(&l.m("img"));
        if in_place {
            assert_eq!(reads, 0, "{extra}: READ requests for a lower file");
            assert_eq!(
                left, 0,
                "{extra}: pages cached through the mount besides the lower's"
            );
        } else {
            assert!(reads > 0, "{extra}: the daemon serves lower files");
            assert!(
                left > pages / 2,
                "{extra}: the mount's own cache ({left} pages)"
            );
        }
    }
}

/// Two mounts of one image (one lower, each with its own upper) read a file from one page
/// cache: after both read it, dropping the lower's pages leaves nothing cached in either.
#[test]
fn mounts_of_one_image_share_its_page_cache() {
    let l = Layers::new(1);
    let data = pattern(2 << 20, 3);
    fs::write(l.lower(0, "lib.so"), &data).unwrap();
    let second = l.root().join("second");
    for d in ["upper", "work", "mnt"] {
        fs::create_dir_all(second.join(d)).unwrap();
    }
    let _a = l.mount("");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.lowers[0].display(),
        second.join("upper").display(),
        second.join("work").display()
    );
    let _b = Mount::new(&opts, &second.join("mnt"));
    for m in [l.m("lib.so"), second.join("mnt/lib.so")] {
        assert!(fs::read(&m).unwrap() == data);
    }
    drop_file_pages(&l.lower(0, "lib.so"));
    for m in [l.m("lib.so"), second.join("mnt/lib.so")] {
        assert_eq!(
            resident_pages(&m),
            0,
            "{} keeps pages of its own",
            m.display()
        );
    }
    assert_eq!(requests(&l.mnt, "READ"), 0);
    assert_eq!(requests(&second.join("mnt"), "READ"), 0);
}

/// A file held open read-only on its lower copy, then written through another open: the
/// write goes to an upper copy (the lower never changes, S2), every later open and stat see
/// it, the descriptor opened before keeps reading (and mapping) the lower copy, and st_ino
/// is one number throughout (S13).
#[test]
fn copy_up_while_open_on_the_lower_copy() {
    let l = Layers::new(1);
    let old = pattern(100_000, 1);
    fs::write(l.lower(0, "f"), &old).unwrap();
    let lowers = l.snap_lowers();
    let _m = l.mount("");
    let ino = fs::metadata(l.m("f")).unwrap().ino();
    let mut ro = File::open(l.m("f")).unwrap();
    let mut head = [0u8; 10];
    ro.read_exact(&mut head).unwrap();
    let mut rw = OpenOptions::new().write(true).open(l.m("f")).unwrap();
    rw.write_all(b"NEW").unwrap();
    drop(rw);
    let mut new = old.clone();
    new[..3].copy_from_slice(b"NEW");
    assert!(
        fs::read(l.m("f")).unwrap() == new,
        "a fresh open reads the write"
    );
    assert!(
        fs::read(l.up("f")).unwrap() == new,
        "the write is in the upper copy"
    );
    let mut rest = Vec::new();
    ro.read_to_end(&mut rest).unwrap();
    assert!(
        rest == old[10..],
        "the earlier descriptor reads the lower copy"
    );
    let mut at0 = [0u8; 3];
    ro.read_exact_at(&mut at0, 0).unwrap();
    assert_eq!(&at0, &old[..3]);
    // A map of the earlier descriptor shows the lower copy too.
    // SAFETY: a read-only private map of an open file, unmapped before the end.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            ro.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(std::slice::from_raw_parts(p as *const u8, 3), &old[..3]);
        libc::munmap(p, 4096);
    }
    for md in [ro.metadata().unwrap(), fs::metadata(l.m("f")).unwrap()] {
        assert_eq!(md.ino(), ino, "st_ino across the copy-up");
    }
    // A second write-open and a read-only open after the copy-up share the upper copy.
    let ro2 = File::open(l.m("f")).unwrap();
    let rw2 = OpenOptions::new().write(true).open(l.m("f")).unwrap();
    rw2.write_all_at(b"TWO", 10).unwrap();
    let mut got = [0u8; 3];
    ro2.read_exact_at(&mut got, 10).unwrap();
    assert_eq!(&got, b"TWO");
    drop((ro, ro2, rw2));
    l.assert_lowers_unchanged(&lowers);
}

/// The other ways a lower file held open read-only changes: through a second name of a
/// hard link, a truncate by path, a chmod (a metadata-only copy with `metacopy=on`, whose
/// data stays in the lower until the truncate), a rename. Each later open sees the change.
#[test]
fn changes_by_path_and_other_names_while_open_on_the_lower_copy() {
    for extra in ["", "metacopy=on"] {
        let l = Layers::new(1);
        fs::write(l.lower(0, "a"), "0123456789").unwrap();
        fs::hard_link(l.lower(0, "a"), l.lower(0, "b")).unwrap();
        fs::write(l.lower(0, "t"), "0123456789").unwrap();
        fs::write(l.lower(0, "r"), "renamed").unwrap();
        let lowers = l.snap_lowers();
        let _m = l.mount(extra);
        let ro_a = File::open(l.m("a")).unwrap();
        let mut s = String::new();
        (&ro_a).read_to_string(&mut s).unwrap();
        OpenOptions::new()
            .write(true)
            .open(l.m("b"))
            .unwrap()
            .write_all(b"BB")
            .unwrap();
        assert_eq!(
            fs::read_to_string(l.m("b")).unwrap(),
            "BB23456789",
            "{extra}"
        );
        assert_eq!(
            fs::read_to_string(l.m("a")).unwrap(),
            "BB23456789",
            "{extra}"
        );
        let ro_t = File::open(l.m("t")).unwrap();
        let mut first = [0u8; 1];
        ro_t.read_exact_at(&mut first, 0).unwrap();
        fs::set_permissions(
            l.m("t"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(l.m("t")).unwrap(),
            "0123456789",
            "{extra}"
        );
        truncate(&l.m("t"), 4).unwrap();
        assert_eq!(fs::read_to_string(l.m("t")).unwrap(), "0123", "{extra}");
        assert_eq!(fs::metadata(l.m("t")).unwrap().len(), 4);
        assert_eq!(
            fs::metadata(l.m("t")).unwrap().ino(),
            ro_t.metadata().unwrap().ino()
        );
        let mut old = String::new();
        (&ro_t).read_to_string(&mut old).unwrap();
        assert!(
            "0123456789".ends_with(&old),
            "{extra}: the earlier descriptor reads the lower copy: {old:?}"
        );
        // A rename copies up too; the new name opens the copy, also for writing.
        let ro_r = File::open(l.m("r")).unwrap();
        let mut b = [0u8; 1];
        ro_r.read_exact_at(&mut b, 0).unwrap();
        fs::rename(l.m("r"), l.m("r2")).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(l.m("r2"))
            .unwrap()
            .write_all(b"+")
            .unwrap();
        assert_eq!(
            fs::read_to_string(l.m("r2")).unwrap(),
            "renamed+",
            "{extra}"
        );
        drop((ro_a, ro_t, ro_r));
        l.assert_lowers_unchanged(&lowers);
    }
}

/// With `passthrough=upper` the descriptor opened on the lower copy follows the copy-up, as
/// on overlayfs since Linux 4.19.
#[test]
fn passthrough_upper_keeps_descriptors_following_the_copy_up() {
    let l = Layers::new(1);
    fs::write(l.lower(0, "f"), "lower").unwrap();
    let _m = l.mount("passthrough=upper");
    let ro = File::open(l.m("f")).unwrap();
    let mut b = [0u8; 5];
    ro.read_exact_at(&mut b, 0).unwrap();
    fs::write(l.m("f"), "upper").unwrap();
    // SAFETY: an open descriptor; the next read asks the daemon.
    unsafe { libc::posix_fadvise(ro.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ro.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"upper");
}
