// W2 of scripts/bench.sh: lstat(2) every path of a list, relative to a root directory.
// Built by bench.sh with plain `rustc -O` (no crates), so the loop costs next to nothing
// beside the syscalls. Usage: lstat-all ROOT LISTFILE   (LISTFILE: one relative path a
// line). Prints "<ok> <failed>": the count of paths that lstat found and that it did not.
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: lstat-all ROOT LISTFILE");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[1]);
    let list = std::fs::File::open(&args[2]).expect("open list");
    let mut paths = Vec::new();
    for line in BufReader::new(list).split(b'\n') {
        let line = line.expect("read list");
        if !line.is_empty() {
            paths.push(root.join(std::ffi::OsStr::from_bytes(&line)));
        }
    }
    let (mut ok, mut bad) = (0u64, 0u64);
    for p in &paths {
        match std::fs::symlink_metadata(p) {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    println!("{ok} {bad}");
}
