//! S18, the init layer: per-mount /etc/hosts, /etc/hostname, /etc/resolv.conf between the
//! upper and the lowers, changed in place, never part of the upper's diff or commit.
mod common;
use common::*;

use std::fs;
use std::process::Command;

fn stratafs_out(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run stratafs")
}

fn with_image() -> Layers {
    let l = Layers::new(1);
    l.put(0, "etc/hosts", "image hosts\n");
    l.put(0, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    l
}

#[test]
fn s18_init_files_change_in_place_and_stay_out_of_the_upper() {
    let l = with_image();
    let init = l.tmp.path().join("init");
    let out = stratafs_out(&[
        "init-layer",
        init.to_str().unwrap(),
        "--hostname",
        "web1",
        "--add-host",
        "db:10.0.0.2",
        "--dns",
        "1.1.1.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lo = snapshot(&l.lowers[0]);
    {
        let _m = l.mount(&format!("initdir={}", init.display()));
        // The init layer sits above the lowers.
        let hosts = fs::read_to_string(l.m("etc/hosts")).unwrap();
        assert!(
            hosts.contains("127.0.0.1") && hosts.contains("web1"),
            "{hosts}"
        );
        assert!(
            hosts.contains("10.0.0.2\tdb") || hosts.contains("10.0.0.2 db"),
            "{hosts}"
        );
        assert_eq!(
            fs::read_to_string(l.m("etc/hostname")).unwrap().trim(),
            "web1"
        );
        assert!(fs::read_to_string(l.m("etc/resolv.conf"))
            .unwrap()
            .contains("nameserver 1.1.1.1"));
        // A write goes to the init layer in place: no copy-up.
        let mut h = hosts.clone();
        h.push_str("10.0.0.3 cache\n");
        fs::write(l.m("etc/hosts"), &h).unwrap();
        assert_eq!(fs::read_to_string(init.join("etc/hosts")).unwrap(), h);
        assert!(
            !l.upper.join("etc/hosts").exists(),
            "the upper got the init file"
        );
        // Other files of the same dir still copy up.
        fs::write(l.m("etc/passwd"), "changed\n").unwrap();
        assert_eq!(
            fs::read_to_string(l.upper.join("etc/passwd")).unwrap(),
            "changed\n"
        );
        // Unlink of an init file writes a whiteout in the upper, as for a lower.
        fs::remove_file(l.m("etc/hostname")).unwrap();
        assert!(!l.m("etc/hostname").exists());
        assert!(l.upper.join("etc/.wh.hostname").exists());
        assert!(
            init.join("etc/hostname").exists(),
            "the init layer keeps its file"
        );
    }
    assert_same_tree("lower", &lo, &snapshot(&l.lowers[0]));
    // diff of the upper lists the user's change, never the init files.
    let out = stratafs_out(&["diff", l.upper.to_str().unwrap()]);
    assert!(out.status.success());
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("/etc/passwd"), "{diff}");
    assert!(
        !diff.contains("hosts") && !diff.contains("hostname") && !diff.contains("resolv"),
        "{diff}"
    );
}

#[test]
fn s18_hostname_option_generates_the_init_layer_in_the_workdir() {
    let l = with_image();
    {
        let _m = l.mount("hostname=box7,dns=9.9.9.9,add_host=api:192.0.2.7");
        assert_eq!(
            fs::read_to_string(l.m("etc/hostname")).unwrap().trim(),
            "box7"
        );
        let hosts = fs::read_to_string(l.m("etc/hosts")).unwrap();
        assert!(
            hosts.contains("box7") && hosts.contains("192.0.2.7"),
            "{hosts}"
        );
        assert!(fs::read_to_string(l.m("etc/resolv.conf"))
            .unwrap()
            .contains("9.9.9.9"));
        assert!(l.work.join("stratafs.init/etc/hostname").exists());
        fs::write(l.m("etc/hostname"), "renamed\n").unwrap();
    }
    assert!(
        !l.upper.join("etc/hostname").exists(),
        "init files never reach the upper"
    );
    // A bad address is refused before mounting, with one line and exit 1.
    let opts = format!("{},dns=300.1.1.1", l.opts());
    let err = stratafs_refuses(&["-o", &opts, l.mnt.to_str().unwrap()]);
    assert!(err.contains("300.1.1.1"), "{err}");
    assert!(!is_mounted(&l.mnt));
}

/// S22 on the init layer (issue 10, item 2): chattr through the mount sets the init file's
/// own flags (it changes in place), and the union honours them there as on lower and upper
/// objects: an immutable /etc/hosts takes no write, truncate, chmod or unlink; an
/// append-only /etc/resolv.conf takes appends only.
#[test]
fn s22_init_files_honour_immutable_and_append_only() {
    let l = with_image();
    let _m = l.mount("hostname=box7,dns=9.9.9.9");
    let run = |cmd: &str| common::side::run(&l.mnt, common::side::As::Root, cmd);
    let refused = |cmd: &str| {
        let out = run(&format!("{cmd} 2>/dev/null && echo done || echo refused"));
        assert_eq!(out, "status 0 stdout \"refused\\n\"", "{cmd}");
    };
    assert_eq!(
        run("chattr +i etc/hosts && chattr +a etc/resolv.conf && lsattr etc/hosts etc/resolv.conf | cut -c1-6"),
        "status 0 stdout \"----i-\\n-----a\\n\""
    );
    let init = l.work.join("stratafs.init/etc");
    let flags = |f: &str| {
        let out = Command::new("lsattr").arg(init.join(f)).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(6)
            .collect::<String>()
    };
    assert_eq!(
        (flags("hosts"), flags("resolv.conf")),
        ("----i-".into(), "-----a".into())
    );
    let hosts = fs::read_to_string(l.m("etc/hosts")).unwrap();
    for cmd in [
        "echo x >> etc/hosts",
        "echo x > etc/hosts",
        "truncate -s0 etc/hosts",
        "chmod 600 etc/hosts",
        "rm -f etc/hosts",
        "mv etc/hosts etc/hosts2",
        "echo x > etc/resolv.conf",
        "truncate -s0 etc/resolv.conf",
        "rm -f etc/resolv.conf",
    ] {
        refused(cmd);
    }
    assert_eq!(fs::read_to_string(l.m("etc/hosts")).unwrap(), hosts);
    assert_eq!(
        run("echo nameserver 1.0.0.1 >> etc/resolv.conf && tail -1 etc/resolv.conf"),
        "status 0 stdout \"nameserver 1.0.0.1\\n\""
    );
    // Lifted, both change again, in place.
    assert_eq!(
        run("chattr -i etc/hosts && chattr -a etc/resolv.conf && echo 10.0.0.9 x >> etc/hosts && rm etc/resolv.conf && tail -1 etc/hosts"),
        "status 0 stdout \"10.0.0.9 x\\n\""
    );
    assert!(
        !l.upper.join("etc/hosts").exists(),
        "the init file was copied up"
    );
}
