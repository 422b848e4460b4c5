//! The kernel's caches never show stale attributes (S27 of docs/semantics.md; issue 12,
//! lever 1; issue 10, items 6 and 17). stratafs lets the kernel keep names and attributes for an hour, so every
//! attribute the daemon changes behind the kernel's back must be invalidated at once, and a
//! file open for writing (whose passthrough or mmap writes the daemon never sees) must not
//! have its attributes cached at all. Each step reads the changed attribute through the
//! kernel right after the change, on kernel overlayfs and on stratafs side by side.
mod common;
use common::side::*;

use std::path::Path;

fn layout(l: &Path) {
    sh(
        l,
        "echo data > mm && echo data > mm2
         echo a > suid && chmod 4777 suid
         echo f > flagged && echo t > times
         mkdir -p tree/sub && echo x > tree/sub/x && echo y > tree/y
         mkdir -p ls/d && echo f > ls/f",
    );
}

/// mtime seen through the kernel before and after a shared-mmap write, while the file is
/// still open and after it is closed (the write is flushed by msync).
const MMAP_WRITE: &str = r#"python3 -c "
import mmap, os, time
fd = os.open('mm', os.O_RDWR)
before = os.stat('mm').st_mtime_ns
time.sleep(0.02)
m = mmap.mmap(fd, 4)
m[0:4] = b'DATA'
m.flush()
print('open: mtime changed', os.stat('mm').st_mtime_ns != before, 'size', os.stat('mm').st_size)
m.close(); os.close(fd)
print('closed: mtime changed', os.stat('mm').st_mtime_ns != before, open('mm').read())
""#;

/// The same with the file stat'ed (cached) long before it is opened for writing.
const STAT_THEN_WRITE: &str = r#"python3 -c "
import os, time
before = os.stat('mm2')
time.sleep(0.02)
with open('mm2', 'r+b') as f:
    f.seek(0, 2); f.write(b'more'); f.flush()
    print('open', os.stat('mm2').st_size - before.st_size, os.stat('mm2').st_mtime_ns != before.st_mtime_ns)
print('closed', os.stat('mm2').st_size - before.st_size)
""#;

/// Moving a lower directory copies its children (stratafs copies the tree, overlayfs
/// refuses with EXDEV and mv copies): the children's ctime, cached before, is new after.
const CTIME_AFTER_TREE_MOVE: &str = r#"python3 -c "
import os, subprocess, time
before = {p: os.stat('tree/' + p).st_ctime_ns for p in ('sub/x', 'y', 'sub')}
time.sleep(0.02)
subprocess.run(['mv', 'tree', 'moved'], check=True)
print({p: os.stat('moved/' + p).st_ctime_ns != t for p, t in before.items()})
""#;

/// ctime seen through the kernel before and after a change the daemon makes itself.
const CTIME_AFTER_CHATTR: &str = r#"python3 -c "
import os, subprocess, time
before = os.stat('flagged').st_ctime_ns
time.sleep(0.02)
subprocess.run(['chattr', '+d', 'flagged'], check=True)
print('ctime changed', os.stat('flagged').st_ctime_ns != before)
""#;

/// S27: directory listings are kept by the kernel across opens: every change of names shows
/// in the next listing, read through that cache right after the change.
#[test]
fn listings_show_every_change_at_once() {
    same_as_overlayfs(
        layout,
        &[
            root("ls -a ls; ls -a ls; ls -a ls/d"),
            root("touch ls/new; ls -a ls"),
            root("mv ls/new ls/moved; ls -a ls"),
            root("mv ls/f ls/d/f; ls -a ls ls/d"),
            root("ln ls/d/f ls/link; ln -s target ls/sym; mkfifo ls/fifo; ls -a ls"),
            root("mkdir ls/sub; ls -a ls; rmdir ls/sub; ls -a ls"),
            root("rm ls/moved ls/link; ls -a ls"),
            root("mv ls/d ls/d2; ls -a ls ls/d2"),
            root("mkdir ls/d; ls -a ls ls/d; touch ls/d/again; ls -a ls/d"),
            root("cd ls && for i in $(seq 1 300); do touch n$i; done; ls | wc -l; rm n1*; ls | wc -l"),
        ],
    );
}

/// S27: each attribute read through the kernel right after the change, as on overlayfs.
#[test]
fn attributes_changed_behind_the_kernel_show_at_once() {
    same_as_overlayfs(
        layout,
        &[
            // Warm every attribute into the kernel's cache first.
            root("stat -c '%n %a %h %s' mm mm2 suid flagged times"),
            root(MMAP_WRITE),
            root(STAT_THEN_WRITE),
            // A write by another user drops setuid (the kernel asks, or the daemon does it).
            user(NOBODY, "echo more >> suid; stat -c %a suid"),
            root("stat -c %a suid"),
            root(CTIME_AFTER_CHATTR),
            root(CTIME_AFTER_TREE_MOVE),
            root("lsattr flagged | cut -d' ' -f1"),
            // setfacl changes the mode the kernel shows, and chmod the ACL (S21).
            root("setfacl -m u:nobody:rwx times; stat -c %a times; chmod 600 times; getfacl -cp times"),
            root("touch -d @1000000000 times; stat -c %Y times"),
        ],
    );
}
