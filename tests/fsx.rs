//! fsx-style data integrity test (issue 6, "Data integrity"): random read, write, truncate,
//! fallocate (plain, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE), mmap read and write
//! (MAP_SHARED + msync), copy_file_range and close/reopen, on files that start in a lower
//! layer (read from there until the first write-open copies them up, S10) and on files
//! created in the upper. Every operation is checked against an in-memory model: the size
//! after each call, the bytes of the touched range read back through the mount, and, every
//! few hundred operations and at the end, the whole file both through the mount and in the
//! upper directly (what the daemon really wrote). The lowers must be unchanged (S2).
//!
//! STRATAFS_FSX_OPS sets the number of operations per run (default 20,000); the test runs
//! once with FUSE passthrough (default) and once with `passthrough=off`.
//! STRATAFS_FSX_SEED replays a run; the seed is printed at the start and in every failure.

mod common;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

use common::{Layers, Rng};

/// Largest file size the operations aim for (writes may land a little beyond).
const MAX_FILE: u64 = 512 << 10;
/// Largest length of one read, write, fallocate, mmap or copy.
const MAX_OP: u64 = 64 << 10;
/// A full comparison (mount and upper) of every file this often.
const FULL_CHECK_EVERY: u64 = 500;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fstat_size(fd: RawFd) -> io::Result<u64> {
    // SAFETY: a zeroed stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

fn ftruncate(fd: RawFd, n: u64) -> io::Result<()> {
    // SAFETY: fd is open.
    if unsafe { libc::ftruncate(fd, n as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn truncate_path(p: &std::path::Path, n: u64) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), n as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn page() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// One file of the run: its model and its open descriptors.
struct FsxFile {
    rel: String,
    model: Vec<u8>,
    /// Started in the lower and not yet opened for writing (so not copied up).
    pristine_lower: bool,
    /// Read-only descriptor (the only one while the file is still a pristine lower file).
    ro: Option<File>,
    /// Read-write descriptor (its open copies a lower file up).
    rw: Option<File>,
    /// Read-only descriptors opened on the lower copy before the copy-up, under
    /// `passthrough=all`, with the lower content they keep reading.
    frozen: Vec<(File, Vec<u8>)>,
}

struct Fsx {
    layers: Layers,
    files: Vec<FsxFile>,
    rng: Rng,
    seed: u64,
    mode: &'static str,
    op_no: u64,
    ops: u64,
    recent: VecDeque<String>,
    /// Operations of each kind done, for the summary.
    counts: std::collections::BTreeMap<&'static str, u64>,
    /// Original lower contents, to prove that the lowers never change (S2).
    lower_orig: Vec<(PathBuf, Vec<u8>)>,
    /// STRATAFS_FSX_CLOSE_RO_AT_COPYUP=1: close the read-only descriptor of a lower file
    /// before its copy-up, so that no descriptor opened on the lower copy lives on (a
    /// diagnostic knob, to look past the stale-descriptor bug; off by default).
    avoid_stale_ro: bool,
    /// Lower files are read through passthrough (`passthrough=all`): a read-only
    /// descriptor opened on the lower copy keeps reading it after the copy-up (semantics,
    /// S28); otherwise it reads the upper copy, as on overlayfs.
    ro_keeps_lower: bool,
}

impl Fsx {
    fn fail(&self, what: String) -> ! {
        let recent: Vec<String> = self.recent.iter().cloned().collect();
        panic!(
            "fsx FAILED ({} mode) seed={} (replay: STRATAFS_FSX_SEED={}) at op #{}: {}\nlast ops:\n  {}",
            self.mode,
            self.seed,
            self.seed,
            self.op_no,
            what,
            recent.join("\n  ")
        );
    }

    fn log(&mut self, kind: &'static str, desc: String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.recent.len() == 40 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("#{} {}", self.op_no, desc));
    }

    fn ok<T>(&self, r: io::Result<T>, what: &str) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(format!("{what}: {e}")),
        }
    }

    fn mnt_path(&self, i: usize) -> PathBuf {
        self.layers.m(&self.files[i].rel)
    }

    /// Called before anything that may copy file `i` up.
    fn before_copy_up(&mut self, i: usize) {
        if self.files[i].pristine_lower && self.avoid_stale_ro {
            self.files[i].ro = None;
        }
        if self.files[i].pristine_lower && self.ro_keeps_lower {
            if let Some(ro) = self.files[i].ro.take() {
                let lower = self.files[i].model.clone();
                self.files[i].frozen.push((ro, lower));
            }
        }
    }

    /// The descriptors of file `i` opened on its lower copy before the copy-up still read
    /// the lower content, whole (S28).
    fn check_frozen(&self, i: usize) {
        for (f, lower) in &self.files[i].frozen {
            let got = self.pread(f.as_raw_fd(), 0, lower.len() + 16);
            if &got != lower {
                self.fail(format!(
                    "{}: a descriptor opened on the lower copy before the copy-up reads {} \
                     bytes, not the {} bytes of the lower copy",
                    self.files[i].rel,
                    got.len(),
                    lower.len()
                ));
            }
        }
    }

    /// The read-write descriptor of file `i`, opening it (copy-up) if needed.
    fn rw(&mut self, i: usize) -> RawFd {
        if self.files[i].rw.is_none() {
            self.before_copy_up(i);
            let p = self.mnt_path(i);
            let f = OpenOptions::new().read(true).write(true).open(&p);
            let f = self.ok(f, &format!("open O_RDWR {}", p.display()));
            self.files[i].rw = Some(f);
            self.files[i].pristine_lower = false;
        }
        self.files[i].rw.as_ref().unwrap().as_raw_fd()
    }

    /// Some descriptor of file `i` to read through (random choice among the open ones).
    fn reader(&mut self, i: usize) -> RawFd {
        let use_ro = match (&self.files[i].ro, &self.files[i].rw) {
            (Some(_), Some(_)) => self.rng.chance(50),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => {
                let p = self.mnt_path(i);
                let f = self.ok(File::open(&p), &format!("open O_RDONLY {}", p.display()));
                self.files[i].ro = Some(f);
                true
            }
        };
        let f = if use_ro {
            self.files[i].ro.as_ref()
        } else {
            self.files[i].rw.as_ref()
        };
        f.unwrap().as_raw_fd()
    }

    /// pread of up to `len` bytes at `off` (short only at end of file).
    fn pread(&self, fd: RawFd, off: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            // SAFETY: fd is open; the buffer has len - got bytes left at got.
            let n = unsafe {
                libc::pread(
                    fd,
                    buf[got..].as_mut_ptr().cast(),
                    len - got,
                    (off + got as u64) as libc::off_t,
                )
            };
            match n {
                0 => break,
                n if n > 0 => got += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        self.fail(format!("pread off={off} len={len}: {e}"));
                    }
                }
            }
        }
        buf.truncate(got);
        buf
    }

    fn pwrite(&self, fd: RawFd, off: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            // SAFETY: fd is open; the buffer has data.len() - done bytes left at done.
            let n = unsafe {
                libc::pwrite(
                    fd,
                    data[done..].as_ptr().cast(),
                    data.len() - done,
                    (off + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    self.fail(format!("pwrite off={off} len={}: {e}", data.len()));
                }
            } else {
                done += n as usize;
            }
        }
    }

    /// Compares `got` (read at `off`) with the model of file `i`.
    fn compare(&self, i: usize, off: u64, got: &[u8], how: &str) {
        let m = &self.files[i].model;
        let start = (off as usize).min(m.len());
        let end = (start + got.len()).min(m.len());
        let want = &m[start..end];
        if got != want {
            let first = got
                .iter()
                .zip(want.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            self.fail(format!(
                "{}: {how}: data mismatch at offset {} (read {} bytes at {off}, model has {}; \
                 got {:02x?} want {:02x?})",
                self.files[i].rel,
                off + first as u64,
                got.len(),
                want.len(),
                &got[first..(first + 8).min(got.len())],
                &want[first.min(want.len())..(first + 8).min(want.len())],
            ));
        }
    }

    /// Reads [off, off+len) back through a descriptor and checks it, and the size.
    fn check_range(&mut self, i: usize, off: u64, len: u64) {
        let size = self.files[i].model.len() as u64;
        let fd = self.reader(i);
        let st_size = fstat_size(fd);
        let st_size = self.ok(st_size, "fstat");
        if st_size != size {
            self.fail(format!(
                "{}: size {st_size} through the mount, model {size}",
                self.files[i].rel
            ));
        }
        // Read a little past the range and past the end, so a wrong EOF shows.
        let got = self.pread(fd, off, (len + 16) as usize);
        let expect = size.saturating_sub(off).min(len + 16) as usize;
        if got.len() != expect {
            self.fail(format!(
                "{}: read {} bytes at {off}, expected {expect} (size {size})",
                self.files[i].rel,
                got.len()
            ));
        }
        self.compare(i, off, &got, "read-back");
    }

    /// Whole file through a fresh descriptor, and the copy in the upper (or, for a pristine
    /// lower file, the absence of an upper copy).
    fn full_check(&mut self, i: usize) {
        let p = self.mnt_path(i);
        let data = self.ok(fs::read(&p), &format!("read {}", p.display()));
        if data.len() != self.files[i].model.len() {
            self.fail(format!(
                "{}: whole-file read gives {} bytes, model {}",
                self.files[i].rel,
                data.len(),
                self.files[i].model.len()
            ));
        }
        self.compare(i, 0, &data, "whole-file read through a fresh fd");
        let up = self.layers.upper.join(&self.files[i].rel);
        if self.files[i].pristine_lower {
            if up.exists() {
                self.fail(format!(
                    "{}: an upper copy exists although the file was never opened for writing",
                    self.files[i].rel
                ));
            }
            return;
        }
        let u = self.ok(fs::read(&up), &format!("read upper {}", up.display()));
        if u.len() != self.files[i].model.len() {
            self.fail(format!(
                "{}: the upper copy has {} bytes, model {}",
                self.files[i].rel,
                u.len(),
                self.files[i].model.len()
            ));
        }
        self.compare(i, 0, &u, "upper copy read directly");
    }

    fn set_len(&mut self, i: usize, n: u64) {
        self.files[i].model.resize(n as usize, 0);
    }

    fn model_write(&mut self, i: usize, off: u64, data: &[u8]) {
        let m = &mut self.files[i].model;
        let end = off as usize + data.len();
        if m.len() < end {
            m.resize(end, 0);
        }
        m[off as usize..end].copy_from_slice(data);
    }

    /// A random (offset, length) for an operation on a file of `size` bytes.
    fn range(&mut self, size: u64, within: bool) -> (u64, u64) {
        if within {
            if size == 0 {
                return (0, 0);
            }
            let off = self.rng.below(size);
            let len = 1 + self.rng.below(MAX_OP.min(size - off));
            return (off, len);
        }
        let off = if self.rng.chance(20) {
            size // append
        } else {
            self.rng.below(MAX_FILE)
        };
        let len = 1 + self.rng.below(MAX_OP);
        (off, len)
    }

    fn op_read(&mut self, i: usize) {
        let size = self.files[i].model.len() as u64;
        let off = self.rng.below(size + 4096);
        let len = 1 + self.rng.below(MAX_OP);
        self.log(
            "read",
            format!("read {} off={off} len={len}", self.files[i].rel),
        );
        let fd = self.reader(i);
        let got = self.pread(fd, off, len as usize);
        let expect = size.saturating_sub(off).min(len) as usize;
        if got.len() != expect {
            self.fail(format!(
                "{}: read {} bytes at {off}, expected {expect} (size {size})",
                self.files[i].rel,
                got.len()
            ));
        }
        self.compare(i, off, &got, "read");
        self.check_frozen(i);
    }

    fn op_write(&mut self, i: usize) {
        let size = self.files[i].model.len() as u64;
        let (off, len) = self.range(size, false);
        let data = self.rng.bytes(len as usize);
        self.log(
            "write",
            format!("write {} off={off} len={len}", self.files[i].rel),
        );
        let fd = self.rw(i);
        self.pwrite(fd, off, &data);
        self.model_write(i, off, &data);
        self.check_range(i, off, len);
    }

    fn op_truncate(&mut self, i: usize) {
        let size = self.files[i].model.len() as u64;
        let n = match self.rng.below(4) {
            0 => 0,
            1 => size / 2,
            _ => self.rng.below(MAX_FILE),
        };
        let how = self.rng.below(3);
        match how {
            0 => {
                self.log(
                    "truncate",
                    format!("ftruncate {} to {n}", self.files[i].rel),
                );
                let fd = self.rw(i);
                let r = ftruncate(fd, n);
                self.ok(r, &format!("ftruncate {n}"));
            }
            1 => {
                self.log(
                    "truncate",
                    format!("truncate(path) {} to {n}", self.files[i].rel),
                );
                self.before_copy_up(i);
                let p = self.mnt_path(i);
                let r = truncate_path(&p, n);
                self.ok(r, &format!("truncate({}) {n}", p.display()));
                self.files[i].pristine_lower = false;
            }
            _ => {
                // open(O_TRUNC): a copy-up without data for a pristine lower file.
                self.log(
                    "truncate",
                    format!("open O_TRUNC {} then extend to {n}", self.files[i].rel),
                );
                self.before_copy_up(i);
                let p = self.mnt_path(i);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .truncate(true)
                    .open(&p);
                let f = self.ok(f, "open O_RDWR|O_TRUNC");
                self.files[i].pristine_lower = false;
                self.set_len(i, 0);
                let r = ftruncate(f.as_raw_fd(), n);
                self.ok(r, "ftruncate after O_TRUNC");
                self.files[i].rw = Some(f);
            }
        }
        self.set_len(i, n);
        let lo = n.min(size).saturating_sub(64);
        self.check_range(i, lo, n.max(size) - lo);
    }

    fn op_fallocate(&mut self, i: usize) {
        let size = self.files[i].model.len() as u64;
        let (kind, mode) = match self.rng.below(5) {
            0 => ("fallocate", 0),
            1 => ("fallocate KEEP_SIZE", libc::FALLOC_FL_KEEP_SIZE),
            2 | 3 => (
                "punch hole",
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            ),
            _ => ("zero range", libc::FALLOC_FL_ZERO_RANGE),
        };
        let (off, len) = if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && size > 0 {
            self.range(size, true)
        } else {
            let off = self.rng.below(MAX_FILE);
            (off, 1 + self.rng.below(MAX_OP))
        };
        self.log(
            "fallocate",
            format!("{kind} {} off={off} len={len}", self.files[i].rel),
        );
        let fd = self.rw(i);
        // SAFETY: fd is an open descriptor owned by self.files[i].
        let r = unsafe { libc::fallocate(fd, mode, off as i64, len as i64) };
        if r != 0 {
            let e = io::Error::last_os_error();
            self.fail(format!("{kind} off={off} len={len}: {e}"));
        }
        let end = off + len;
        match kind {
            "fallocate" => {
                if end > size {
                    self.set_len(i, end);
                }
            }
            "fallocate KEEP_SIZE" => {}
            "punch hole" => {
                let e = end.min(size) as usize;
                if (off as usize) < e {
                    self.files[i].model[off as usize..e].fill(0);
                }
            }
            _ => {
                if end > size {
                    self.set_len(i, end);
                }
                self.files[i].model[off as usize..end as usize].fill(0);
            }
        }
        let lo = off.saturating_sub(64);
        self.check_range(i, lo, len + 128);
        if kind == "fallocate KEEP_SIZE" && end > size {
            // Space allocated beyond EOF must read as zeros once the file grows over it.
            let fd = self.rw(i);
            let r = ftruncate(fd, end);
            self.ok(r, "ftruncate over preallocated space");
            self.set_len(i, end);
            self.check_range(i, size.saturating_sub(16), end - size + 16);
        }
    }

    /// Maps [off, off+len) of file `i` (page-aligned start) and runs `f` on the mapped bytes.
    fn with_map(&mut self, i: usize, off: u64, len: u64, write: bool, f: impl FnOnce(&mut [u8])) {
        let pg = page();
        let start = off / pg * pg;
        let maplen = (off + len - start) as usize;
        let fd = if write { self.rw(i) } else { self.reader(i) };
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of an open descriptor, inside the file's size.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                maplen,
                prot,
                libc::MAP_SHARED,
                fd,
                start as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            self.fail(format!("mmap off={start} len={maplen} write={write}: {e}"));
        }
        // SAFETY: the mapping is maplen bytes long and stays mapped until munmap below.
        let s = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, maplen) };
        f(&mut s[(off - start) as usize..]);
        if write {
            // SAFETY: p/maplen is the mapping made above.
            if unsafe { libc::msync(p, maplen, libc::MS_SYNC) } != 0 {
                let e = io::Error::last_os_error();
                self.fail(format!("msync: {e}"));
            }
        }
        // SAFETY: as above; not used after this.
        unsafe { libc::munmap(p, maplen) };
    }

    fn op_mmap_read(&mut self, i: usize) {
        let size = self.files[i].model.len() as u64;
        if size == 0 {
            return self.op_read(i);
        }
        let (off, len) = self.range(size, true);
        self.log(
            "mmap read",
            format!("mmap read {} off={off} len={len}", self.files[i].rel),
        );
        let mut got = Vec::new();
        self.with_map(i, off, len, false, |s| got.extend_from_slice(s));
        self.compare(i, off, &got, "mmap read");
    }

    fn op_mmap_write(&mut self, i: usize) {
        let size = self.files[i].model.len() as u64;
        if size == 0 {
            return self.op_write(i);
        }
        let (off, len) = self.range(size, true);
        let data = self.rng.bytes(len as usize);
        self.log(
            "mmap write",
            format!("mmap write {} off={off} len={len}", self.files[i].rel),
        );
        self.with_map(i, off, len, true, |s| s.copy_from_slice(&data));
        self.model_write(i, off, &data);
        self.check_range(i, off, len);
        // msync(MS_SYNC) returned: the bytes must be in the upper file now.
        let up = self.layers.upper.join(&self.files[i].rel);
        let f = self.ok(File::open(&up), "open upper copy");
        let got = self.pread(f.as_raw_fd(), off, len as usize);
        self.compare(i, off, &got, "upper copy after msync");
    }

    fn op_copy_range(&mut self, dst: usize) {
        let src = self.rng.below(self.files.len() as u64) as usize;
        let ssize = self.files[src].model.len() as u64;
        let dsize = self.files[dst].model.len() as u64;
        let off_in = self.rng.below(ssize + 1024);
        let mut len = 1 + self.rng.below(MAX_OP);
        let off_out = if self.rng.chance(20) {
            dsize
        } else {
            self.rng.below(MAX_FILE)
        };
        if src == dst {
            // The ranges of one file must not overlap (EINVAL).
            let (a, b) = (off_in.min(off_out), off_in.max(off_out));
            len = len.min(b - a);
            if len == 0 {
                return self.op_write(dst);
            }
        }
        self.log(
            "copy_file_range",
            format!(
                "copy_file_range {} off={off_in} -> {} off={off_out} len={len}",
                self.files[src].rel, self.files[dst].rel
            ),
        );
        let out_fd = self.rw(dst);
        let in_fd = if src == dst { out_fd } else { self.reader(src) };
        let mut oi = off_in as i64;
        let mut oo = off_out as i64;
        // SAFETY: both descriptors are open; the offsets are valid out-parameters.
        let n = unsafe { libc::copy_file_range(in_fd, &mut oi, out_fd, &mut oo, len as usize, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.fail(format!("copy_file_range: {e}"));
        }
        let n = n as u64;
        let expect = ssize.saturating_sub(off_in).min(len);
        // A short copy is legal, but not a copy that stops before it could start.
        if n > expect || (n == 0 && expect > 0) {
            self.fail(format!("copy_file_range returned {n}, expected {expect}"));
        }
        if n > 0 {
            let data = self.files[src].model[off_in as usize..(off_in + n) as usize].to_vec();
            self.model_write(dst, off_out, &data);
        }
        self.check_range(dst, off_out, n.max(1));
    }

    fn op_reopen(&mut self, i: usize) {
        self.log("reopen", format!("close and reopen {}", self.files[i].rel));
        let f = &mut self.files[i];
        f.ro = None;
        f.rw = None;
        if self.rng.chance(50) {
            self.full_check(i);
        }
    }

    fn op_fsync(&mut self, i: usize) {
        let data = self.rng.chance(50);
        self.log(
            "fsync",
            format!(
                "f{}sync {}",
                if data { "data" } else { "" },
                self.files[i].rel
            ),
        );
        let f = match (&self.files[i].rw, &self.files[i].ro) {
            (Some(f), _) | (None, Some(f)) => f,
            (None, None) => return,
        };
        let r = if data { f.sync_data() } else { f.sync_all() };
        self.ok(r, "fsync");
    }

    fn step(&mut self) {
        let i = self.rng.below(self.files.len() as u64) as usize;
        // In the first quarter of the run, the files that start in the lower are only read
        // (served from the lower); their copy-ups come after, while read-only descriptors
        // opened on the lower copy are still open.
        if self.files[i].pristine_lower && self.op_no < self.ops / 4 {
            return match self.rng.below(10) {
                0..=5 => self.op_read(i),
                6..=8 => self.op_mmap_read(i),
                _ => self.op_reopen(i),
            };
        }
        match self.rng.below(100) {
            0..=17 => self.op_read(i),
            18..=39 => self.op_write(i),
            40..=46 => self.op_truncate(i),
            47..=58 => self.op_fallocate(i),
            59..=66 => self.op_mmap_read(i),
            67..=76 => self.op_mmap_write(i),
            77..=88 => self.op_copy_range(i),
            89..=93 => self.op_reopen(i),
            _ => self.op_fsync(i),
        }
    }
}

fn run_fsx(mode: &'static str, extra_opts: &str, seed_salt: u64) {
    let ops = env_u64("STRATAFS_FSX_OPS", 20_000);
    let seed = match std::env::var("STRATAFS_FSX_SEED") {
        Ok(s) => s.parse().expect("STRATAFS_FSX_SEED: a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (t.as_nanos() as u64) ^ seed_salt
        }
    };
    eprintln!("fsx ({mode}): seed={seed} ops={ops} (replay with STRATAFS_FSX_SEED={seed})");
    let mut rng = Rng(seed);
    let layers = Layers::new(1);
    // Files that start in the lower (two in subdirectories, so their parents are copied up
    // too), one of them empty, and two files created through the mount.
    let mut files = Vec::new();
    let mut lower_orig = Vec::new();
    for (rel, size) in [
        ("lo_a", 1 + rng.below(MAX_FILE)),
        ("dir/lo_b", 1 + rng.below(MAX_FILE / 4)),
        ("lo_empty", 0),
        ("dir/sub/lo_c", 1 + rng.below(MAX_FILE)),
    ] {
        let data = rng.bytes(size as usize);
        let p = layers.lower(0, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        lower_orig.push((p, data.clone()));
        files.push(FsxFile {
            rel: rel.to_string(),
            model: data,
            pristine_lower: true,
            ro: None,
            rw: None,
            frozen: Vec::new(),
        });
    }
    let _m = layers.mount(extra_opts);
    for rel in ["up_a", "dir/up_b"] {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(layers.m(rel))
            .unwrap_or_else(|e| panic!("create {rel} through the mount: {e}"));
        files.push(FsxFile {
            rel: rel.to_string(),
            model: Vec::new(),
            pristine_lower: false,
            ro: None,
            rw: Some(f),
            frozen: Vec::new(),
        });
    }
    let mut fsx = Fsx {
        layers,
        files,
        rng,
        seed,
        mode,
        op_no: 0,
        ops,
        recent: VecDeque::new(),
        counts: Default::default(),
        lower_orig,
        avoid_stale_ro: env_u64("STRATAFS_FSX_CLOSE_RO_AT_COPYUP", 0) != 0,
        ro_keeps_lower: mode == "passthrough",
    };
    let t0 = Instant::now();
    for n in 0..ops {
        fsx.op_no = n;
        fsx.step();
        if (n + 1) % FULL_CHECK_EVERY == 0 {
            for i in 0..fsx.files.len() {
                fsx.full_check(i);
            }
        }
    }
    fsx.op_no = ops;
    for i in 0..fsx.files.len() {
        fsx.check_frozen(i);
        fsx.files[i].frozen.clear();
        fsx.files[i].ro = None;
        fsx.files[i].rw = None;
        fsx.full_check(i);
    }
    for (p, data) in &fsx.lower_orig {
        let now = fs::read(p).unwrap();
        if &now != data {
            fsx.fail(format!("lower file {} changed (S2)", p.display()));
        }
    }
    let copied_up = fsx.files.iter().filter(|f| !f.pristine_lower).count();
    eprintln!(
        "fsx ({mode}): {ops} ops checked in {:.1}s, seed={seed}, {copied_up}/{} files written, per kind: {:?}",
        t0.elapsed().as_secs_f64(),
        fsx.files.len(),
        fsx.counts
    );
    // Remount and compare once more: what the model holds is what the upper kept.
    drop(_m);
    let _m = fsx.layers.mount(extra_opts);
    for i in 0..fsx.files.len() {
        fsx.full_check(i);
    }
}

#[test]
fn fsx_passthrough() {
    run_fsx("passthrough", "", 0);
}

#[test]
fn fsx_passthrough_upper() {
    run_fsx("passthrough=upper", "passthrough=upper", 0x0bbe_d0ff);
}

#[test]
fn fsx_no_passthrough() {
    run_fsx("passthrough=off", "passthrough=off", 0x05ee_d0ff);
}

/// The smallest form of what fsx checks across a copy-up: a descriptor opened read-only
/// while the file was still in the lower reads, after the copy-up and a write through
/// another descriptor, also once the page cache has dropped it:
/// - with `passthrough=upper` or `off`, the data written (kernel overlayfs does so since
///   Linux 4.19, when it began to reopen the upper file under an old descriptor);
/// - with `passthrough=all` (the default), the lower copy it was opened on, whose page
///   cache every mount of the image shares (S28; overlayfs before 4.19 did the same).
///
/// A fresh open reads the new data either way.
fn ro_fd_across_copy_up(extra_opts: &str, keeps_lower: bool) {
    let layers = Layers::new(1);
    layers.put(0, "f", &"L".repeat(10_000));
    let _m = layers.mount(extra_opts);
    let p = layers.m("f");
    let ro = File::open(&p).unwrap();
    let rw = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let fd = ro.as_raw_fd();
    let new = vec![b'U'; 20_000];
    std::os::unix::fs::FileExt::write_all_at(&rw, &new, 0).unwrap();
    // SAFETY: an open descriptor; drops the cached pages so the next read asks the daemon.
    unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut got = vec![0u8; 30_000];
    let n = std::os::unix::fs::FileExt::read_at(&ro, &mut got, 0).unwrap();
    got.truncate(n);
    let l_count = got.iter().filter(|b| **b == b'L').count();
    let want = if keeps_lower {
        vec![b'L'; 10_000]
    } else {
        new.clone()
    };
    assert!(
        got == want,
        "read-only fd opened before the copy-up reads {n} bytes ({l_count} of them the old \
         lower data 'L'), want {} bytes '{}'",
        want.len(),
        want[0] as char
    );
    let fresh = fs::read(&p).unwrap();
    assert!(fresh == new, "a fresh open reads {} bytes", fresh.len());
    // The object is one file under both descriptors and the path.
    let ino = fs::metadata(&p).unwrap().ino();
    assert_eq!(ro.metadata().unwrap().ino(), ino);
    assert_eq!(rw.metadata().unwrap().ino(), ino);
}

#[test]
fn ro_fd_across_copy_up_passthrough() {
    ro_fd_across_copy_up("", true);
}

#[test]
fn ro_fd_across_copy_up_passthrough_upper() {
    ro_fd_across_copy_up("passthrough=upper", false);
}

#[test]
fn ro_fd_across_copy_up_no_passthrough() {
    ro_fd_across_copy_up("passthrough=off", false);
}
