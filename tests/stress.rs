//! Concurrency stress (issue 6): N writer processes and some reader processes against one
//! mount served by several FUSE threads (`-o threads=4`). Writers create, write, append,
//! rename (files, their own directories, and merged directories that come from two
//! lowers), unlink, link, mkdir, rmdir and list, all inside the same shared directories;
//! readers list those directories and read whatever they find.
//!
//! Determinism: each writer owns the names it touches (`w<i>_...`); the shared
//! directories are only ever read by others, and names are never reused. So the order
//! between processes does not matter, and the final merged tree must equal the initial
//! tree with every writer's log of successful operations replayed in order. Each writer
//! also checks its own view after every change (file contents, its names in listings).
//!
//! Bounded time: every worker is a child process (this test binary run again with
//! `STRATAFS_STRESS_ROLE` set). A watchdog kills them after a deadline, then checks that
//! the mount still answers a stat within a timeout; a hung mount is aborted through
//! fusectl so the test fails instead of hanging.
//!
//! `STRATAFS_STRESS_SECS` (default 10) sets how long the workers run and
//! `STRATAFS_STRESS_WRITERS` (default 8) how many writers there are; scripts may raise both.
mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHARED: [&str; 3] = ["s0", "s1", "s2"];
fn readers() -> usize {
    env_num("STRATAFS_STRESS_READERS", 2) as usize
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ------------------------------------------------------------------------------ model

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ent {
    Dir,
    /// A regular file: its model inode (hard links share one).
    File(u64),
}

/// The merged tree as the operations should leave it: path -> entry, inode -> content.
#[derive(Clone, Debug, Default)]
struct Model {
    entries: BTreeMap<String, Ent>,
    data: BTreeMap<u64, String>,
    next_ino: u64,
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(a, _)| a).unwrap_or("")
}

fn name_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(_, b)| b).unwrap_or(p)
}

fn is_under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

impl Model {
    fn mkdir(&mut self, p: &str) {
        self.entries.insert(p.to_string(), Ent::Dir);
    }

    fn create(&mut self, p: &str, content: &str) {
        self.next_ino += 1;
        self.data.insert(self.next_ino, content.to_string());
        self.entries.insert(p.to_string(), Ent::File(self.next_ino));
    }

    fn content(&self, p: &str) -> Option<&String> {
        match self.entries.get(p)? {
            Ent::File(i) => self.data.get(i),
            Ent::Dir => None,
        }
    }

    fn write(&mut self, p: &str, content: &str, append: bool) {
        let Some(Ent::File(i)) = self.entries.get(p) else {
            panic!("model: write to non-file {p}")
        };
        let d = self.data.get_mut(i).unwrap();
        if append {
            d.push_str(content);
        } else {
            *d = content.to_string();
        }
    }

    fn link(&mut self, from: &str, to: &str) {
        let e = self.entries.get(from).cloned().expect("model: link source");
        self.entries.insert(to.to_string(), e);
    }

    fn unlink(&mut self, p: &str) {
        self.entries.remove(p).expect("model: unlink");
    }

    fn rmdir(&mut self, p: &str) {
        assert!(self.children(p).is_empty(), "model: rmdir of non-empty {p}");
        self.entries.remove(p).expect("model: rmdir");
    }

    fn rename(&mut self, from: &str, to: &str) {
        let moved: Vec<String> = self
            .entries
            .keys()
            .filter(|k| *k == from || is_under(k, from))
            .cloned()
            .collect();
        assert!(!moved.is_empty(), "model: rename of missing {from}");
        for k in moved {
            let e = self.entries.remove(&k).unwrap();
            let nk = format!("{to}{}", &k[from.len()..]);
            self.entries.insert(nk, e);
        }
    }

    /// Names directly inside dir `p`.
    fn children(&self, p: &str) -> Vec<String> {
        self.entries
            .keys()
            .filter(|k| parent_of(k) == p && !k.is_empty())
            .map(|k| name_of(k).to_string())
            .collect()
    }

    /// Applies one log line; returns false if the line is not an operation.
    fn apply(&mut self, line: &str) -> bool {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["create", p, c] => self.create(p, c),
            ["write", p, c] => self.write(p, c, false),
            ["append", p, c] => self.write(p, c, true),
            ["rename", a, b] => self.rename(a, b),
            ["unlink", p] => self.unlink(p),
            ["link", a, b] => self.link(a, b),
            ["mkdir", p] => self.mkdir(p),
            ["rmdir", p] => self.rmdir(p),
            _ => return false,
        }
        true
    }
}

/// The initial layers and the model of the merged tree they make. Lower 0 is on top.
/// With `l` None, only the model is built (the workers' starting point).
fn build_layers(l: Option<&Layers>, writers: usize) -> Model {
    let put = |i: usize, p: &str, c: &str| {
        if let Some(l) = l {
            l.put(i, p, c)
        }
    };
    let mkdir = |i: usize, p: &str| {
        if let Some(l) = l {
            l.mkdir(i, p)
        }
    };
    let mut m = Model::default();
    m.mkdir("");
    for s in SHARED {
        m.mkdir(s);
        mkdir(0, s);
    }
    mkdir(1, "s0");
    mkdir(1, "s1");
    // Files nobody owns, in every shared dir (some only in the bottom lower).
    for s in SHARED {
        put(0, &format!("{s}/common"), &format!("common {s}\n"));
        m.create(&format!("{s}/common"), &format!("common {s}\n"));
    }
    put(1, "s1/common_low", "common low\n");
    m.create("s1/common_low", "common low\n");
    for w in 0..writers {
        for (k, s) in SHARED.iter().enumerate() {
            let p = format!("{s}/w{w}_lf{k}");
            let c = format!("lower w{w} {k}\n");
            put(k % 2, &p, &c);
            m.create(&p, &c);
        }
        // A merged dir per writer: parts in each lower, with a subdir in both.
        let d = format!("s0/w{w}_ld");
        for (i, rel) in [(0, "a"), (1, "b"), (0, "sub/c"), (1, "sub/d")] {
            let p = format!("{d}/{rel}");
            let c = format!("lower w{w} {rel}\n");
            put(i, &p, &c);
            m.mkdir(parent_of(&p));
            m.create(&p, &c);
        }
        m.mkdir(&d);
        mkdir(1, &d);
    }
    m
}

/// The merged tree as seen through the mount.
fn read_tree(root: &Path) -> (Model, BTreeMap<String, (u64, u64)>) {
    let mut m = Model::default();
    let mut ids = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, u64> = BTreeMap::new();
    fn walk(
        root: &Path,
        rel: &str,
        m: &mut Model,
        ids: &mut BTreeMap<String, (u64, u64)>,
        by_ino: &mut BTreeMap<u64, u64>,
    ) {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {rel}: {e}"));
        if md.is_dir() {
            m.mkdir(rel);
            for n in names(&p) {
                let r = if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                };
                walk(root, &r, m, ids, by_ino);
            }
        } else {
            assert!(md.is_file(), "{rel}: not a file or dir");
            let c = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            ids.insert(rel.to_string(), (md.ino(), md.nlink()));
            if let Some(i) = by_ino.get(&md.ino()) {
                m.entries.insert(rel.to_string(), Ent::File(*i));
            } else {
                m.create(rel, &c);
                by_ino.insert(md.ino(), m.next_ino);
            }
        }
    }
    walk(root, "", &mut m, &mut ids, &mut by_ino);
    (m, ids)
}

/// (path, content) of every file, and the groups of paths that are hard links of each other.
fn flatten(m: &Model) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    let mut files = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, e) in &m.entries {
        match e {
            Ent::Dir => {
                files.insert(format!("{p}/"), String::new());
            }
            Ent::File(i) => {
                files.insert(p.clone(), m.data[i].clone());
                groups.entry(*i).or_default().push(p.clone());
            }
        }
    }
    (files, groups.into_values().collect())
}

// ------------------------------------------------------------------------------ workers

/// One element of `v`, None when it is empty.
fn pick_any<'a, T>(rng: &mut Rng, v: &'a [T]) -> Option<&'a T> {
    (!v.is_empty()).then(|| rng.pick(v))
}

/// One writer: owns every name starting with `w<id>_`.
struct Writer {
    id: usize,
    mnt: PathBuf,
    model: Model,
    log: Vec<String>,
    errors: Vec<String>,
    seq: u64,
    ops: u64,
}

impl Writer {
    fn mine(&self, p: &str) -> bool {
        let tag = format!("w{}_", self.id);
        p.split('/').any(|c| c.starts_with(&tag))
    }

    fn own_files(&self) -> Vec<String> {
        self.model
            .entries
            .iter()
            .filter(|(p, e)| matches!(e, Ent::File(_)) && self.mine(p))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Directories this writer owns (at any depth, those inside its own dirs included).
    fn own_dirs(&self) -> Vec<String> {
        self.model
            .entries
            .iter()
            .filter(|(p, e)| **e == Ent::Dir && self.mine(p))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Where a new name may go: a shared dir or one of this writer's own dirs.
    fn places(&self) -> Vec<String> {
        let mut v: Vec<String> = SHARED.iter().map(|s| s.to_string()).collect();
        v.extend(self.own_dirs());
        v
    }

    fn fresh(&mut self, parent: &str, kind: &str) -> String {
        self.seq += 1;
        format!("{parent}/w{}_{kind}{}", self.id, self.seq)
    }

    fn m(&self, p: &str) -> PathBuf {
        self.mnt.join(p)
    }

    /// Records an operation's result; applies it to the model when it succeeded.
    fn done(&mut self, line: String, r: io::Result<()>) {
        self.ops += 1;
        match r {
            Ok(()) => {
                assert!(self.model.apply(&line));
                self.log.push(line);
            }
            Err(e) => {
                self.errors
                    .push(format!("{line:?}: {e} (errno {})", errno(&e)));
            }
        }
    }

    fn check(&mut self, what: &str, ok: bool, detail: String) {
        if !ok {
            self.errors.push(format!("check {what}: {detail}"));
        }
    }

    fn step(&mut self, rng: &mut Rng) {
        let places = self.places();
        let files = self.own_files();
        let dirs = self.own_dirs();
        match rng.below(100) {
            0..=17 => {
                let parent = rng.pick(&places).clone();
                let p = self.fresh(&parent, "f");
                let c = format!("w{}:{}\n", self.id, self.seq);
                let r = fs::write(self.m(&p), &c);
                self.done(format!("create\t{p}\t{c}"), r);
            }
            18..=31 => {
                let Some(p) = pick_any(rng, &files).cloned() else {
                    return;
                };
                self.seq += 1;
                let c = format!("w{}:{}\n", self.id, self.seq);
                if rng.below(2) == 0 {
                    let r = fs::write(self.m(&p), &c);
                    self.done(format!("write\t{p}\t{c}"), r);
                } else {
                    let r = fs::OpenOptions::new()
                        .append(true)
                        .open(self.m(&p))
                        .and_then(|mut f| f.write_all(c.as_bytes()));
                    self.done(format!("append\t{p}\t{c}"), r);
                }
            }
            32..=43 => {
                // Rename a file, often into another shared dir.
                let Some(from) = pick_any(rng, &files).cloned() else {
                    return;
                };
                let parent = rng.pick(&places).clone();
                let to = self.fresh(&parent, "r");
                let r = fs::rename(self.m(&from), self.m(&to));
                self.done(format!("rename\t{from}\t{to}"), r);
            }
            44..=51 => {
                // Rename a directory (a merged lower one included) somewhere not inside itself.
                let Some(from) = pick_any(rng, &dirs).cloned() else {
                    return;
                };
                let targets: Vec<String> = places
                    .iter()
                    .filter(|p| **p != from && !is_under(p, &from))
                    .cloned()
                    .collect();
                let parent = rng.pick(&targets).clone();
                let to = self.fresh(&parent, "dr");
                let r = fs::rename(self.m(&from), self.m(&to));
                self.done(format!("rename\t{from}\t{to}"), r);
            }
            52..=60 => {
                let Some(p) = pick_any(rng, &files).cloned() else {
                    return;
                };
                let r = fs::remove_file(self.m(&p));
                self.done(format!("unlink\t{p}"), r);
            }
            61..=67 => {
                let Some(from) = pick_any(rng, &files).cloned() else {
                    return;
                };
                let parent = rng.pick(&places).clone();
                let to = self.fresh(&parent, "h");
                let r = fs::hard_link(self.m(&from), self.m(&to));
                self.done(format!("link\t{from}\t{to}"), r);
            }
            68..=74 => {
                let parent = rng.pick(&places).clone();
                if parent.matches('/').count() > 4 {
                    return;
                }
                let p = self.fresh(&parent, "d");
                let r = fs::create_dir(self.m(&p));
                self.done(format!("mkdir\t{p}"), r);
            }
            75..=79 => {
                // Empty one of my dirs (files only when it holds no dirs) and remove it.
                let Some(d) = pick_any(rng, &dirs).cloned() else {
                    return;
                };
                let kids = self.model.children(&d);
                let kid_paths: Vec<String> = kids.iter().map(|k| format!("{d}/{k}")).collect();
                if kid_paths
                    .iter()
                    .any(|k| self.model.entries.get(k) == Some(&Ent::Dir))
                {
                    return;
                }
                for k in kid_paths {
                    let r = fs::remove_file(self.m(&k));
                    self.done(format!("unlink\t{k}"), r);
                }
                let r = fs::remove_dir(self.m(&d));
                self.done(format!("rmdir\t{d}"), r);
            }
            80..=89 => {
                // List a place: my names there are exactly the model's.
                let d = rng.pick(&places).clone();
                self.ops += 1;
                match fs::read_dir(self.m(&d)) {
                    Err(e) => self.errors.push(format!("list {d}: {e}")),
                    Ok(rd) => {
                        let mut seen = Vec::new();
                        for e in rd {
                            match e {
                                Ok(e) => seen.push(e.file_name().to_string_lossy().into_owned()),
                                Err(e) => self.errors.push(format!("list {d}: {e}")),
                            }
                        }
                        // In a shared dir only my names are stable; in mine, every name is.
                        let tag = format!("w{}_", self.id);
                        let all = self.mine(&d);
                        let mut got: Vec<String> = seen
                            .iter()
                            .filter(|n| all || n.starts_with(&tag))
                            .cloned()
                            .collect();
                        got.sort();
                        let mut want: Vec<String> = self
                            .model
                            .children(&d)
                            .into_iter()
                            .filter(|n| all || n.starts_with(&tag))
                            .collect();
                        want.sort();
                        self.check(
                            &format!("listing of {d}"),
                            got == want,
                            format!("{got:?} != {want:?}"),
                        );
                        let uniq: BTreeSet<&String> = seen.iter().collect();
                        self.check(
                            &format!("no repeats in {d}"),
                            uniq.len() == seen.len(),
                            format!("{seen:?}"),
                        );
                        let wh = seen.iter().any(|n| n.starts_with(".wh."));
                        self.check(&format!("no .wh. in {d}"), !wh, format!("{seen:?}"));
                    }
                }
            }
            _ => {
                // Read one of my files back.
                let Some(p) = pick_any(rng, &files).cloned() else {
                    return;
                };
                self.ops += 1;
                let want = self.model.content(&p).cloned().unwrap();
                match fs::read_to_string(self.m(&p)) {
                    Ok(got) => self.check(
                        &format!("content of {p}"),
                        got == want,
                        format!("{got:?} != {want:?}"),
                    ),
                    Err(e) => self
                        .errors
                        .push(format!("read {p}: {e} (errno {})", errno(&e))),
                }
            }
        }
    }
}

/// Content a reader may see in a file named `name`: empty (between a truncate and a
/// write) or lines written by the file's owner.
fn plausible(name: &str, content: &str) -> bool {
    if name == "common" || name == "common_low" {
        return content.starts_with("common");
    }
    let Some(owner) = name.split('_').next() else {
        return false;
    };
    let id = &owner[1..];
    content
        .lines()
        .all(|l| l.starts_with(&format!("w{id}:")) || l.starts_with(&format!("lower w{id} ")))
}

fn reader(mnt: &Path, rng: &mut Rng, until: Instant) -> (u64, Vec<String>) {
    let mut errors = Vec::new();
    let mut ops = 0;
    let transient = |e: &io::Error| matches!(errno(e), libc::ENOENT | libc::ENOTDIR);
    while Instant::now() < until && errors.len() < 20 {
        let s = SHARED[rng.below(SHARED.len())];
        let dir = mnt.join(s);
        ops += 1;
        let names: Vec<String> = match fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| match e {
                    Ok(e) => Some(e.file_name().to_string_lossy().into_owned()),
                    Err(e) => {
                        errors.push(format!("readdir {s}: {e}"));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                errors.push(format!("opendir {s}: {e}"));
                continue;
            }
        };
        let uniq: BTreeSet<&String> = names.iter().collect();
        if uniq.len() != names.len() {
            errors.push(format!("repeated names in {s}: {names:?}"));
        }
        if names.iter().any(|n| n.starts_with(".wh.")) {
            errors.push(format!(".wh. name listed in {s}: {names:?}"));
        }
        for _ in 0..4 {
            let Some(n) = pick_any(rng, &names) else {
                break;
            };
            let p = dir.join(n);
            ops += 1;
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_file() => {
                    let mut c = String::new();
                    match fs::File::open(&p).and_then(|mut f| f.read_to_string(&mut c)) {
                        Ok(_) if !plausible(n, &c) => {
                            errors.push(format!("{s}/{n}: implausible content {c:?}"))
                        }
                        Ok(_) => {}
                        Err(e) if transient(&e) => {}
                        Err(e) => errors.push(format!("read {s}/{n}: {e} (errno {})", errno(&e))),
                    }
                }
                Ok(md) if md.is_dir() => match fs::read_dir(&p) {
                    Ok(rd) => {
                        for e in rd {
                            if let Err(e) = e {
                                if !transient(&e) {
                                    errors.push(format!("readdir {s}/{n}: {e}"));
                                }
                            }
                        }
                    }
                    Err(e) if transient(&e) => {}
                    Err(e) => errors.push(format!("opendir {s}/{n}: {e} (errno {})", errno(&e))),
                },
                Ok(_) => errors.push(format!("{s}/{n}: neither file nor dir")),
                Err(e) if transient(&e) => {}
                Err(e) => errors.push(format!("lstat {s}/{n}: {e} (errno {})", errno(&e))),
            }
        }
    }
    (ops, errors)
}

/// The body of a worker process: runs until the deadline, then writes its report:
/// `ops N`, then one `err ...` line per error, then the log of successful operations.
fn worker_main(role: &str) {
    let mnt = PathBuf::from(std::env::var("STRATAFS_STRESS_MNT").unwrap());
    let out = PathBuf::from(std::env::var("STRATAFS_STRESS_OUT").unwrap());
    let secs = env_num("STRATAFS_STRESS_SECS", 10);
    let writers = env_num("STRATAFS_STRESS_WRITERS", 8) as usize;
    let seed = env_num("STRATAFS_STRESS_SEED", 1);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut report = String::new();
    if let Some(id) = role.strip_prefix("writer") {
        let id: usize = id.parse().unwrap();
        let mut rng = Rng(seed.wrapping_mul(1_000_003) ^ ((id as u64 + 1) * 0x9e37_79b9));
        // The writer's own model: the initial tree (it only trusts its own names in it).
        let model = build_layers(None, writers);
        let mut w = Writer {
            id,
            mnt,
            model,
            log: Vec::new(),
            errors: Vec::new(),
            seq: 0,
            ops: 0,
        };
        while Instant::now() < until && w.errors.len() < 20 {
            w.step(&mut rng);
        }
        report.push_str(&format!("ops {}\n", w.ops));
        for e in &w.errors {
            report.push_str(&format!("err {}\n", e.replace('\n', "\\n")));
        }
        for line in &w.log {
            report.push_str(&format!("{}\n", line.replace('\n', "\\n")));
        }
    } else {
        let id: u64 = role.strip_prefix("reader").unwrap().parse().unwrap();
        let mut rng = Rng(seed ^ ((id + 101) * 0x9e37_79b9));
        let (ops, errors) = reader(&mnt, &mut rng, until);
        report.push_str(&format!("ops {ops}\n"));
        for e in errors {
            report.push_str(&format!("err {}\n", e.replace('\n', "\\n")));
        }
    }
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, report).unwrap();
    fs::rename(&tmp, &out).unwrap();
}

/// Not a test: the entry point of the worker processes the stress test starts.
#[test]
fn stress_worker_entry() {
    if let Ok(role) = std::env::var("STRATAFS_STRESS_ROLE") {
        worker_main(&role);
    }
}

// ------------------------------------------------------------------------------ watchdog

/// Child processes, killed (SIGKILL) and reaped when dropped.
struct Workers(Vec<(String, Child)>);

impl Workers {
    fn kill_all(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill_all();
        for (_, c) in &mut self.0 {
            // A worker stuck in a request of a hung daemon is reaped once it is aborted.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs `stat` on `p` in a child process; true if it answered within `timeout`.
fn stat_answers(p: &Path, timeout: Duration) -> bool {
    let Ok(mut c) = Command::new("stat")
        .arg(p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = c.try_wait() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    false
}

/// Aborts the FUSE connection of the mount at `mnt` (through a private fusectl mount), so
/// that everything blocked on a hung daemon returns and the mount can be taken down.
fn abort_connection(mnt: &Path, scratch: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mnt.display().to_string();
    let Some(dev) = info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&want.as_str())).then(|| f[2].to_string())
    }) else {
        return;
    };
    let minor = dev.split(':').nth(1).unwrap_or("0").to_string();
    let ctl = scratch.join("fusectl");
    let _ = fs::create_dir_all(&ctl);
    let mounted = Command::new("mount")
        .args(["-t", "fusectl", "fusectl"])
        .arg(&ctl)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = fs::write(ctl.join(&minor).join("abort"), "1");
    if mounted {
        umount_retry(&ctl);
    }
    let _ = Command::new("umount").arg("-l").arg(mnt).status();
}

// ------------------------------------------------------------------------------ the test

#[test]
fn concurrent_writers_and_readers_match_replay() {
    let secs = env_num("STRATAFS_STRESS_SECS", 10);
    let writers = env_num("STRATAFS_STRESS_WRITERS", 8) as usize;
    let seed = env_num("STRATAFS_STRESS_SEED", 1);
    let threads = env_num("STRATAFS_STRESS_THREADS", 4);
    assert!((1..=9).contains(&writers), "1..=9 writers (one-digit ids)");
    let l = Layers::new(2);
    let initial = build_layers(Some(&l), writers);
    let lo = l.snap_lowers();
    // STRATAFS_STRESS_LOG=FILE: the daemon logs at debug level into FILE (for failures).
    let log = std::env::var("STRATAFS_STRESS_LOG").ok();
    let extra = match &log {
        Some(f) => format!("threads={threads},debug,logfile={f}"),
        None => format!("threads={threads}"),
    };
    let mut m = l.mount(&extra);
    let reports = l.root().join("reports");
    fs::create_dir(&reports).unwrap();

    let started = Instant::now();
    let mut roles: Vec<String> = (0..writers).map(|i| format!("writer{i}")).collect();
    roles.extend((0..readers()).map(|i| format!("reader{i}")));
    let mut workers = Workers(Vec::new());
    for role in &roles {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stress_worker_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STRATAFS_STRESS_ROLE", role)
            .env("STRATAFS_STRESS_MNT", &l.mnt)
            .env("STRATAFS_STRESS_OUT", reports.join(role))
            .env("STRATAFS_STRESS_SECS", secs.to_string())
            .env("STRATAFS_STRESS_WRITERS", writers.to_string())
            .env("STRATAFS_STRESS_SEED", seed.to_string())
            .stdout(Stdio::null())
            .stderr(fs::File::create(reports.join(format!("{role}.stderr"))).unwrap())
            .spawn()
            .expect("spawn worker");
        workers.0.push((role.clone(), child));
    }

    // Watchdog: the workers stop by themselves after `secs`; give them generous slack.
    let deadline = started + Duration::from_secs(secs + 40);
    let mut hung = Vec::new();
    loop {
        let running: Vec<String> = workers
            .0
            .iter_mut()
            .filter_map(|(r, c)| matches!(c.try_wait(), Ok(None)).then(|| r.clone()))
            .collect();
        if running.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            hung = running;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !hung.is_empty() {
        workers.kill_all();
        let answers = stat_answers(&l.mnt, Duration::from_secs(5));
        if !answers {
            abort_connection(&l.mnt, l.root());
        }
        drop(workers);
        m.unmount();
        panic!(
            "deadlock? workers {hung:?} still running after {} s; the mount {} a stat",
            secs + 40,
            if answers {
                "still answered"
            } else {
                "did NOT answer"
            }
        );
    }
    let elapsed = started.elapsed();
    assert!(
        stat_answers(&l.mnt, Duration::from_secs(5)),
        "the mount answers a stat"
    );

    // Collect the reports; replay every writer's successful operations on the model.
    let mut expected = initial.clone();
    let mut total_ops = 0;
    let mut errors = Vec::new();
    let mut applied = 0;
    for (role, c) in &mut workers.0 {
        let st = c.wait().unwrap();
        let stderr = fs::read_to_string(reports.join(format!("{role}.stderr"))).unwrap_or_default();
        let report = fs::read_to_string(reports.join(role.as_str()))
            .unwrap_or_else(|_| panic!("{role} wrote no report ({st}); stderr:\n{stderr}"));
        assert!(st.success(), "{role} exited {st}; stderr:\n{stderr}");
        for line in report.lines() {
            let line = line.replace("\\n", "\n");
            if let Some(n) = line.strip_prefix("ops ") {
                total_ops += n.parse::<u64>().unwrap();
            } else if let Some(e) = line.strip_prefix("err ") {
                errors.push(format!("{role}: {e}"));
            } else {
                assert!(expected.apply(&line), "{role}: bad log line {line:?}");
                applied += 1;
            }
        }
    }
    drop(workers);
    let eio: Vec<&String> = errors.iter().filter(|e| e.contains("errno 5)")).collect();
    assert!(eio.is_empty(), "EIO seen: {eio:#?}");
    assert!(
        errors.is_empty(),
        "{} errors or failed checks: {errors:#?}",
        errors.len()
    );

    let (want_files, want_links) = flatten(&expected);
    let check_view = |label: &str| {
        let (got, ids) = read_tree(&l.mnt);
        let (got_files, got_links) = flatten(&got);
        if got_files != want_files {
            let mut d = Vec::new();
            for (p, c) in &want_files {
                match got_files.get(p) {
                    None => d.push(format!("missing {p}")),
                    Some(g) if g != c => d.push(format!("{p}: {g:?} != {c:?}")),
                    _ => {}
                }
            }
            for p in got_files.keys() {
                if !want_files.contains_key(p) {
                    d.push(format!("unexpected {p}"));
                }
            }
            d.truncate(40);
            panic!(
                "{label}: the merged tree differs from the replay:\n{}",
                d.join("\n")
            );
        }
        assert_eq!(got_links, want_links, "{label}: hard-link groups");
        for group in &want_links {
            let n = group.len() as u64;
            for p in group {
                assert_eq!(ids[p].1, n, "{label}: st_nlink of {p} (links {group:?})");
            }
        }
    };
    check_view("live mount");
    m.unmount();
    l.assert_lowers_unchanged(&lo);
    assert!(
        names(&l.scratch()).is_empty(),
        "workdir scratch left: {:?}",
        names(&l.scratch())
    );
    // The same tree after a fresh mount: everything reached the upper.
    let m2 = l.mount("");
    check_view("after remount");
    drop(m2);
    eprintln!(
        "stress: {writers} writer + {} reader processes, threads={threads}, {:.1} s, \
         {total_ops} operations ({applied} changes replayed), {} entries at the end",
        readers(),
        elapsed.as_secs_f64(),
        want_files.len()
    );
}
