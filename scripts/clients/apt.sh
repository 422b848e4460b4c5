#!/usr/bin/env bash
# apt/dpkg inside a chroot of the union (issue 7), on stratafs and, the same way, on the
# peers kernel overlayfs and fuse-overlayfs (Debian's package, when it installs).
#
#   scripts/clients/apt.sh [--fs "overlay fuse-overlayfs stratafs"] [--repeat N]
#
# The lower is a cached debootstrap --variant=minbase bookworm (see common.sh). For each
# filesystem: mount lower + a fresh upper, bind /proc /sys /dev /dev/pts into it, and in
# the chroot: apt-get update; apt-get install -y --no-install-recommends python3-minimal
# git debsums; run python3 and a git commit; apt-get remove -y tzdata (files in the lower);
# apt-get purge -y git (files in the upper); dpkg --verify and debsums -s -a must be clean.
# Then unmount, mount the same upper again: still clean, tzdata and git still gone.
# The .debs and apt lists are fetched once and cached, then copied into the union before
# the timed steps, so `apt-get install` times dpkg on the filesystem, not the network
# (`apt-get update` still runs against the mirror: it only revalidates the cached lists).
#
# Prints the timings side by side. Exit 0: every check passed on stratafs; 1: stratafs
# misbehaved (failures on a peer are printed, not fatal); 77: this machine cannot run the
# scenario (reason on the "SKIP:" line). Needs root and /dev/fuse; installs debootstrap,
# fuse3 and fuse-overlayfs with apt-get when missing.
set -euo pipefail
CLIENT=apt
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_client_args "$@"

PKGS="python3-minimal git debsums"

require_basics
need_pkgs debootstrap fuse3 util-linux
want_fuse_overlayfs_peer
new_run_dir apt
find_stratafs
ensure_rootfs

# ---- the chroot --------------------------------------------------------------------------

BINDS=(proc sys dev dev/pts)

bind_chroot() { # MNT
    local b
    for b in "${BINDS[@]}"; do
        mount --bind "/$b" "$1/$b" || return 1
        mount --make-private "$1/$b" 2>/dev/null || true
    done
}

unbind_chroot() { # MNT
    local i
    kill_chroot_procs "$1"
    for ((i = ${#BINDS[@]} - 1; i >= 0; i--)); do
        is_mounted "$1/${BINDS[$i]}" || continue
        umount "$1/${BINDS[$i]}" 2>/dev/null || umount -l "$1/${BINDS[$i]}" || true
    done
}

# Runs a command in the chroot with a clean environment and the step timeout.
in_chroot() { # MNT CMD...
    local m="$1"; shift
    timeout -k 10 "$STEP_TIMEOUT" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive chroot "$m" "$@"
}

# ---- the .debs and lists, fetched once ----------------------------------------------------

DEBS="$CLIENTS_CACHE/apt-debs"
ensure_debs() {
    exec 9>"$CLIENTS_CACHE/.debs.lock"
    flock 9
    if [ -e "$DEBS.ok" ] && [ "$DEBS.ok" -nt "$ROOTFS_TAR" ]; then flock -u 9; return 0; fi
    rm -rf "$DEBS" "$DEBS.ok"
    local d="$RUN_DIR/prep" fs=overlay
    mkdir -p "$d/upper" "$d/work" "$d/mnt"
    log "fetching the .debs of $PKGS once (cached in $DEBS)"
    if ! mount_union overlay "$ROOTFS" "$d/upper" "$d/work" "$d/mnt" 2>/dev/null; then
        fs=stratafs
        mount_union stratafs "$ROOTFS" "$d/upper" "$d/work" "$d/mnt" || die "cannot mount the prep union"
    fi
    on_exit "unbind_chroot '$d/mnt'; unmount_wait '$d/mnt'"
    bind_chroot "$d/mnt" || die "bind mounts into the prep chroot failed"
    local ok=1
    in_chroot "$d/mnt" apt-get update >"$RUN_DIR/prep-update.log" 2>&1 || ok=0
    if [ $ok = 1 ]; then
        in_chroot "$d/mnt" apt-get install -y --no-install-recommends --download-only $PKGS \
            >"$RUN_DIR/prep-install.log" 2>&1 || ok=0
    fi
    if [ $ok = 0 ]; then
        cat "$RUN_DIR"/prep-*.log | tail -8 >&2
        unbind_chroot "$d/mnt"; unmount_wait "$d/mnt"
        skip "apt-get in a chroot of the $SUITE rootfs cannot fetch $PKGS from $(find_mirror)"
    fi
    mkdir -p "$DEBS.tmp/archives" "$DEBS.tmp/lists"
    cp -a "$d/mnt/var/cache/apt/archives/"*.deb "$DEBS.tmp/archives/"
    find "$d/mnt/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -exec cp -a {} "$DEBS.tmp/lists/" \;
    unbind_chroot "$d/mnt"
    unmount_wait "$d/mnt"
    rm -rf "$d"
    mv "$DEBS.tmp" "$DEBS"
    touch "$DEBS.ok"
    log "cached $(ls "$DEBS/archives" | wc -l) .debs (prep on $fs)"
    flock -u 9
    exec 9>&-
}
ensure_debs

# ---- one filesystem -------------------------------------------------------------------------

# check FS WHAT CMD...: runs CMD in the chroot; a non-zero status or any output on a
# command that must be silent is a failure. Output goes to the step log.
check_silent() { # FS MNT WHAT CMD...
    local fs="$1" m="$2" what="$3" out rc=0
    shift 3
    out=$(in_chroot "$m" "$@" 2>&1) || rc=$?
    if [ $rc != 0 ] || [ -n "$out" ]; then
        fail "$fs" "$what: status $rc, output: $(printf '%s' "$out" | head -12 | tr '\n' '|')"
        return 1
    fi
}

check_cmd() { # FS MNT WHAT CMD...: CMD must exit 0
    local fs="$1" m="$2" what="$3" out rc=0
    shift 3
    out=$(in_chroot "$m" "$@" 2>&1) || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "$what: status $rc, output: $(printf '%s' "$out" | tail -12 | tr '\n' '|')"
        return 1
    fi
}

# The checks that hold after the removals, before and after the remount.
state_checks() { # FS MNT WHEN
    local fs="$1" m="$2" w="$3"
    check_silent "$fs" "$m" "dpkg --verify ($w)" dpkg --verify || true
    check_silent "$fs" "$m" "debsums -s -a ($w)" debsums -s -a || true
    check_silent "$fs" "$m" "dpkg --audit ($w)" dpkg --audit || true
    check_cmd "$fs" "$m" "tzdata gone ($w)" sh -c '
        s=$(dpkg-query -W -f="\${Status}" tzdata 2>/dev/null || true)
        case "$s" in *" installed") echo "dpkg says tzdata is $s"; exit 1 ;; esac
        for p in /usr/share/zoneinfo/UTC /usr/share/zoneinfo/Europe/Paris /usr/share/zoneinfo/America; do
            if [ -e "$p" ] || [ -L "$p" ]; then echo "lookup still finds $p"; exit 1; fi
        done
        if [ -d /usr/share/zoneinfo ]; then
            ls -A /usr/share/zoneinfo | grep -qx -e UTC -e Europe -e America && { echo "readdir still lists tzdata files: $(ls -A /usr/share/zoneinfo | head -5 | tr "\n" " ")"; exit 1; }
        fi
        ls -A /usr/share/zoneinfo/ 2>/dev/null | grep -q "^\.wh\." && { echo ".wh. names visible"; exit 1; }
        exit 0' || true
    check_cmd "$fs" "$m" "git gone ($w)" sh -c '
        if dpkg -s git >/dev/null 2>&1; then echo "dpkg still knows git: $(dpkg-query -W -f="\${Status}" git)"; exit 1; fi
        for p in /usr/bin/git /usr/share/doc/git /usr/lib/git-core/git; do
            if [ -e "$p" ]; then echo "lookup still finds $p"; exit 1; fi
        done
        ls /usr/bin | grep -qx git && { echo "readdir of /usr/bin lists git"; exit 1; }
        exit 0' || true
    check_cmd "$fs" "$m" "python3 runs ($w)" python3 -c '
import os, sys
with open("/root/py-check", "w") as f:
    f.write(sys.version)
    f.flush()
    os.fsync(f.fileno())
assert open("/root/py-check").read() == sys.version
os.unlink("/root/py-check")
' || true
    check_cmd "$fs" "$m" "git repo intact ($w)" sh -c 'test -f /root/repo/.git/HEAD && test "$(cat /root/repo/a)" = "hello
more"' || true
}

# Paths whose details differ between two identical runs (times, logs, caches, git object
# names): left out of the tree comparison.
MANIFEST_SKIP=' /(var/log|var/cache/apt|var/cache/debconf|var/cache/ldconfig|root/repo/\.git/(objects|logs|index)|tmp)(/|$)'

run_fs() { # FS
    local fs="$1" d="$RUN_DIR/$1" m rc
    m="$d/mnt"
    mkdir -p "$d/upper" "$d/work" "$m"
    log "== $(fs_label "$fs")"
    # The same start for each: the lower in the page cache, nothing dirty.
    tar -C "$ROOTFS" -cf - . | cat >/dev/null
    sync
    if ! mount_union "$fs" "$ROOTFS" "$d/upper" "$d/work" "$m" 2>"$d/mount.err"; then
        fail "$fs" "mount failed: $(cat "$d/mount.err")"
        return
    fi
    on_exit "unbind_chroot '$m'; unmount_wait '$m'"
    bind_chroot "$m" || { fail "$fs" "bind mounts into the chroot failed"; return; }

    # Untimed: the cached .debs and lists go into the union (apt will find them there).
    cp -a "$DEBS/archives/." "$m/var/cache/apt/archives/"
    cp -a "$DEBS/lists/." "$m/var/lib/apt/lists/"

    rc=0
    timed "$fs" "apt-get update" in_chroot "$m" apt-get update >"$d/update.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        if grep -qE 'Temporary failure|Could not (resolve|connect)|Connection (timed out|failed|refused)|Network is unreachable' "$d/update.log"; then
            log "apt-get update on $fs: the mirror is unreachable now, going on with the cached lists"
        else
            fail "$fs" "apt-get update: status $rc: $(tail -5 "$d/update.log" | tr '\n' '|')"
        fi
    fi

    rc=0
    timed "$fs" "apt-get install" in_chroot "$m" apt-get install -y --no-install-recommends $PKGS \
        >"$d/install.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "apt-get install $PKGS: status $rc: $(tail -8 "$d/install.log" | tr '\n' '|')"
        unbind_chroot "$m"; unmount_wait "$m"
        return
    fi
    grep -q '^Get:' "$d/install.log" && log "note: apt downloaded packages during the timed install on $fs (the mirror has newer versions than the cache)"

    rc=0
    timed "$fs" "python3 + git commit" in_chroot "$m" sh -c '
        set -e
        python3 -c "import os, sys; assert os.path.isdir(os.path.dirname(os.__file__)); print(sys.version)" >/dev/null
        mkdir -p /root/repo && cd /root/repo
        git init -q -b main .
        git config user.email ci@example.invalid && git config user.name ci
        echo hello > a && git add a && git commit -q -m first
        echo more >> a && git commit -q -a -m second
        test "$(git log --oneline | wc -l)" = 2
        git fsck --strict --no-progress 2>&1
        git status --porcelain | { ! grep .; }
    ' >"$d/git.log" 2>&1 || rc=$?
    [ $rc = 0 ] || fail "$fs" "python3 + git commit: status $rc: $(tail -8 "$d/git.log" | tr '\n' '|')"

    rc=0
    timed "$fs" "apt-get remove tzdata" in_chroot "$m" apt-get remove -y tzdata >"$d/remove.log" 2>&1 || rc=$?
    [ $rc = 0 ] || fail "$fs" "apt-get remove -y tzdata: status $rc: $(tail -8 "$d/remove.log" | tr '\n' '|')"

    rc=0
    timed "$fs" "apt-get purge git" in_chroot "$m" apt-get purge -y git >"$d/purge.log" 2>&1 || rc=$?
    [ $rc = 0 ] || fail "$fs" "apt-get purge -y git: status $rc: $(tail -8 "$d/purge.log" | tr '\n' '|')"

    local t0 t1
    t0=$(now)
    state_checks "$fs" "$m" "mounted"
    t1=$(now)
    record "$fs" "verify (dpkg+debsums)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"

    # Unmount, mount the same upper again: the state must have been written to the upper.
    unbind_chroot "$m"
    unmount_wait "$m"
    if is_mounted "$m"; then fail "$fs" "could not unmount"; return; fi
    if ! mount_union "$fs" "$ROOTFS" "$d/upper" "$d/work" "$m" 2>"$d/mount.err"; then
        fail "$fs" "remount of the same upper failed: $(cat "$d/mount.err")"
        return
    fi
    bind_chroot "$m" || { fail "$fs" "bind mounts into the chroot failed (remount)"; return; }
    t0=$(now)
    state_checks "$fs" "$m" "after remount"
    t1=$(now)
    record "$fs" "verify after remount" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    # The whole merged tree, for the comparison with the kernel overlayfs run.
    in_chroot "$m" find / -xdev \( -type d -printf 'd %m %U:%G %p\n' \) \
        -o \( -type l -printf 'l %U:%G %p -> %l\n' \) -o -printf '%y %m %U:%G %s %n %p\n' 2>&1 \
        | grep -vE "$MANIFEST_SKIP" | LC_ALL=C sort >"$RUN_DIR/manifest.$fs" || true
    [ "$(wc -l <"$RUN_DIR/manifest.$fs")" -gt 5000 ] \
        || fail "$fs" "find / in the chroot listed only $(wc -l <"$RUN_DIR/manifest.$fs") entries: $(head -3 "$RUN_DIR/manifest.$fs" | tr '\n' '|')"
    log "$fs: merged tree of $(wc -l <"$RUN_DIR/manifest.$fs") entries listed"
    unbind_chroot "$m"
    unmount_wait "$m"
    is_mounted "$m" && fail "$fs" "could not unmount (after remount)"
    log "$fs: upper holds $(du -sm "$d/upper" | cut -f1) MiB"
    rm -rf "$d"
}

run_rounds

# The merged trees after the scenario (types, modes, owners, sizes, link counts, symlink
# targets) must be those of the kernel overlayfs run.
if [ -s "$RUN_DIR/manifest.overlay" ]; then
    for fs in $FS_LIST; do
        [ "$fs" != overlay ] && [ -e "$RUN_DIR/manifest.$fs" ] || continue
        if ! d=$(LC_ALL=C diff "$RUN_DIR/manifest.overlay" "$RUN_DIR/manifest.$fs"); then
            fail "$fs" "merged tree after the scenario differs from kernel overlayfs' ($(printf '%s\n' "$d" | grep -c '^[<>]') lines; < overlay, > $fs): $(printf '%s\n' "$d" | grep '^[<>]' | head -20 | tr '\n' '|')"
        fi
    done
fi

finish_run "apt/dpkg in a chroot ($SUITE minbase + $PKGS)"
