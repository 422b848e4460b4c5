//! Real clients on stratafs (issue 7), through the scripts in scripts/clients/:
//!
//! - `apt`: apt/dpkg in a chroot of a union over a debootstrapped bookworm (apt-get install,
//!   python3, a git commit, remove of lower files, purge of upper files, dpkg --verify and
//!   debsums clean, again after a remount);
//! - `podman`: podman with `overlay.mount_program=stratafs` (import, run, build of a
//!   Containerfile that changes lower files and dirs, diff, commit, and checks of every
//!   change from inside containers of the results);
//! - `rootless`: the same engines run by a plain user with subordinate ids (podman and
//!   buildah, mount_program in the user's storage.conf with `nodev,fsync=0`), the user
//!   made by the script and removed at its end.
//!
//! Each script runs the same scenario on kernel overlayfs and fuse-overlayfs too and prints
//! the timings side by side; this test streams the script's output to the terminal (past
//! libtest's capture, so the timings show in CI logs) and:
//! - fails when the script says stratafs misbehaved (exit 1: a check failed on stratafs, a
//!   step failed or hung) or when it is killed by the time limit;
//! - is skipped, with `SKIPPED clients::NAME: reason` on stderr, when this machine cannot run
//!   the client at all (exit 77: not root, no /dev/fuse, packages or the Debian mirror out of
//!   reach, ...), or when `STRATAFS_CLIENTS=0` is set.
//!
//! The scripts install what they need with apt-get (debootstrap, podman, runc, conmon,
//! fuse3, fuse-overlayfs) and cache the rootfs and .debs under /var/tmp/stratafs-clients.
//! `STRATAFS_CLIENTS_FS="overlay stratafs"` narrows the filesystems they compare;
//! `STRATAFS_CLIENTS_BIN=PATH` tests another binary in the place of stratafs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The two scenarios share apt/dpkg locks, the cache and the CPUs: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Upper bound for one script, all filesystems included (each step has its own 300 s limit
/// inside the script).
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// Writes to the process's stderr directly: libtest captures only print!/eprint!, so this
/// shows in CI logs whether or not the test passes.
fn raw(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

enum Outcome {
    Passed,
    Skipped(String),
}

fn run_client(name: &str) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var("STRATAFS_CLIENTS").as_deref() == Ok("0") {
        return Outcome::Skipped("STRATAFS_CLIENTS=0".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Outcome::Skipped("needs root (mounts, chroot, container engines)".into());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/clients")
        .join(format!("{name}.sh"));
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .env(
            "STRATAFS",
            // STRATAFS_CLIENTS_BIN: another binary in its place (to check that a misbehaving
            // filesystem fails this test).
            std::env::var("STRATAFS_CLIENTS_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stratafs").to_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Ok(fs) = std::env::var("STRATAFS_CLIENTS_FS") {
        cmd.arg("--fs").arg(fs);
    }
    raw(&format!("== clients::{name}: bash {}", script.display()));
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
    let pgid = child.id() as libc::pid_t;

    // Both pipes are streamed line by line and kept for the verdict.
    let pump = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                raw(&line);
                kept.push(line);
            }
            kept
        })
    };
    let out = pump(Box::new(child.stdout.take().unwrap()));
    let err = pump(Box::new(child.stderr.take().unwrap()));

    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the script") {
            break s;
        }
        if t0.elapsed() > LIMIT && !timed_out {
            timed_out = true;
            raw(&format!("clients::{name}: over {} s: SIGTERM to the script (its trap unmounts and stops what it started)", LIMIT.as_secs()));
            // SAFETY: signals the process group of the child we spawned.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(120) {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut lines = out.join().unwrap_or_default();
    lines.extend(err.join().unwrap_or_default());
    let secs = t0.elapsed().as_secs();

    assert!(
        !timed_out,
        "clients::{name}: scripts/clients/{name}.sh did not finish within {} s (stratafs hung?)",
        LIMIT.as_secs()
    );
    match status.code() {
        Some(0) => {
            raw(&format!("== clients::{name}: passed in {secs} s"));
            Outcome::Passed
        }
        Some(77) => {
            let reason = lines
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("SKIP: "))
                .unwrap_or("the script gave no reason")
                .to_string();
            Outcome::Skipped(reason)
        }
        code => {
            let mut shown: Vec<&str> = lines
                .iter()
                .map(|l| l.as_str())
                .filter(|l| l.contains("CHECK FAILED on stratafs") || l.starts_with("ERROR:"))
                .collect();
            if shown.is_empty() {
                // Not a check: the script itself broke; its last words say where.
                shown = lines
                    .iter()
                    .rev()
                    .take(15)
                    .rev()
                    .map(|l| l.as_str())
                    .collect();
            }
            panic!(
                "clients::{name}: scripts/clients/{name}.sh exited with {code:?} after {secs} s: \
                 stratafs misbehaved or the scenario broke:\n{}",
                shown.join("\n")
            );
        }
    }
}

fn check(name: &str) {
    if let Outcome::Skipped(reason) = run_client(name) {
        let msg = format!("SKIPPED clients::{name}: this environment cannot run it: {reason}");
        eprintln!("{msg}");
        raw(&msg);
    }
}

/// apt-get install/remove/purge, python3, git, dpkg --verify and debsums in a chroot of a
/// stratafs union, again after a remount of the same upper.
#[test]
fn apt_dpkg_in_a_chroot() {
    check("apt");
}

/// podman import/run/build/diff/commit with overlay.mount_program=stratafs, every change
/// checked from inside containers (readdir and lookup).
#[test]
fn podman_with_stratafs_as_mount_program() {
    check("podman");
}

/// Rootless podman and buildah (a plain user with subordinate ids) with mount_program =
/// stratafs and mountopt nodev,fsync=0 in the user's storage.conf: import, run, a build
/// that installs a .deb with dpkg and files of several owners, buildah from/run/commit,
/// diff and commit, the committed tree (owners included) equal to the kernel driver's.
#[test]
fn rootless_podman_and_buildah_with_stratafs() {
    check("rootless");
}
