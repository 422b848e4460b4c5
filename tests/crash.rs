//! Crash safety (S12, issue 6): the daemon is killed with SIGKILL at random moments while
//! workers copy up large lower files (100 MiB each), append to them, rewrite, create,
//! rename and unlink files. After each kill the dead mount is cleaned (`fusermount3 -u -z`),
//! the layers are mounted again and checked against what the workers recorded: every file
//! is its old content or the complete result of the operation that was in flight (a write
//! cut by the kill may have landed in part, as on any filesystem), no copy-up is left
//! partial in the upper, the workdir's scratch dir is emptied at mount time, and every
//! whiteout in the upper stands for a lower entry.
//!
//! The workers record after each fsync (and fsyncdir) the checksum of the state they made
//! durable; the record is kept in the test process, outside the mount. A kill of the daemon
//! does not lose the page cache of the upper, so what the workers saw complete must be
//! there exactly; `fsync_*` tests below check what fsync itself must add (durability on
//! the upper's disk, tried with a simulated power cut on a loop-mounted ext4).
//!
//! STRATAFS_CRASH_ROUNDS sets the number of kill rounds (default 20); STRATAFS_CRASH_SEED
//! replays a run (the seed is printed at the start and in every failure). The summary line
//! (`--nocapture`) counts rounds, operations, kills that cut a copy-up in the middle, and
//! whiteouts that sit next to an upper entry of the same name (harmless: a whiteout never
//! hides its own layer, S5; a rename onto a whited-out name leaves them).

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{is_mounted, kill, spawn_foreground_logged, Layers, Rng};

const BIG: u64 = 100 << 20;
const WORKERS: usize = 2;
/// Names a worker uses in its directory `w<N>`.
const NAMES: usize = 10;

// ----------------------------------------------------------------------------------------
// Small tools: PRNG, checksums, a foreground daemon that can be SIGKILLed.
// ----------------------------------------------------------------------------------------

impl Rng {
    /// `min + below(span)` random bytes.
    fn bytes_upto(&mut self, min: u64, span: u64) -> Vec<u8> {
        let n = min + self.below(span);
        self.bytes(n as usize)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed_from_env(name: &str) -> u64 {
    match std::env::var(name) {
        Ok(s) => s.parse().expect("seed: a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// (length, checksum) of a byte stream; the checksum is a streaming SipHash, so a state
/// can be extended by appending bytes.
type Digest = (u64, u64);

fn digest_bytes(b: &[u8]) -> Digest {
    let mut h = DefaultHasher::new();
    h.write(b);
    (b.len() as u64, h.finish())
}

fn digest_file(p: &Path) -> io::Result<Digest> {
    let mut f = File::open(p)?;
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.write(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finish()))
}

fn wait_unmounted(mnt: &Path, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while is_mounted(mnt) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Cleans a dead (or live) FUSE mount the way an admin would: lazy unmount.
fn lazy_unmount(mnt: &Path) {
    if !is_mounted(mnt) {
        return;
    }
    let ok = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mnt)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
    assert!(wait_unmounted(mnt, 10), "{} still mounted", mnt.display());
}

/// A daemon started in the foreground (`-f`), so that its pid is known and it can be
/// killed. Dropping it kills it if still alive and cleans the mount.
struct Daemon {
    child: Option<Child>,
    mnt: PathBuf,
}

impl Daemon {
    fn start(opts: &str, mnt: &Path) -> Daemon {
        // The daemon's own messages go to the test's stderr: a crash test wants them.
        let child = spawn_foreground_logged(opts, mnt, Stdio::inherit());
        Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
        }
    }

    /// SIGKILL, reap, and clean the dead mount.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Our own child process, not yet reaped.
            let _ = kill(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
        lazy_unmount(&self.mnt);
    }

    /// A clean unmount: umount, then the daemon exits by itself.
    fn unmount(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("umount").arg(&self.mnt).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        lazy_unmount(&self.mnt);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill9();
        } else {
            lazy_unmount(&self.mnt);
        }
    }
}

fn fsync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

// ----------------------------------------------------------------------------------------
// The model: what each worker's directory holds.
// ----------------------------------------------------------------------------------------

/// The data of a lower big file: its hasher state after all its bytes, and its length.
struct Base {
    len: u64,
    hasher: DefaultHasher,
}

#[derive(Clone, PartialEq, Eq)]
enum Content {
    /// Lower big file `base` followed by `extra` (appended bytes).
    Big {
        base: usize,
        extra: Vec<u8>,
    },
    Small(Vec<u8>),
}

impl Content {
    fn len(&self, bases: &[Base]) -> u64 {
        match self {
            Content::Big { base, extra } => bases[*base].len + extra.len() as u64,
            Content::Small(v) => v.len() as u64,
        }
    }

    /// The content with `data[..k]` appended.
    fn appended(&self, data: &[u8]) -> Content {
        match self {
            Content::Big { base, extra } => {
                let mut e = extra.clone();
                e.extend_from_slice(data);
                Content::Big {
                    base: *base,
                    extra: e,
                }
            }
            Content::Small(v) => {
                let mut v = v.clone();
                v.extend_from_slice(data);
                Content::Small(v)
            }
        }
    }

    fn digest(&self, bases: &[Base]) -> Digest {
        match self {
            Content::Big { base, extra } => {
                let mut h = bases[*base].hasher.clone();
                h.write(extra);
                (bases[*base].len + extra.len() as u64, h.finish())
            }
            Content::Small(v) => digest_bytes(v),
        }
    }

    fn describe(&self, bases: &[Base]) -> String {
        match self {
            Content::Big { base, extra } => format!(
                "big lower #{base} + {} appended bytes = {} bytes",
                extra.len(),
                self.len(bases)
            ),
            Content::Small(v) => format!("{} bytes", v.len()),
        }
    }
}

/// Name -> content of one worker's directory.
type Model = BTreeMap<String, Content>;

/// An operation of a worker. The one in flight when the daemon dies may or may not have
/// happened, and a write cut short may have landed in part (a prefix, page by page).
#[derive(Clone)]
enum Op {
    /// open(O_WRONLY|O_APPEND) (copy-up of a lower file), write, fsync.
    Append { name: String, data: Vec<u8> },
    /// open(O_RDWR) (copy-up), pwrite at `off`, fdatasync.
    Rewrite {
        name: String,
        off: u64,
        data: Vec<u8>,
    },
    /// open(O_CREAT|O_EXCL), write, fsync, fsyncdir.
    Create { name: String, data: Vec<u8> },
    /// rename (copy-up of a lower source, whiteout at its old name), fsyncdir.
    Rename { from: String, to: String },
    /// unlink (whiteout where a lower has the name), fsyncdir.
    Unlink { name: String },
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Append { name, data } => format!("append {} bytes to {name}", data.len()),
            Op::Rewrite { name, off, data } => {
                format!("pwrite {} bytes at {off} into {name}", data.len())
            }
            Op::Create { name, data } => format!("create {name} with {} bytes", data.len()),
            Op::Rename { from, to } => format!("rename {from} -> {to}"),
            Op::Unlink { name } => format!("unlink {name}"),
        }
    }

    /// The model after the whole operation.
    fn apply(&self, m: &mut Model) {
        match self {
            Op::Append { name, data } => {
                let c = m[name].appended(data);
                m.insert(name.clone(), c);
            }
            Op::Rewrite { name, off, data } => {
                let c = rewritten(&m[name], *off, data);
                m.insert(name.clone(), c);
            }
            Op::Create { name, data } => {
                m.insert(name.clone(), Content::Small(data.clone()));
            }
            Op::Rename { from, to } => {
                let c = m.remove(from).unwrap();
                m.insert(to.clone(), c);
            }
            Op::Unlink { name } => {
                m.remove(name);
            }
        }
    }

    fn touched(&self) -> Vec<&str> {
        match self {
            Op::Append { name, .. }
            | Op::Rewrite { name, .. }
            | Op::Create { name, .. }
            | Op::Unlink { name } => vec![name.as_str()],
            Op::Rename { from, to } => vec![from.as_str(), to.as_str()],
        }
    }
}

fn rewritten(c: &Content, off: u64, data: &[u8]) -> Content {
    let Content::Small(v) = c else {
        panic!("rewrite of a big file")
    };
    if data.is_empty() {
        return c.clone();
    }
    let mut v = v.clone();
    let end = off as usize + data.len();
    if v.len() < end {
        v.resize(end, 0);
    }
    v[off as usize..end].copy_from_slice(data);
    Content::Small(v)
}

/// Prefix lengths a write of `len` bytes at `off` may have reached when cut short: whole
/// pages (or folios, which are page-aligned in the file), nothing, or everything.
fn cut_points(off: u64, len: usize) -> Vec<usize> {
    let mut v = vec![0, len];
    let mut k = (4096 - off % 4096) % 4096;
    while (k as usize) < len {
        v.push(k as usize);
        k += 4096;
    }
    v
}

fn initial_model(w: usize, rng: &mut Rng) -> (Model, Vec<(String, Vec<u8>)>) {
    let mut m = Model::new();
    m.insert(
        "f0".into(),
        Content::Big {
            base: w,
            extra: Vec::new(),
        },
    );
    let mut smalls = Vec::new();
    for i in 1..6 {
        let data = rng.bytes_upto(1, 32 << 10);
        m.insert(format!("f{i}"), Content::Small(data.clone()));
        smalls.push((format!("f{i}"), data));
    }
    (m, smalls)
}

// ----------------------------------------------------------------------------------------
// Workers.
// ----------------------------------------------------------------------------------------

struct WorkerResult {
    /// How long the first operation took (a copy-up of the big file after a reset).
    first_ms: Option<u128>,
    model: Model,
    in_flight: Option<Op>,
    done: u64,
    /// The durable records (after fsync) of this round, newest last, for failure reports.
    journal: Vec<String>,
    /// An error while the daemon was still alive: a test failure.
    error: Option<String>,
}

fn choose_op(m: &Model, rng: &mut Rng, first: bool, bases: &[Base]) -> Op {
    let present: Vec<&String> = m.keys().collect();
    let absent: Vec<String> = (0..NAMES)
        .map(|i| format!("f{i}"))
        .filter(|n| !m.contains_key(n))
        .collect();
    let bigs: Vec<&String> = m
        .iter()
        .filter(|(_, c)| matches!(c, Content::Big { .. }))
        .map(|(n, _)| n)
        .collect();
    let smalls: Vec<&String> = m
        .iter()
        .filter(|(_, c)| matches!(c, Content::Small(_)))
        .map(|(n, _)| n)
        .collect();
    let pick = |v: &[&String], rng: &mut Rng| v[rng.below(v.len() as u64) as usize].clone();
    // A round starts with a copy-up of the big file when it is still in the lower: by a
    // write-open (append) or by a rename.
    if first && !bigs.is_empty() {
        let name = pick(&bigs, rng);
        if rng.chance(25) {
            let to = absent
                .first()
                .cloned()
                .unwrap_or_else(|| pick(&present, rng));
            if to != name {
                return Op::Rename { from: name, to };
            }
        }
        let data = rng.bytes_upto(1, 64 << 10);
        return Op::Append { name, data };
    }
    loop {
        let r = rng.below(100);
        if r < 35 && !present.is_empty() {
            let name = if !bigs.is_empty() && rng.chance(70) {
                pick(&bigs, rng)
            } else {
                pick(&present, rng)
            };
            let max = if m[&name].len(bases) > (1 << 20) {
                256 << 10
            } else {
                16 << 10
            };
            let data = rng.bytes_upto(1, max);
            return Op::Append { name, data };
        } else if r < 50 && !smalls.is_empty() {
            let name = pick(&smalls, rng);
            let len = m[&name].len(bases);
            let off = rng.below(len + 4096);
            let data = rng.bytes_upto(1, 24 << 10);
            return Op::Rewrite { name, off, data };
        } else if r < 65 && !absent.is_empty() {
            let name = absent[rng.below(absent.len() as u64) as usize].clone();
            let data = rng.bytes_upto(0, 40 << 10);
            return Op::Create { name, data };
        } else if r < 85 && !present.is_empty() {
            let from = pick(&present, rng);
            let to = format!("f{}", rng.below(NAMES as u64));
            if to != from {
                return Op::Rename { from, to };
            }
        } else if r >= 85 && present.len() > 2 {
            let name = pick(&present, rng);
            // The big file is unlinked only now and then (the round reset brings it back).
            if matches!(m[&name], Content::Big { .. }) && !rng.chance(15) {
                continue;
            }
            return Op::Unlink { name };
        }
    }
}

fn run_op(dir: &Path, op: &Op) -> io::Result<()> {
    match op {
        Op::Append { name, data } => {
            let mut f = OpenOptions::new().append(true).open(dir.join(name))?;
            f.write_all(data)?;
            f.sync_all()
        }
        Op::Rewrite { name, off, data } => {
            let f = OpenOptions::new().write(true).open(dir.join(name))?;
            f.write_all_at(data, *off)?;
            f.sync_data()
        }
        Op::Create { name, data } => {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(dir.join(name))?;
            f.write_all(data)?;
            f.sync_all()?;
            fsync_dir(dir)
        }
        Op::Rename { from, to } => {
            fs::rename(dir.join(from), dir.join(to))?;
            fsync_dir(dir)
        }
        Op::Unlink { name } => {
            fs::remove_file(dir.join(name))?;
            fsync_dir(dir)
        }
    }
}

fn worker(
    dir: PathBuf,
    mut model: Model,
    mut rng: Rng,
    killed: Arc<AtomicBool>,
    bases: Arc<Vec<Base>>,
) -> WorkerResult {
    let mut done = 0;
    let mut journal = Vec::new();
    let mut first = true;
    let mut first_ms = None;
    loop {
        let op = choose_op(&model, &mut rng, first, &bases);
        let t = Instant::now();
        let r = run_op(&dir, &op);
        if first && r.is_ok() {
            first_ms = Some(t.elapsed().as_millis());
        }
        first = false;
        match r {
            Ok(()) => {
                op.apply(&mut model);
                done += 1;
                let sums: Vec<String> = op
                    .touched()
                    .iter()
                    .map(|n| match model.get(*n) {
                        Some(c) => format!("{n}={:?}", c.digest(&bases)),
                        None => format!("{n}=absent"),
                    })
                    .collect();
                journal.push(format!("durable: {} -> {}", op.describe(), sums.join(" ")));
            }
            Err(e) => {
                let error = if killed.load(Ordering::SeqCst) {
                    None
                } else {
                    Some(format!(
                        "{} failed while the daemon was alive: {e}",
                        op.describe()
                    ))
                };
                return WorkerResult {
                    first_ms,
                    model,
                    in_flight: Some(op),
                    done,
                    journal,
                    error,
                };
            }
        }
        if killed.load(Ordering::SeqCst) {
            // The daemon died after this op completed: nothing is in flight.
            return WorkerResult {
                first_ms,
                model,
                in_flight: None,
                done,
                journal,
                error: None,
            };
        }
    }
}

// ----------------------------------------------------------------------------------------
// Checking one worker's directory after the remount.
// ----------------------------------------------------------------------------------------

/// What the merged view shows in a worker's dir: name -> digest.
fn observe(dir: &Path) -> Result<BTreeMap<String, Digest>, String> {
    let mut seen = BTreeMap::new();
    let rd = fs::read_dir(dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
    for e in rd {
        let e = e.map_err(|e| format!("readdir {}: {e}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let md = fs::symlink_metadata(&p).map_err(|e| format!("lstat {}: {e}", p.display()))?;
        if !md.is_file() {
            return Err(format!("{} is not a regular file", p.display()));
        }
        let d = digest_file(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        if d.0 != md.len() {
            return Err(format!(
                "{}: stat says {} bytes, read gives {}",
                p.display(),
                md.len(),
                d.0
            ));
        }
        seen.insert(name, d);
    }
    Ok(seen)
}

/// Finds the state the worker's directory is in: the model as recorded, or the model with
/// the in-flight operation done (in part, for a cut write). Returns the resolved model.
fn resolve(
    model: &Model,
    op: Option<&Op>,
    seen: &BTreeMap<String, Digest>,
    bases: &[Base],
) -> Result<Model, String> {
    let touched: Vec<&str> = op.map(|o| o.touched()).unwrap_or_default();
    let describe = |n: &str| -> String {
        match model.get(n) {
            Some(c) => format!("{} {:?}", c.describe(bases), c.digest(bases)),
            None => "absent".into(),
        }
    };
    // Names the operation did not touch: exactly as recorded.
    for n in model.keys().chain(seen.keys()) {
        if touched.contains(&n.as_str()) {
            continue;
        }
        let want = model.get(n).map(|c| c.digest(bases));
        let got = seen.get(n).copied();
        if want != got {
            return Err(format!(
                "{n}: found {got:?}, recorded {} (not touched by the op in flight: {})",
                describe(n),
                op.map(|o| o.describe()).unwrap_or_else(|| "none".into())
            ));
        }
    }
    let Some(op) = op else {
        return Ok(model.clone());
    };
    let same = |n: &str| seen.get(n).copied() == model.get(n).map(|c| c.digest(bases));
    let mut out = model.clone();
    let ok = match op {
        Op::Append { name, data } => {
            let old = &model[name];
            match seen.get(name) {
                Some(d) if d.0 >= old.len(bases) && d.0 - old.len(bases) <= data.len() as u64 => {
                    let k = (d.0 - old.len(bases)) as usize;
                    let c = old.appended(&data[..k]);
                    let good = c.digest(bases) == *d;
                    out.insert(name.clone(), c);
                    good
                }
                _ => false,
            }
        }
        Op::Rewrite { name, off, data } => {
            let old = &model[name];
            let mut found = false;
            for k in cut_points(*off, data.len()) {
                let c = rewritten(old, *off, &data[..k]);
                if seen.get(name) == Some(&c.digest(bases)) {
                    out.insert(name.clone(), c);
                    found = true;
                    break;
                }
            }
            // A cut before the first byte leaves the old file (already copied up or not).
            found || same(name)
        }
        Op::Create { name, data } => match seen.get(name) {
            None => true,
            Some(d) if d.0 <= data.len() as u64 => {
                let c = Content::Small(data[..d.0 as usize].to_vec());
                let good = c.digest(bases) == *d;
                out.insert(name.clone(), c);
                good
            }
            _ => false,
        },
        Op::Rename { from, to } => {
            if same(from) && same(to) {
                true
            } else {
                op.apply(&mut out);
                !seen.contains_key(from) && seen.get(to).copied() == Some(model[from].digest(bases))
            }
        }
        Op::Unlink { name } => {
            if seen.contains_key(name) {
                same(name)
            } else {
                out.remove(name);
                true
            }
        }
    };
    if ok {
        Ok(out)
    } else {
        let found: Vec<String> = op
            .touched()
            .iter()
            .map(|n| format!("{n}: found {:?}, recorded {}", seen.get(*n), describe(n)))
            .collect();
        Err(format!(
            "state after the kill is neither before nor after '{}': {}",
            op.describe(),
            found.join("; ")
        ))
    }
}

// ----------------------------------------------------------------------------------------
// The kill test.
// ----------------------------------------------------------------------------------------

/// Writes `len` pseudo-random bytes (real data, no holes) and returns the file's Base.
fn write_big(p: &Path, len: u64, rng: &mut Rng) -> Base {
    let mut f = File::create(p).unwrap();
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        h.write(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    // Clean pages only, so that drop_cache() can really drop them.
    f.sync_all().unwrap();
    Base { len, hasher: h }
}

/// Drops the page cache of a (clean) file, so that its next copy-up reads the disk: slower,
/// like a cold image layer, which widens the window for a kill in the middle of it.
fn drop_cache(p: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = File::open(p) {
        // SAFETY: an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn scratch_entries(work: &Path) -> Vec<(String, u64)> {
    match fs::read_dir(work.join("stratafs.work")) {
        Ok(rd) => rd
            .map(|e| {
                let e = e.unwrap();
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn sigkill_during_copy_up_append_rename_unlink() {
    let rounds = env_u64("STRATAFS_CRASH_ROUNDS", 20);
    let seed = seed_from_env("STRATAFS_CRASH_SEED");
    eprintln!("crash: seed={seed} rounds={rounds} (replay with STRATAFS_CRASH_SEED={seed})");
    let fail = |round: u64, msg: String, journal: &VecDeque<String>| -> ! {
        let j: Vec<&String> = journal.iter().collect();
        panic!(
            "crash test FAILED in round {round} (seed={seed}): {msg}\nlast durable records:\n  {}",
            j.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    };
    let mut rng = Rng(seed);

    // A self-check of the checksum: it must not depend on how the stream is cut.
    let probe = rng.bytes(100_000);
    let mut h = DefaultHasher::new();
    for c in probe.chunks(777) {
        h.write(c);
    }
    assert_eq!(
        h.finish(),
        digest_bytes(&probe).1,
        "DefaultHasher is not streaming"
    );

    let layers = Layers::new(1);
    let t0 = Instant::now();
    let mut bases = Vec::new();
    let mut init = Vec::new();
    for w in 0..WORKERS {
        let d = layers.lower(0, &format!("w{w}"));
        fs::create_dir_all(&d).unwrap();
        bases.push(write_big(&d.join("f0"), BIG, &mut rng));
        let (m, smalls) = initial_model(w, &mut rng);
        for (n, data) in smalls {
            fs::write(d.join(n), data).unwrap();
        }
        init.push(m);
    }
    let bases = Arc::new(bases);
    let lower_sums: Vec<Digest> = (0..WORKERS)
        .map(|w| digest_file(&layers.lower(0, &format!("w{w}/f0"))).unwrap())
        .collect();
    eprintln!(
        "crash: {} x {} MiB lower files written in {:.1}s",
        WORKERS,
        BIG >> 20,
        t0.elapsed().as_secs_f64()
    );
    let opts = layers.opts();
    let mut models = init.clone();
    let mut journal: VecDeque<String> = VecDeque::new();
    let (mut ops_done, mut in_flight_ops, mut cut_copy_ups, mut pending_whiteouts) =
        (0u64, 0u64, 0u64, 0u64);
    let mut resets = 0u64;
    for round in 0..rounds {
        // Now and then a worker's upper dir is removed (offline, as an admin would), so
        // that its big file is in the lower again and the next round copies it up anew.
        let mut reset_now = Vec::new();
        for (w, model) in models.iter_mut().enumerate() {
            if round == 0 || rng.chance(60) {
                let _ = fs::remove_dir_all(layers.upper.join(format!("w{w}")));
                *model = init[w].clone();
                resets += 1;
                reset_now.push(w);
                drop_cache(&layers.lower(0, &format!("w{w}/f0")));
            }
        }

        // Run the workers and kill the daemon under them.
        let mut daemon = Daemon::start(&opts, &layers.mnt);
        let killed = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (w, model) in models.iter().enumerate() {
            let dir = layers.m(&format!("w{w}"));
            let (m, r, k, b) = (
                model.clone(),
                Rng(rng.next()),
                killed.clone(),
                bases.clone(),
            );
            handles.push(std::thread::spawn(move || worker(dir, m, r, k, b)));
        }
        // Kill early (while the big files are copied up, about 100 ms each) in most rounds
        // that start with a copy-up, later in the others.
        let delay = if !reset_now.is_empty() && rng.chance(70) {
            rng.below(250)
        } else {
            rng.below(1200)
        };
        std::thread::sleep(Duration::from_millis(delay));
        killed.store(true, Ordering::SeqCst);
        daemon.kill9();
        let results: Vec<WorkerResult> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (w, r) in results.iter().enumerate() {
            for j in &r.journal {
                if journal.len() == 30 {
                    journal.pop_front();
                }
                journal.push_back(format!("round {round} w{w} {j}"));
            }
            if let Some(e) = &r.error {
                fail(round, format!("worker {w}: {e}"), &journal);
            }
            ops_done += r.done;
            in_flight_ops += r.in_flight.is_some() as u64;
        }

        // What the kill left in the workdir (an interrupted copy-up, a partial file).
        let left = scratch_entries(&layers.work);
        let partial = left.iter().any(|(_, len)| *len < BIG);
        cut_copy_ups += (!left.is_empty()) as u64;

        // Mount again and check.
        let mut daemon = Daemon::start(&opts, &layers.mnt);
        let now = scratch_entries(&layers.work);
        if !now.is_empty() {
            fail(
                round,
                format!("the scratch dir still holds {now:?} after the remount"),
                &journal,
            );
        }
        for (w, r) in results.iter().enumerate() {
            let dir = layers.m(&format!("w{w}"));
            let seen = observe(&dir).unwrap_or_else(|e| fail(round, e, &journal));
            let m = resolve(&r.model, r.in_flight.as_ref(), &seen, &bases).unwrap_or_else(|e| {
                fail(
                    round,
                    format!(
                        "worker {w} (killed after {delay} ms, workdir leftovers {left:?}): {e}"
                    ),
                    &journal,
                )
            });
            // The upper holds complete files only, each the one the merged view shows, and
            // whiteouts only for names a lower has.
            let udir = layers.upper.join(format!("w{w}"));
            if let Ok(rd) = fs::read_dir(&udir) {
                for e in rd {
                    let e = e.unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ft = e.file_type().unwrap();
                    if let Some(hidden) = name.strip_prefix(".wh.") {
                        if !layers.lower(0, &format!("w{w}/{hidden}")).exists() {
                            fail(
                                round,
                                format!("whiteout {name} in the upper hides nothing"),
                                &journal,
                            );
                        }
                        if udir.join(hidden).exists() {
                            pending_whiteouts += 1;
                        }
                        continue;
                    }
                    if !ft.is_file() || ft.is_char_device() {
                        fail(round, format!("unexpected {name} in the upper"), &journal);
                    }
                    let d = digest_file(&e.path()).unwrap();
                    if seen.get(&name) != Some(&d) {
                        fail(
                            round,
                            format!(
                                "upper w{w}/{name} is {d:?} but the merged view shows {:?} \
                                 (a partial copy-up?)",
                                seen.get(&name)
                            ),
                            &journal,
                        );
                    }
                }
            }
            models[w] = m;
        }
        let extra: Vec<String> = fs::read_dir(&layers.upper)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !(n.starts_with('w') && n.len() == 2))
            .collect();
        if !extra.is_empty() {
            fail(
                round,
                format!("stray entries in the upper: {extra:?}"),
                &journal,
            );
        }
        daemon.unmount();
        eprintln!(
            "crash round {round}: reset {reset_now:?}, killed after {delay} ms, first op {:?} ms, ops {:?}, in flight {:?}, workdir leftovers {left:?}{}",
            results.iter().map(|r| r.first_ms).collect::<Vec<_>>(),
            results.iter().map(|r| r.done).collect::<Vec<_>>(),
            results
                .iter()
                .map(|r| r.in_flight.as_ref().map(|o| o.describe()))
                .collect::<Vec<_>>(),
            if partial { " (partial copy-up)" } else { "" }
        );
    }
    for (w, want) in lower_sums.iter().enumerate() {
        let now = digest_file(&layers.lower(0, &format!("w{w}/f0"))).unwrap();
        assert_eq!(now, *want, "lower file w{w}/f0 changed (S2)");
    }
    if cut_copy_ups == 0 {
        eprintln!("crash: note: no kill landed in the middle of a copy-up this time");
    }
    eprintln!(
        "crash: {rounds} kill rounds survived in {:.1}s (seed={seed}): {ops_done} operations \
         completed, {in_flight_ops} cut by a kill, {cut_copy_ups} rounds killed during a \
         copy-up, {resets} resets, {pending_whiteouts} whiteouts next to an upper entry",
        t0.elapsed().as_secs_f64()
    );
}

// ----------------------------------------------------------------------------------------
// fsync and fsyncdir reach the upper.
// ----------------------------------------------------------------------------------------

fn upper_opts(lower: &Path, upper: &Path, work: &Path, extra: &str) -> String {
    let mut o = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    if !extra.is_empty() {
        o.push(',');
        o.push_str(extra);
    }
    o
}

fn fsync_then_sigkill(extra: &str) {
    let layers = Layers::new(1);
    let mut rng = Rng(7);
    fs::create_dir_all(layers.lower(0, "dir")).unwrap();
    fs::create_dir_all(layers.lower(0, "lowonly")).unwrap();
    let big = rng.bytes(32 << 20);
    fs::write(layers.lower(0, "dir/big"), &big).unwrap();
    drop_cache(&layers.lower(0, "dir/big"));
    let opts = upper_opts(&layers.lowers[0], &layers.upper, &layers.work, extra);
    let mut d = Daemon::start(&opts, &layers.mnt);

    // A new file: after fsync its data is in the upper file.
    let data = rng.bytes(1 << 20);
    let mut f = File::create(layers.m("dir/new")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    assert!(
        fs::read(layers.upper.join("dir/new")).unwrap() == data,
        "after fsync the upper file does not hold the data written"
    );
    drop(f);
    // fsyncdir of an upper dir, of the root, and of a dir that is only in the lower.
    for dir in ["dir", "", "lowonly"] {
        fsync_dir(&layers.m(dir)).unwrap_or_else(|e| panic!("fsyncdir '{dir}': {e}"));
    }
    // A rename of an upper file, then fsyncdir.
    fs::rename(layers.m("dir/new"), layers.m("dir/renamed")).unwrap();
    fsync_dir(&layers.m("dir")).unwrap();

    // Copy-up by a write-open, a write in the middle, fsync, and SIGKILL right away.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(layers.m("dir/big"))
        .unwrap();
    let marker = rng.bytes(4096);
    f.write_all_at(&marker, 10 << 20).unwrap();
    f.sync_all().unwrap();
    d.kill9();
    drop(f);
    let mut want = big.clone();
    want[10 << 20..(10 << 20) + 4096].copy_from_slice(&marker);
    let up = fs::read(layers.upper.join("dir/big")).unwrap();
    assert!(
        up.len() == want.len() && up == want,
        "upper dir/big after copy-up + write + fsync + SIGKILL: {} bytes, want {} (complete \
         lower data with the written page)",
        up.len(),
        want.len()
    );
    assert!(!layers.upper.join("dir/new").exists());
    assert!(fs::read(layers.upper.join("dir/renamed")).unwrap() == data);
    let left = scratch_entries(&layers.work);
    assert!(
        left.is_empty(),
        "scratch after a finished copy-up: {left:?}"
    );

    // And the merged view after mounting again.
    let mut d = Daemon::start(&opts, &layers.mnt);
    assert!(fs::read(layers.m("dir/big")).unwrap() == want);
    assert!(fs::read(layers.m("dir/renamed")).unwrap() == data);
    d.unmount();
}

#[test]
fn fsync_reaches_the_upper_and_survives_sigkill() {
    fsync_then_sigkill("");
}

#[test]
fn fsync_reaches_the_upper_and_survives_sigkill_no_passthrough() {
    fsync_then_sigkill("passthrough=off");
}

/// A loop-mounted ext4 image; unmounted (and its loop device freed) when dropped.
struct LoopFs {
    dir: PathBuf,
}

impl LoopFs {
    fn mount(image: &Path, dir: &Path) -> LoopFs {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(image)
            .arg(dir)
            .output()
            .expect("run mount -o loop");
        assert!(
            out.status.success(),
            "mount -o loop {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        LoopFs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        for _ in 0..100 {
            if !is_mounted(&self.dir) {
                return;
            }
            let ok = Command::new("umount")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Lazily; the loop device (autoclear) goes with the last user.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A power cut, simulated: the upper is an ext4 image on a loop device; the image file is
/// copied while the filesystem is live, which keeps exactly what reached the "disk" (the
/// loop device) and loses what only sat in the upper's page cache. The copy is mounted
/// (the journal replays) and stratafs is mounted on it: what fsync and fsyncdir covered
/// must be there, and a copy-up, fsynced or not, must show the old lower file or the
/// complete new one (S12), never an empty or partial file.
#[test]
fn fsync_survives_a_power_cut() {
    if !have("mkfs.ext4") || !Path::new("/dev/loop-control").exists() {
        eprintln!(
            "SKIPPED fsync_survives_a_power_cut: needs mkfs.ext4 (e2fsprogs) and loop devices"
        );
        return;
    }
    let layers = Layers::new(1);
    let root = layers.tmp.path().to_path_buf();
    let image = root.join("upper.img");
    File::create(&image).unwrap().set_len(96 << 20).unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&image)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4");
    let imgdir = root.join("img");
    let img = LoopFs::mount(&image, &imgdir);
    let (upper, work) = (imgdir.join("upper"), imgdir.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();

    let mut rng = Rng(11);
    let big = rng.bytes(8 << 20);
    let meta = rng.bytes(2 << 20);
    fs::write(layers.lower(0, "big"), &big).unwrap();
    fs::write(layers.lower(0, "meta"), &meta).unwrap();
    fs::create_dir(layers.lower(0, "d")).unwrap();
    fs::write(layers.lower(0, "d/lowfile"), b"low\n").unwrap();
    let opts = upper_opts(&layers.lowers[0], &upper, &work, "");
    let mut d = Daemon::start(&opts, &layers.mnt);

    // What the user makes durable: a copy-up + write + fsync; a new file + fsync +
    // fsyncdir; a rename + fsyncdir; an unlink of a lower file (a whiteout) + fsyncdir.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(layers.m("big"))
        .unwrap();
    let marker = rng.bytes(4096);
    f.write_all_at(&marker, 1 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let newdata = rng.bytes(256 << 10);
    let mut f = File::create(layers.m("d/new")).unwrap();
    f.write_all(&newdata).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fsync_dir(&layers.m("d")).unwrap();
    fs::write(layers.m("r1"), b"renamed\n").unwrap();
    File::open(layers.m("r1")).unwrap().sync_all().unwrap();
    fs::rename(layers.m("r1"), layers.m("r2")).unwrap();
    fs::remove_file(layers.m("d/lowfile")).unwrap();
    fsync_dir(&layers.mnt).unwrap();
    fsync_dir(&layers.m("d")).unwrap();

    // A copy-up nobody fsyncs (chmod copies data and metadata up), then some other file's
    // fsync commits the journal, which holds the copy-up's rename into the upper.
    fs::set_permissions(
        layers.m("meta"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut f = File::create(layers.m("trigger")).unwrap();
    f.write_all(b"t").unwrap();
    f.sync_all().unwrap();
    drop(f);

    // The power cut.
    let cut = root.join("cut.img");
    fs::copy(&image, &cut).unwrap();
    d.kill9();
    drop(img);

    // "Reboot": mount the image as it was at the cut, and stratafs on it.
    let cutdir = root.join("cutmnt");
    let _cutfs = LoopFs::mount(&cut, &cutdir);
    let opts = upper_opts(
        &layers.lowers[0],
        &cutdir.join("upper"),
        &cutdir.join("work"),
        "",
    );
    let mut d = Daemon::start(&opts, &layers.mnt);
    let mut want = big.clone();
    want[1 << 20..(1 << 20) + 4096].copy_from_slice(&marker);
    let got = fs::read(layers.m("big")).unwrap();
    assert!(
        got == want,
        "big (copy-up + write + fsync) after the power cut: {} bytes, not the fsynced data",
        got.len()
    );
    assert!(
        fs::read(layers.m("d/new")).ok().as_deref() == Some(&newdata[..]),
        "d/new (fsync + fsyncdir) lost in the power cut"
    );
    assert!(
        !layers.m("r1").exists(),
        "r1 came back after rename + fsyncdir"
    );
    assert_eq!(
        fs::read(layers.m("r2")).ok().as_deref(),
        Some(&b"renamed\n"[..])
    );
    assert!(
        !layers.m("d/lowfile").exists(),
        "d/lowfile came back after unlink + fsyncdir"
    );
    let got = fs::read(layers.m("meta")).unwrap();
    let up = fs::metadata(cutdir.join("upper/meta")).map(|m| m.len());
    let differ = got.iter().zip(meta.iter()).filter(|(a, b)| a != b).count();
    let zeros = got.iter().filter(|b| **b == 0).count();
    assert!(
        got == meta,
        "meta (a copy-up by chmod, not fsynced by the user) after the power cut: the merged \
         view shows {} bytes ({differ} differ from the lower's, {zeros} are zero) instead of \
         the lower's {} bytes (upper copy: {up:?} bytes). S12: the copied data must reach \
         the disk before the copy-up's rename does",
        got.len(),
        meta.len()
    );
    d.unmount();
}
