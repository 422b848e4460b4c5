//! The command line is discoverable (issue 13): `stratafs --help` lists the subcommands
//! (the layer tools and `help`) with one line each, `stratafs help [COMMAND]` prints the
//! general help or that command's (exit 0), and an unknown command is a one-line error
//! (exit 1). The mount command line stays as it was: `help` followed by `-o` is a SOURCE
//! (how mount.fuse3 passes the first field of an fstab line), and a binary called as
//! mount.stratafs speaks the helper protocol whatever its arguments. Every test runs the
//! binary cargo built.
mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, Output};

/// The layer tools, `help`, `man` and `completions`, in the order the help lists them.
const COMMANDS: [&str; 8] = [
    "diff",
    "commit",
    "import",
    "init-layer",
    "stats",
    "help",
    "man",
    "completions",
];

fn stratafs(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run stratafs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

/// Exit status 0, nothing on stderr; returns stdout.
#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = stratafs(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stratafs {args:?}: {}",
        stderr(&o)
    );
    assert_eq!(stderr(&o), "", "stratafs {args:?} wrote to stderr");
    stdout(&o)
}

/// Exit status 1, nothing on stdout, exactly one line on stderr; returns that line.
#[track_caller]
fn refused(args: &[&str]) -> String {
    let o = stratafs(args);
    assert_eq!(o.status.code(), Some(1), "stratafs {args:?}: {o:?}");
    assert_eq!(stdout(&o), "", "stratafs {args:?} wrote to stdout");
    let err = stderr(&o);
    assert!(
        err.ends_with('\n') && err.matches('\n').count() == 1,
        "stratafs {args:?}: not one line: {err:?}"
    );
    err.trim_end().to_string()
}

/// The `Commands:` section of a help text: name -> its one-line description, in order.
fn commands_section(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_string(), about.trim().to_string())
        })
        .collect()
}

#[test]
fn help_lists_every_subcommand_with_one_line() {
    let long = ok(&["--help"]);
    assert_eq!(ok(&["-h"]), long, "-h and --help differ");
    assert!(
        long.contains("Usage: stratafs [-f] [-d] -o OPTIONS [SOURCE] MOUNTPOINT\n"),
        "the usage should show the mount command line:\n{long}"
    );
    assert!(long.contains("stratafs <COMMAND> [ARGS]..."), "{long}");
    let listed = commands_section(&long);
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, COMMANDS, "the Commands section:\n{long}");
    let about: BTreeMap<String, String> = listed.into_iter().collect();
    for cmd in COMMANDS {
        assert!(!about[cmd].is_empty(), "no description for {cmd}:\n{long}");
    }
    // Each layer tool's line is the summary its own help starts with.
    for cmd in &COMMANDS[..4] {
        let own = ok(&[cmd, "-h"]);
        assert_eq!(
            own.lines().next(),
            Some(about[*cmd].as_str()),
            "`stratafs {cmd} -h` and the list disagree"
        );
    }
    // The mount options and flags are still there.
    for want in [
        "-o <OPTIONS>",
        "-f, --foreground",
        "-d, --debug",
        "-V, --version",
    ] {
        assert!(long.contains(want), "no {want} in:\n{long}");
    }
}

#[test]
fn help_command_prints_the_general_help() {
    let general = ok(&["--help"]);
    assert_eq!(ok(&["help"]), general);
    assert_eq!(ok(&["help", "help"]), general);
    assert_eq!(ok(&["help", "--help"]), general);
}

#[test]
fn help_of_each_subcommand() {
    for cmd in &COMMANDS[..4] {
        let text = ok(&["help", cmd]);
        assert_eq!(
            text,
            ok(&[cmd, "--help"]),
            "`stratafs help {cmd}` should print `stratafs {cmd} --help`"
        );
        assert!(
            text.contains(&format!("Usage: stratafs {cmd} ")),
            "help {cmd}:\n{text}"
        );
    }
}

#[test]
fn help_of_an_unknown_command_is_one_line_and_exit_1() {
    assert_eq!(
        refused(&["help", "frobnicate"]),
        "stratafs help: unknown command 'frobnicate' (commands: diff, commit, import, \
         init-layer, stats, help, man, completions)"
    );
    // Control characters cannot break the line.
    let line = refused(&["help", "a\nb\x1b[2J"]);
    assert!(line.contains("'a?b?[2J'"), "{line}");
    assert_eq!(
        refused(&["help", "diff", "commit"]),
        "stratafs help: expected at most one command, got 2"
    );
}

/// mount.fuse3 runs `stratafs SOURCE MOUNTPOINT -o OPTIONS`; an fstab line whose first field
/// is `help` still mounts, with `help` as the source.
#[test]
fn help_as_the_source_of_a_mount_still_mounts() {
    let l = Layers::new(1);
    l.put(0, "f", "lower\n");
    let out = stratafs(&["help", &l.mnt.display().to_string(), "-o", &l.opts()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = Mount { mnt: l.mnt.clone() };
    let line = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|x| x.split(' ').nth(1) == Some(l.mnt.to_str().unwrap()))
        .map(str::to_string)
        .expect("mounted");
    assert!(line.starts_with("help "), "/proc/mounts: {line}");
    assert_eq!(fs::read_to_string(l.m("f")).unwrap(), "lower\n");
    drop(m);
    // Without -o it is the help command, which knows no command named like a path.
    let mnt = l.mnt.display().to_string();
    assert_eq!(
        refused(&["help", &mnt]),
        format!(
            "stratafs help: unknown command '{mnt}' (commands: diff, commit, import, \
             init-layer, stats, help, man, completions)"
        )
    );
}

/// Called as mount.stratafs, the binary speaks mount(8)'s helper protocol: `help` there is
/// a SOURCE, and a missing MOUNTPOINT is its usage error.
#[test]
fn mount_stratafs_name_still_selects_the_helper_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("mount.stratafs");
    symlink(bin(), &helper).unwrap();
    let o = Command::new(&helper).arg("help").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "mount.stratafs: usage: mount.stratafs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]\n"
    );
}

/// `stratafs stats MOUNTPOINT` (issue 12): requests by opcode, copy-ups, memory of a live
/// mount's daemon; one-line refusals for a dir that is no stratafs mount.
#[test]
fn stats_report_what_the_daemon_did() {
    let l = Layers::new(1);
    l.put(0, "d/f", "data\n");
    let _m = l.mount("");
    fs::write(l.m("d/f"), "changed\n").unwrap();
    let _ = fs::read_dir(l.m("d")).unwrap().count();
    let report = ok(&["stats", l.mnt.to_str().unwrap()]);
    let count = |op: &str| report_count(&report, op);
    assert!(count("LOOKUP") >= 2, "{report}");
    assert!(count("OPEN") >= 1, "{report}");
    assert!(report.contains("copy-ups: 2 (0 KiB"), "{report}");
    assert!(report.contains("memory: RSS"), "{report}");
    let err = refused(&["stats", l.root().to_str().unwrap()]);
    assert!(err.contains("not the root of a stratafs mount"), "{err}");
}

/// `stratafs man` prints a manual page of the same command line and commands;
/// `stratafs completions SHELL` prints completions that know the commands; a bad shell is
/// one line and exit 1; with `-o`, `man` is a SOURCE as `help` is.
#[test]
fn man_page_and_completions() {
    let man = ok(&["man"]);
    assert!(man.contains(".TH stratafs 1"), "{man}");
    for want in [
        "\\-o",
        "lowerdir=A:B",
        "stratafs\\-diff",
        "stratafs\\-commit",
    ] {
        assert!(man.contains(want), "no {want} in the man page:\n{man}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let c = ok(&["completions", shell]);
        for cmd in ["diff", "commit", "init-layer", "stats"] {
            assert!(c.contains(cmd), "{shell} completions lack {cmd}");
        }
    }
    let err = refused(&["completions", "tcsh"]);
    assert!(err.contains("expected one shell"), "{err}");
    let err = refused(&["man", "extra"]);
    assert!(err.contains("takes no arguments"), "{err}");
}
