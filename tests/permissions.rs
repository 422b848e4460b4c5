//! Permissions and metadata exactly as kernel overlayfs has them (issue 10): POSIX ACLs
//! (deny and grant entries, default ACLs, mode/ACL sync: S21 of docs/semantics.md),
//! immutable and append-only objects (lower, copied-up, upper, across a remount) and
//! lsattr/chattr (S22), and which xattr names an unprivileged caller may list (S23).
//!
//! Every scenario lays out the same lower layer twice, mounts kernel overlayfs on one and
//! stratafs (`allow_other`) on the other, runs the same shell steps in both mounts (some
//! as root, some as `nobody` or as a plain owner uid), and asserts that each step gives
//! the same exit status and output on both. Needs setfacl/getfacl (acl), chattr/lsattr
//! (e2fsprogs), getfattr/setfattr (attr), setpriv (util-linux), and a layer filesystem
//! with ACLs and inode flags (ext4, as /tmp is here).
mod common;
use common::side::*;
use common::{chmod, Layers};

use std::path::Path;

fn acl_layout(l: &Path) {
    sh(
        l,
        "echo secret > deny && chmod 644 deny && setfacl -m u:nobody:--- deny
         echo secret2 > deny2 && chmod 644 deny2 && setfacl -m u:nobody:--- deny2
         echo granted > grant && chmod 600 grant && setfacl -m u:nobody:r grant
         mkdir dacl && setfacl -d -m g::rwx,o::rwx dacl
         mkdir dnamed && setfacl -d -m u:nobody:rwx,g::rx,o::- dnamed
         echo six > six && chmod 644 six
         mkdir priv && chmod 700 priv && echo inside > priv/f && chmod 644 priv/f
         setfacl -m u:nobody:rx priv
         echo own > own && chmod 644 own && chown 54321:54321 own",
    );
}

/// S21, items 1, 4, 5, 6 and 19 (setfacl by the owner updates the mode).
#[test]
fn posix_acls_are_enforced_inherited_and_synced_as_on_overlayfs() {
    same_as_overlayfs(
        acl_layout,
        &[
            // 1: a deny entry on a lower file, on its copied-up copy, on a new file.
            user(NOBODY, "cat deny"),
            root("setfattr -n user.touched -v 1 deny2 && cat deny2 >/dev/null"),
            user(NOBODY, "cat deny2"),
            root("echo new > newf && chmod 644 newf && setfacl -m u:nobody:--- newf"),
            user(NOBODY, "cat newf"),
            // 4: a grant entry on a 0600 file, and on a 0700 dir.
            user(NOBODY, "cat grant"),
            user(NOBODY, "ls priv && cat priv/f"),
            // 5: default ACLs replace the umask and are inherited.
            root("umask 022; touch dacl/new; mkdir dacl/newd; mkdir dacl/newd/sub"),
            root("stat -c '%n %A' dacl/new dacl/newd dacl/newd/sub"),
            root("getfacl -cp dacl/new dacl/newd dacl/newd/sub"),
            root("umask 077; touch dnamed/f; mkdir dnamed/d; mknod dnamed/p p"),
            root("stat -c '%n %A' dnamed/f dnamed/d dnamed/p; getfacl -cp dnamed/f dnamed/d"),
            user(NOBODY, "echo w >> dnamed/f && cat dnamed/f"),
            // 6: a changed ACL shows in the mode at once, and chmod changes the ACL.
            root("setfacl -m u:nobody:rwx six; stat -c %a six"),
            root("getfacl -cp six"),
            root("chmod 640 six; getfacl -cp six; stat -c %a six"),
            user(NOBODY, "cat six"),
            root("setfacl -b six; stat -c %a six; getfacl -cp six"),
            // 19: setfacl by a plain owner updates the mode too.
            user(OWNER, "setfacl -m u:nobody:rwx own; stat -c %a own"),
            user(NOBODY, "echo by-nobody >> own; cat own"),
            user(OWNER, "setfacl -m u:nobody:r deny"),
            REMOUNT_STEP,
            user(NOBODY, "cat deny deny2 newf; cat grant; cat own"),
            root("stat -c '%n %A' dacl/new dacl/newd six own"),
        ],
    );
}

fn flags_layout(l: &Path) {
    sh(
        l,
        "echo imm > imm && echo app > app && echo both > both
         mkdir dimm dapp && echo f > dimm/f && echo f > dapp/f
         echo own > own && chown 54321:54321 own
         chattr +i imm dimm && chattr +a app dapp && chattr +ia both",
    );
}

/// S22, items 2 and 9: what immutable and append-only refuse, on lower objects, on the
/// copies a write makes, on upper objects flagged through the mount, and after a remount.
#[test]
fn immutable_and_append_only_are_honoured_as_on_overlayfs() {
    same_as_overlayfs(
        flags_layout,
        &[
            root("lsattr -d imm app both dimm dapp | cut -d' ' -f1"),
            // Lower objects.
            root("echo x >> imm"),
            root("echo x > imm"),
            root("truncate -s0 imm"),
            root("chmod 600 imm"),
            root("chown 1 imm"),
            root("touch imm"),
            root("touch -d @5 imm"),
            root("setfattr -n user.x -v 1 imm"),
            root("setfacl -m u:nobody:r imm"),
            root("ln imm imm.link"),
            root("mv imm imm.moved"),
            root("rm -f imm"),
            root("truncate -s0 app"),
            root("echo x > app"),
            root("chmod 600 app"),
            root("touch -d @5 app"),
            root("rm -f app"),
            root("mv app app.moved"),
            root("touch app"),
            root("echo appended >> app"),
            root("rm -f both; echo x >> both"),
            root("touch dimm/new"),
            root("mkdir dimm/sub"),
            root("rm -f dimm/f"),
            root("mv dimm/f f.out"),
            root("echo written >> dimm/f"),
            root("touch dapp/new && mkdir dapp/sub"),
            root("rm -f dapp/f"),
            root("mv dapp/f dapp/g"),
            root("cat imm app both dimm/f dapp/f; ls dimm dapp"),
            // Flags through the mount: lower (copied up), upper, by a plain owner.
            root("chattr -i imm && echo more >> imm && cat imm"),
            root("echo up > up && chattr +i up && lsattr up | cut -d' ' -f1"),
            root("echo x >> up; rm -f up; chmod 600 up; mv up up2"),
            root("chattr -i up && rm up"),
            root("mkdir updir && chattr +a updir && touch updir/a && rm updir/a"),
            root("lsattr -d updir | cut -d' ' -f1"),
            user(OWNER, "chattr +d own && lsattr own | cut -d' ' -f1"),
            user(OWNER, "chattr +i own"),
            user(OWNER, "chattr +a own"),
            REMOUNT_STEP,
            root("lsattr -d app dimm updir imm | cut -d' ' -f1"),
            root("rm -f app; echo x > app; touch dimm/x; rm -f updir/a; touch updir/b"),
            root("chattr -a app dapp && rm app && rm dapp/f && ls dapp"),
        ],
    );
}

fn owned_flags_layout(l: &Path) {
    sh(
        l,
        "mkdir od && echo i > od/imm && echo a > od/app && echo f > od/f2
         chown -R 54321:54321 od && chattr +i od/imm && chattr +a od/app",
    );
}

/// S22, items 2 and 9: a plain owner's changes to its own protected files are refused as
/// root's are, and the fsxattr form of the flag ioctls (FS_IOC_FSGETXATTR/FSSETXATTR, as
/// xfs_io uses them) reads and sets the protections as lsattr/chattr do.
#[test]
fn protected_files_refuse_their_owner_and_answer_fsxattr_as_on_overlayfs() {
    same_as_overlayfs(
        owned_flags_layout,
        &[
            user(OWNER, "echo x >> od/imm"),
            user(OWNER, "echo x > od/imm"),
            user(OWNER, "truncate -s0 od/imm"),
            user(OWNER, "chmod 600 od/imm"),
            user(OWNER, "touch -d @5 od/imm"),
            user(OWNER, "rm -f od/imm"),
            user(OWNER, "mv od/imm od/moved"),
            user(OWNER, "echo x > od/app"),
            user(OWNER, "truncate -s0 od/app"),
            user(OWNER, "rm -f od/app"),
            user(OWNER, "echo y >> od/app && cat od/app od/imm"),
            root("for f in imm app f2; do xfs_io -r -c lsattr od/$f; done"),
            // Setting a protection needs CAP_LINUX_IMMUTABLE, which the owner lacks.
            user(OWNER, "xfs_io -r -c 'chattr +a' od/f2"),
            root("xfs_io -r -c 'chattr +a' od/f2 && xfs_io -r -c lsattr od/f2"),
            user(OWNER, "echo x > od/f2"),
            user(OWNER, "echo y >> od/f2 && cat od/f2"),
            root("lsattr od/f2 | cut -d' ' -f1"),
            REMOUNT_STEP,
            root("xfs_io -r -c lsattr od/f2 && xfs_io -r -c 'chattr -a' od/f2"),
            user(OWNER, "echo z > od/f2 && cat od/f2"),
        ],
    );
}

fn xattr_layout(l: &Path) {
    sh(
        l,
        "echo t > tr && setfattr -n trusted.secretname -v 1 tr && setfattr -n user.shown -v 2 tr
         echo t > tr2 && setfattr -n trusted.other -v 1 tr2",
    );
}

/// S23, item 3: trusted.* names are listed to CAP_SYS_ADMIN only, on lower and upper
/// copies.
#[test]
fn trusted_xattr_names_are_listed_to_privileged_callers_only() {
    same_as_overlayfs(
        xattr_layout,
        &[
            user(NOBODY, "getfattr -d -m - tr"),
            root("getfattr -d -m - tr"),
            user(NOBODY, "getfattr -n trusted.secretname tr"),
            root("chmod 600 tr2 && setfattr -n trusted.added -v 3 tr2 && chmod 644 tr2"),
            user(NOBODY, "getfattr -d -m - tr2"),
            root("getfattr -d -m - tr2"),
            // Root without CAP_SYS_ADMIN (a container's root) lists no trusted names.
            root("setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin getfattr -d -m - tr"),
        ],
    );
}

fn sgid_layout(l: &Path) {
    sh(l, "touch f && mkdir d && chown 100:100 f d");
}

/// setfacl by the owner keeps the setgid bit when the owner is in the file's group and
/// clears it when not (posix_acl_update_mode, as chmod does), as on overlayfs (xfstests
/// generic/375; issue 10, item 19).
#[test]
fn setfacl_by_the_owner_drops_setgid_outside_the_group_as_on_overlayfs() {
    const IN_GROUP: &str = "for o in f d; do chmod 2755 $o; \
        setpriv --reuid=100 --regid=100 --clear-groups setfacl -m u::rwx,g::rwx,o::rwx $o; \
        stat -c '%n %A' $o; done";
    const OUTSIDE: &str = "for o in f d; do chmod 2755 $o; \
        setpriv --reuid=100 --regid=101 --clear-groups setfacl -m u::rwx,g::rwx,o::rwx $o; \
        stat -c '%n %A' $o; done";
    same_as_overlayfs(sgid_layout, &[root(IN_GROUP), root(OUTSIDE)]);
    let l = Layers::new(1);
    sgid_layout(&l.lowers[0]);
    chmod(l.root(), 0o755);
    let _m = l.mount("");
    assert_eq!(
        run(&l.mnt, As::Root, OUTSIDE),
        run_expect("f -rwxrwxrwx\nd drwxrwxrwx\n")
    );
}

fn run_expect(stdout: &str) -> String {
    format!("status 0 stdout {stdout:?}")
}

fn empty_layout(_l: &Path) {}

/// copy_file_range into a file made immutable while it is open for writing fails with
/// EPERM, as on overlayfs (xfstests generic/553): the VFS cannot see FUSE inode flags,
/// so the daemon refuses it.
#[test]
fn copy_range_into_a_file_made_immutable_is_refused_as_on_overlayfs() {
    const SCRIPT: &str = r#"python3 - <<'PY'
import os, fcntl, struct
open("file", "wb").write(b"a" * 131072); open("immutable", "wb").write(b"a" * 65536)
fo = os.open("immutable", os.O_RDWR)
flags = struct.unpack("l", fcntl.ioctl(fo, 0x80086601, struct.pack("l", 0)))[0]
fcntl.ioctl(fo, 0x40086602, struct.pack("l", flags | 0x10))
fi = os.open("file", os.O_RDONLY)
try:
    os.copy_file_range(fi, fo, 32768); print("copied")
except OSError as e:
    print("copy_range:", e.strerror)
fcntl.ioctl(fo, 0x40086602, struct.pack("l", flags))
PY"#;
    same_as_overlayfs(empty_layout, &[root(SCRIPT), root("wc -c < immutable")]);
    let l = Layers::new(1);
    let _m = l.mount("");
    let out = run(&l.mnt, As::Root, SCRIPT);
    assert!(out.contains("copy_range: Operation not permitted"), "{out}");
}
