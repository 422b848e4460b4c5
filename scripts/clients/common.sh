# Shared helpers of scripts/clients/*.sh (sourced, not run).
#
# Exit codes of the client scripts:
#   0   every check passed on stratafs (peers' results are reported, never fatal)
#   1   stratafs misbehaved (a check failed, a step failed or hung), or the script broke
#   77  this machine cannot run the client at all (not root, no /dev/fuse, a package that
#       cannot be installed, no Debian mirror, ...): the reason is the last "SKIP:" line
#
# Everything built or downloaded is cached under $CLIENTS_CACHE (/var/tmp/stratafs-clients),
# never in the repository:
#   bookworm-minbase.tar.gz   debootstrap --variant=minbase bookworm, tarred
#   bookworm-minbase/         the same, extracted (a read-only lower; never written)
#   debs/                     the .debs and apt lists of the apt scenario (so that the
#                             timed `apt-get install` measures dpkg, not the network)
# A run's own dirs (uppers, podman roots, ...) are in a temp dir under the cache, removed
# at exit together with every mount, daemon and process the run started.

. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CLIENTS_CACHE="${CLIENTS_CACHE:-/var/tmp/stratafs-clients}"
SUITE="${SUITE:-bookworm}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"   # seconds any one step may take before it counts as hung
REPEAT="${REPEAT:-1}"                 # --repeat N: run each filesystem N times, report medians

say() { printf '%s\n' "$*" >&2; }
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${CLIENT:-client}" "$*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "ERROR: $*"; exit 1; }

# The command line every client script takes: --fs "overlay fuse-overlayfs stratafs" (the
# filesystems to compare), --repeat N, --help (the script's header comment, up to `set -e`).
parse_client_args() {
    FS_LIST="overlay fuse-overlayfs stratafs"
    while [ $# -gt 0 ]; do
        case "$1" in
            --fs) FS_LIST="$2"; shift 2 ;;
            --repeat) REPEAT="$2"; shift 2 ;;
            -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0 ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
    done
}

# fuse-overlayfs is a peer to compare with, never required: installed if it can be, else
# left out of FS_LIST.
want_fuse_overlayfs_peer() {
    case " $FS_LIST " in *" fuse-overlayfs "*) want_pkgs fuse-overlayfs ;; esac
    if ! command -v fuse-overlayfs >/dev/null; then FS_LIST=$(echo " $FS_LIST " | sed 's/ fuse-overlayfs / /'); fi
}

# Root, /dev/fuse and a FUSE-capable kernel: without them nothing here can run.
require_basics() {
    [ "$(id -u)" = 0 ] || skip "needs root (mounts, chroot, container engines)"
    [ -c /dev/fuse ] || skip "no /dev/fuse on this machine"
    grep -qw fuse /proc/filesystems || modprobe fuse 2>/dev/null || true
    grep -qw fuse /proc/filesystems || skip "the kernel has no FUSE support (/proc/filesystems)"
    command -v apt-get >/dev/null || skip "no apt-get: the client scenarios need a Debian-family host"
}

# Installs Debian packages that are missing. Usage: need_pkgs PKG... ; a failure is a skip.
APT_UPDATED=0
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" = 0 ]; then
        flock "$CLIENTS_CACHE/.apt.lock" timeout 300 apt-get update -qq >"$CLIENTS_CACHE/apt-update.log" 2>&1 \
            || { tail -5 "$CLIENTS_CACHE/apt-update.log" >&2; skip "apt-get update failed on the host"; }
        APT_UPDATED=1
    fi
    flock "$CLIENTS_CACHE/.apt.lock" timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" \
        >"$CLIENTS_CACHE/apt-install.log" 2>&1 \
        || { tail -5 "$CLIENTS_CACHE/apt-install.log" >&2; skip "apt-get install ${missing[*]} failed on the host"; }
}

# Tries to install optional packages (a peer to compare with); never fatal.
want_pkgs() {
    ( need_pkgs "$@" ) 2>/dev/null || log "optional package(s) $* not installable: that peer is left out"
}

# The stratafs binary to test: $STRATAFS, else the repo's release build (built if missing),
# else the one on PATH. Call after new_run_dir: the run uses a copy in $RUN_DIR.
find_stratafs() {
    if [ -n "${STRATAFS:-}" ]; then
        [ -x "$STRATAFS" ] || die "STRATAFS=$STRATAFS is not an executable"
    elif [ -x "$REPO/target/release/stratafs" ]; then
        STRATAFS="$REPO/target/release/stratafs"
    elif [ -f "$REPO/Cargo.toml" ] && command -v cargo >/dev/null; then
        log "building stratafs (cargo build --release)"
        (cd "$REPO" && cargo build --release) >&2 || die "cargo build --release failed"
        STRATAFS="$REPO/target/release/stratafs"
    elif command -v stratafs >/dev/null; then
        STRATAFS="$(command -v stratafs)"
    else
        die "no stratafs binary: set STRATAFS=/path/to/stratafs or build the repo"
    fi
    STRATAFS="$(readlink -f "$STRATAFS")"
    "$STRATAFS" --version >/dev/null 2>&1 || die "$STRATAFS --version failed"
    STRATAFS_ORIG="$STRATAFS"
    # A private copy: a rebuild of the repo during the run must not change the binary
    # that later mounts use.
    if [ -n "$RUN_DIR" ]; then
        mkdir -p "$RUN_DIR/bin"
        cp "$STRATAFS" "$RUN_DIR/bin/stratafs"
        STRATAFS="$RUN_DIR/bin/stratafs"
    fi
    export STRATAFS
}

# Makes sure $CLIENTS_CACHE/bookworm-minbase.tar.gz and the extracted lower exist.
# Sets ROOTFS_TAR and ROOTFS.
ensure_rootfs() {
    mkdir -p "$CLIENTS_CACHE"
    ROOTFS_TAR="$CLIENTS_CACHE/$SUITE-minbase.tar.gz"
    ROOTFS="$CLIENTS_CACHE/$SUITE-minbase"
    exec 8>"$CLIENTS_CACHE/.rootfs.lock"
    flock 8
    if [ ! -s "$ROOTFS_TAR" ]; then
        need_pkgs debootstrap
        local mirror tmp t0
        mirror=$(find_mirror)
        tmp="$CLIENTS_CACHE/debootstrap.tmp"
        rm -rf "$tmp"
        log "debootstrap --variant=minbase $SUITE (mirror $mirror), cached as $ROOTFS_TAR"
        t0=$(date +%s)
        if ! timeout 900 debootstrap --variant=minbase "$SUITE" "$tmp" "$mirror" \
                >"$CLIENTS_CACHE/debootstrap.log" 2>&1; then
            tail -5 "$CLIENTS_CACHE/debootstrap.log" >&2
            rm -rf "$tmp"
            skip "debootstrap --variant=minbase $SUITE $mirror failed: $(grep -m1 "^E:" "$CLIENTS_CACHE/debootstrap.log" || tail -1 "$CLIENTS_CACHE/debootstrap.log")"
        fi
        rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"* 2>/dev/null || true
        tar --numeric-owner --xattrs -C "$tmp" -czf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$tmp" "$ROOTFS"
        log "debootstrap done in $(( $(date +%s) - t0 ))s"
    fi
    if [ ! -e "$ROOTFS.ok" ] || [ "$ROOTFS.ok" -ot "$ROOTFS_TAR" ]; then
        rm -rf "$ROOTFS" "$ROOTFS.ok"
        mkdir -p "$ROOTFS"
        tar --numeric-owner --xattrs -C "$ROOTFS" -xzf "$ROOTFS_TAR" || die "cannot extract $ROOTFS_TAR"
        touch "$ROOTFS.ok"
    fi
    flock -u 8
    exec 8>&-
}

# ---- mounts and cleanup ------------------------------------------------------------------

# Everything registered here is undone at exit, in reverse order.
CLEANUP=()
on_exit() { CLEANUP+=("$*"); }
run_cleanup() {
    local i
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP[$i]}" || true
    done
    CLEANUP=()
}
trap 'run_cleanup' EXIT
trap 'exit 130' INT TERM HUP

is_mounted() { findmnt -rn -M "$1" >/dev/null 2>&1; }

# Unmounts $1 and waits for it to be gone; lazily, and killing its daemon by PID, if it
# will not go. Usage: unmount_wait MNT
unmount_wait() {
    local m="$1" i pids
    is_mounted "$m" || return 0
    pids=$(daemons_of "$m")
    for i in $(seq 50); do
        umount "$m" 2>/dev/null && break
        sleep 0.2
    done
    if is_mounted "$m"; then
        log "umount $m: still busy after 10 s, detaching lazily"
        umount -l "$m" 2>/dev/null || true
    fi
    for i in $(seq 50); do
        [ -z "$pids" ] && break
        local alive=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        pids="$alive"
        [ -z "$pids" ] && break
        sleep 0.2
    done
    if [ -n "$pids" ]; then
        log "daemon(s)$pids of $m still alive 10 s after umount: killing them"
        kill $pids 2>/dev/null || true
    fi
}

# Kills the processes whose root directory is inside $1 (left over in a chroot we made).
kill_chroot_procs() {
    local root="$1" p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        case "$r" in "$root"|"$root"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
    done
    return 0
}

# mount_union FS LOWERS UPPER WORK MNT: FS is stratafs, overlay or fuse-overlayfs.
mount_union() {
    local fs="$1" lowers="$2" upper="$3" work="$4" mnt="$5"
    local opts="lowerdir=$lowers,upperdir=$upper,workdir=$work"
    case "$fs" in
        stratafs) "$STRATAFS" -o "$opts" "$mnt" ;;
        overlay) mount -t overlay overlay -o "$opts" "$mnt" ;;
        fuse-overlayfs) fuse-overlayfs -o "$opts" "$mnt" ;;
        *) die "unknown fs $fs" ;;
    esac
}

fs_label() {
    case "$1" in
        stratafs) echo "stratafs" ;;
        overlay) echo "kernel overlayfs" ;;
        fuse-overlayfs) echo "fuse-overlayfs $(fuse-overlayfs --version 2>/dev/null | awk '/^fuse-overlayfs/ {print $3; exit}')" ;;
        *) echo "$1" ;;
    esac
}

# ---- timings and checks -------------------------------------------------------------------

# RESULTS: lines "fs<TAB>metric<TAB>seconds"; FAILS: lines "fs<TAB>what".
RUN_DIR=""
new_run_dir() { # PREFIX
    mkdir -p "$CLIENTS_CACHE"
    RUN_DIR=$(mktemp -d "$CLIENTS_CACHE/$1.XXXXXX")
    on_exit "rm -rf '$RUN_DIR'"
    RESULTS="$RUN_DIR/results.tsv"
    FAILS="$RUN_DIR/fails.tsv"
    : >"$RESULTS"
    : >"$FAILS"
    # CLIENTS_RESULTS=FILE (scripts/bench.sh): keep the timings after the run dir goes.
    if [ -n "${CLIENTS_RESULTS:-}" ]; then on_exit "cp '$RESULTS' '$CLIENTS_RESULTS'"; fi
}

now() { date +%s.%N; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; } # fs metric secs
fail() { # fs what
    printf '%s\t%s\n' "$1" "$2" >>"$FAILS"
    if [ "$1" = stratafs ]; then
        log "CHECK FAILED on stratafs: $2"
    else
        log "peer check failed on $1 (reported, not fatal): $2"
    fi
}

# timed FS METRIC CMD...: runs CMD, records its wall time; its status is returned (CMD
# brings its own timeout: in_chroot and podman calls have one; 124 means it hung).
timed() {
    local fs="$1" metric="$2" t0 t1 rc=0
    shift 2
    t0=$(now)
    "$@" || rc=$?
    t1=$(now)
    record "$fs" "$metric" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    [ $rc = 124 ] && log "$metric on $fs: timed out after ${STEP_TIMEOUT}s (hung?)"
    return $rc
}

# Prints the side-by-side table of $RESULTS for the given fs list, the median when a step
# ran more than once (--repeat); ratios against kernel overlayfs when it ran.
# Usage: print_table TITLE FS...
print_table() {
    local title="$1"; shift
    # Step order: as first recorded.
    awk -F'\t' '!seen[$2]++ { print $2 }' "$RESULTS" >"$RESULTS.order"
    awk -F'\t' -v order="$*" -v title="$title" -v reps="${REPEAT:-1}" '
        BEGIN { n = split(order, fs, " ") }
        FNR == NR { steps[++ns] = $0; next }
        { k = $2 "\t" $1; c[k]++; val[k, c[k]] = $3 }
        END {
            for (k in c) {
                m = c[k]
                for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++)
                    if (val[k, b] < val[k, a]) { t = val[k, a]; val[k, a] = val[k, b]; val[k, b] = t }
                med[k] = (m % 2) ? val[k, (m + 1) / 2] : (val[k, m / 2] + val[k, m / 2 + 1]) / 2
            }
            printf "\n%s (seconds%s; ratio = stratafs / kernel overlayfs)\n", title, (reps > 1 ? ", median of " reps " runs" : "")
            printf "%-26s", "step"
            for (i = 1; i <= n; i++) printf " %16s", fs[i]
            printf " %10s\n", "ratio"
            for (j = 1; j <= ns; j++) {
                printf "%-26s", steps[j]
                for (i = 1; i <= n; i++) {
                    k = steps[j] "\t" fs[i]
                    if (k in med) printf " %16.2f", med[k]; else printf " %16s", "-"
                }
                ks = steps[j] "\tstratafs"; ko = steps[j] "\toverlay"
                if ((ks in med) && (ko in med) && med[ko] > 0) printf " %9.2fx", med[ks] / med[ko]; else printf " %10s", "-"
                printf "\n"
            }
        }' "$RESULTS.order" "$RESULTS"
}

# run_rounds: run_fs for every filesystem of FS_LIST, REPEAT times; T0 is the start.
run_rounds() {
    local r fs
    T0=$(date +%s)
    for r in $(seq "$REPEAT"); do
        [ "$REPEAT" = 1 ] || log "=== round $r of $REPEAT"
        for fs in $FS_LIST; do run_fs "$fs"; done
    done
}

# finish_run TITLE VERSIONS: the table, the versions line, the check failures and the
# verdict; exits 0 when every check passed on stratafs, 1 otherwise.
finish_run() {
    local rc=0 script
    script=$(basename "$0")
    print_table "$1" $FS_LIST
    say ""
    say "versions: stratafs $("$STRATAFS" --version 2>&1 | head -1 | awk '{print $NF}') ($STRATAFS_ORIG)${2:+; $2}; $(uname -sr); $(nproc) CPUs"
    report_fails || rc=1
    if [ $rc = 0 ]; then
        say "$script: all checks passed on stratafs ($(( $(date +%s) - T0 ))s)"
    else
        say "$script: FAILED: stratafs misbehaved (see the check failures above)"
    fi
    exit $rc
}

# Prints the failures and returns 1 when stratafs had any (peers' are informational).
report_fails() {
    local rc=0
    if [ -s "$FAILS" ]; then
        say ""
        say "check failures:"
        awk -F'\t' '{ printf "  %-18s %s\n", $1, $2 }' "$FAILS" >&2
        grep -q '^stratafs	' "$FAILS" && rc=1
        grep -vq '^stratafs	' "$FAILS" && say "(failures on a peer are reported, not fatal: the peer is the reference, not the subject)"
    fi
    return $rc
}

# ---- the container scenario (podman.sh, docker.sh) -----------------------------------------

# Unmounts every mount under DIR, deepest first (layer mounts podman left, its private
# bind of the storage dir), stopping FUSE daemons by PID if they linger.
unmount_under() { # DIR
    local t
    for t in $(findmnt -rn -o TARGET | grep -F "$1/" | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-); do
        unmount_wait "$(printf '%b' "$t")"
    done
}

# The set of "X /path" lines of the diff, without paths podman itself adds for every
# container (/run/.containerenv, the /etc/hosts & co. mount targets).
diff_set() { { grep -E '^[ACD] /' || true; } | { grep -vE ' /(run|run/\.containerenv|etc/(hosts|hostname|resolv\.conf))$' || true; } | LC_ALL=C sort; }

# check_diff FS WHAT OUT [SET]: the diff in OUT (of podman or docker, WHAT says which)
# must list every DIFF_EXPECTED line and no .wh. name; its set goes to $RUN_DIR/SET
# (default diff.FS). Each miss is a failure of FS.
check_diff() {
    local fs=$1 what=$2 out=$3 set=$RUN_DIR/${4:-diff.$1} missing
    diff_set <"$out" >"$set"
    missing=$(printf '%s\n' "$DIFF_EXPECTED" | LC_ALL=C sort | LC_ALL=C comm -23 - "$set")
    [ -z "$missing" ] || fail "$fs" "$what misses: $(printf '%s' "$missing" | tr '\n' '|')"
    if grep -q ' /.*\.wh\.' "$out"; then
        fail "$fs" "$what shows .wh. names: $(grep '\.wh\.' "$out" | head -3 | tr '\n' '|')"
    fi
}

C1_CHANGES='set -e
echo c1 >> /etc/strata-empty
ln /etc/debian_version /srv/debian_version.link
rm /usr/share/doc/ONLY
rm -rf /usr/share/zoneinfo/America
echo c1 > /srv/c1-added && ln /srv/c1-added /srv/c1-added.link
mkdir /var/c1dir && echo x > /var/c1dir/inner
rm /etc/shells'

# c1_round FS LOGS ENGINE_NAME ENGINE...: the steps every engine scenario takes once its
# image localhost/deb:built exists. ENGINE is the command that runs the engine (its roots,
# its user, its timeout): run c1 with C1_CHANGES (and C1_MORE, changes of one scenario
# only), diff c1 (check_diff), commit c1 as localhost/deb:committed, check that image in a
# container and list its tree into $RUN_DIR/tree.FS. LOGS prefixes the log files' paths.
# Returns 1 when c1 did not run or was not committed: what follows needs it.
c1_round() {
    local fs=$1 logs=$2 name=$3 rc=0 out
    shift 3
    local run=("$@" run --network none --pull never)
    timed "$fs" "run c1 (changes)" "${run[@]}" --name c1 localhost/deb:built \
        sh -c "$C1_CHANGES${C1_MORE:+
$C1_MORE}" >"${logs}c1.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "$name run c1: status $rc: $(tail -5 "${logs}c1.log" | tr '\n' '|')"
        return 1
    fi
    rc=0
    # `container diff`: a bare `podman diff c1` looks for an image first, and takes one
    # whose ID begins with the hex digits "c1" (1 in 256 per image) over the container.
    timed "$fs" "diff c1" "$@" container diff c1 >"${logs}diff.out" 2>"${logs}diff.err" || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "$name diff c1: status $rc: $(tail -5 "${logs}diff.err" | tr '\n' '|')"
    else
        check_diff "$fs" "$name diff c1" "${logs}diff.out"
    fi
    rc=0
    timed "$fs" "commit c1" "$@" commit c1 localhost/deb:committed >"${logs}commit.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "$name commit c1: status $rc: $(tail -5 "${logs}commit.log" | tr '\n' '|')"
        return 1
    fi
    rc=0
    out=$(timed "$fs" "run + check committed" "${run[@]}" --rm localhost/deb:committed \
        sh /usr/local/bin/check-image.sh committed 2>&1) || rc=$?
    [ $rc = 0 ] || fail "$fs" "check of the committed image: $(printf '%s' "$out" | head -20 | tr '\n' '|')"
    "${run[@]}" --rm localhost/deb:committed sh -c "$TREE_CMD" 2>&1 | tree_skip >"$RUN_DIR/tree.$fs" || true
    [ "$(wc -l <"$RUN_DIR/tree.$fs")" -gt 5000 ] \
        || fail "$fs" "find / in a container of the committed image listed only $(wc -l <"$RUN_DIR/tree.$fs") entries: $(head -3 "$RUN_DIR/tree.$fs" | tr '\n' '|')"
}

# Paths whose entry in the diff depends on the diff method, not on the filesystem: the
# kernel driver reads the upper dir, where `ln` copied the (unchanged) lower file up; the
# naive diff of a mount_program compares stat data, which did not change.
DIFF_METHOD_ONLY='C /etc/debian_version'

# What the diff c1 must list at least (kernel overlayfs and the FUSE programs alike).
DIFF_EXPECTED='A /srv/c1-added
A /srv/c1-added.link
A /srv/debian_version.link
A /var/c1dir
A /var/c1dir/inner
C /etc/strata-empty
D /etc/shells
D /usr/share/doc/ONLY
D /usr/share/zoneinfo/America'


# The diff on a FUSE mount program walks the mounted layer against a read-only mount of
# its parent; on kernel overlayfs it reads the upper dir. Both must find the same changes.
# Compares $RUN_DIR/diff.FS and diff-image.FS with the overlay ones. Usage: compare_diffs ENGINE FS...
compare_diffs() {
    local engine="$1" f fs d what
    shift
    for f in diff diff-image; do
        [ -e "$RUN_DIR/$f.overlay" ] || continue
        for fs in "$@"; do
            [ "$fs" != overlay ] && [ -e "$RUN_DIR/$f.$fs" ] || continue
            if ! d=$(LC_ALL=C diff <(grep -vxF "$DIFF_METHOD_ONLY" "$RUN_DIR/$f.overlay") <(grep -vxF "$DIFF_METHOD_ONLY" "$RUN_DIR/$f.$fs")); then
                what="$engine diff c1"; [ $f = diff-image ] && what="$engine diff of the committed image"
                fail "$fs" "$what differs from kernel overlayfs' (< overlay, > $fs): $(printf '%s' "$d" | grep '^[<>]' | head -12 | tr '\n' '|')"
            fi
        done
    done
}

# A listing of the whole tree of a container (type, mode, owner, size, link count, symlink
# target), run inside it; tree_skip drops what differs for reasons other than the
# filesystem: the files the engine mounts in, and the names of the hard links that a naive
# diff cannot carry (see the Containerfile: an unchanged lower file linked to a new name).
TREE_CMD='find / -xdev \( -type d -printf "d %m %U:%G %p\n" \) -o \( -type l -printf "l %U:%G %p -> %l\n" \) -o -printf "%y %m %U:%G %s %n %p\n"'
tree_skip() {
    { grep -vE ' /(etc/(hosts|hostname|resolv\.conf)|run/\.containerenv|\.dockerenv|usr/bin/tac|usr/local/bin/tac-hardlink|etc/debian_version|srv/debian_version\.link)$' || true; } | LC_ALL=C sort
}

# Compares $RUN_DIR/tree.FS with tree.overlay. Usage: compare_trees FS...
compare_trees() {
    local fs d
    [ -s "$RUN_DIR/tree.overlay" ] || return 0
    for fs in "$@"; do
        [ "$fs" != overlay ] && [ -e "$RUN_DIR/tree.$fs" ] || continue
        if ! d=$(LC_ALL=C diff "$RUN_DIR/tree.overlay" "$RUN_DIR/tree.$fs"); then
            fail "$fs" "tree of the committed image differs from kernel overlayfs' ($(printf '%s\n' "$d" | grep -c '^[<>]') lines; < overlay, > $fs): $(printf '%s\n' "$d" | grep '^[<>]' | head -20 | tr '\n' '|')"
        fi
    done
}
