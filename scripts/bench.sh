#!/usr/bin/env bash
# Benchmark of stratafs against a native directory, kernel overlayfs, fuse-overlayfs 1.10
# (C, Debian package) and fuse-overlayfs 2.0 (Rust, crates.io), workloads W1-W12 of
# issue 3. A benchmark, never a timed test: it prints a markdown table and writes it to a
# file; it fails only when it cannot run at all.
#
# What it does (as root, on Debian):
#   1. installs what is missing: fuse-overlayfs fio hyperfine debootstrap attr fuse3
#      (apt), fuse-overlayfs 2.0 (`cargo install fuse-overlayfs` into $BENCH_CACHE/fo2,
#      off PATH so the Debian one stays `fuse-overlayfs`), and builds stratafs release;
#   2. builds the layers in $BENCH_CACHE (reused by later runs): a Debian bookworm
#      minbase rootfs (debootstrap with the mirror apt uses; if that fails, the same
#      priority-required packages fetched with `apt-get download` and unpacked with
#      dpkg-deb plus a dpkg status file; if that fails too, a generated tree and W9 is
#      skipped), and scripts/bench/fixtures.py's trees: lowerdir=top:base where
#        base = rootfs/ + half of merged/        top = many/ (100k files in one dir),
#        big.img (1 GiB), small/ (2,000 files), the other half of merged/ (10k files in
#        100 dirs present in both layers), a few rootfs files and a whiteout;
#      plus 98 small layers extra/NN stacked on top for W12 (100 lowers), and native/,
#      the same merged view as one plain directory;
#   3. runs the workloads, each on every system, round-robin (the order of the systems
#      rotates from run to run), BENCH_RUNS times. Each measurement mounts the union
#      afresh (empty upper and work dirs) and unmounts it after; "cold" is
#      `sync; echo 3 > /proc/sys/vm/drop_caches` after mounting. For FUSE daemons it reads
#      utime+stime from /proc/PID/stat around the timed command and VmHWM after it;
#   4. at the end mounts each FUSE daemon once more, walks everything, reads VmRSS,
#      `echo 2 > /proc/sys/vm/drop_caches` (the kernel forgets inodes) and reads it again;
#   5. writes the report (scripts/bench/report.py): medians, min-max, ratios to kernel
#      overlayfs, the issue's targets with PASS/MISS for stratafs, daemon CPU and RSS.
# Results of the wrong kind (a file count, a size, a tar byte count differing from the
# native dir's) are listed under the table.
#
# Workloads (sizes in BENCH_QUICK=1 mode are smaller):
#   W1  find (| wc -l) and du -s of rootfs/ and of many/, cold then warm
#   W2  lstat(2) of every path of rootfs/ and many/ (scripts/bench/lstat_all.rs), cold, warm
#   W3  tar -cf - rootfs | wc -c, cold
#   W4  dd of big.img to /dev/null (1 MiB blocks), cold then warm: MiB/s
#   W5  append one byte to each of small/*, then to big.img, each cold (copy-up)
#   W6  tar -xf of 20k files into the mount, sync, rm -rf of them
#   W7  ls -f many/ (100k entries), cold then warm
#   W8  fio 4k random writes (psync, buffered) to a new 256 MiB file, BENCH_FIO_SECS: IOPS
#   W9  chroot rootfs dpkg -l, cold, then warm (hyperfine median of 10, 2 warmups)
#   W10 chmod 0600 big.img (a lower file), cold: the time of that one chmod
#   W11 mv merged merged.moved (a dir merged from both lowers, 10k lower files), cold
#       W10 and W11 run again on kernel overlayfs and stratafs with
#       -o metacopy=on,redirect_dir=on (both off by default), in rows of their own
#   W12 W1 on a union of 100 lowers (extra/97:...:extra/00:top:base); not on native
#   W13 page cache: 10 fresh mounts of the same layers each read the same $PC_MIB MiB of
#       big.img (a lower file); the growth of Cached (/proc/meminfo) over the growth
#       when one mount reads it ("x": 1 = the mounts share one page cache); not on native
#   W14 rm -rf of wide/, a dir of 200k entries merged from both lowers, cold
#   C   real clients: scripts/clients/{podman,docker,apt}.sh --repeat BENCH_RUNS on kernel
#       overlayfs, fuse-overlayfs 1.10 and stratafs (the scripts pick the systems; fo2 is
#       not among them); each step is a row "C <client> <step>". Skipped (noted in the
#       report) where the script cannot run here (exit 77)
#
# Usage: scripts/bench.sh            (as root)
# Env:   BENCH_RUNS=5          runs per workload (1 with BENCH_QUICK=1)
#        BENCH_QUICK=1         smoke test: 1 run, small trees, 3 s of fio
#        BENCH_FIO_SECS=30     W8 duration
#        BENCH_CACHE=/var/tmp/stratafs-bench   rootfs, layers, fuse-overlayfs 2.0, results
#        BENCH_OUT=$BENCH_CACHE/bench-results.md   where the report goes (also stdout)
#        BENCH_SYSTEMS="native kernel fo1 fo2 stratafs"   subset / order
#        BENCH_WORKLOADS="W1 W2 ... W12"   subset
#        BENCH_ROOTFS=auto|debootstrap|debs|generated   how to build the rootfs
#        BENCH_CMD_TIMEOUT=900  a measured command running longer than this on a FUSE
#                               mount gets its FUSE connection aborted (recorded as failed)
#        STRATAFS_BIN=PATH      use this binary instead of building
#        STRATAFS_REV=REV       build this git revision (git archive into the cache)
#                               instead of the working tree
#        STRATAFS_OPTS=,opt=..  extra mount options for stratafs (e.g. ",timeout=60")
# It never leaves a mount behind (trap), and kills only the daemons it started, by pid.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/scripts/bench
case "${1:-}" in
    -h | --help) sed -n '2,/^set -/p' "$0" | sed '$d'; exit 0 ;;
    "") ;;
    *) echo "bench.sh: takes no arguments (settings are BENCH_* variables, see --help)" >&2; exit 2 ;;
esac
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${BENCH_RUNS:-1}; FIO_SECS=${BENCH_FIO_SECS:-3}; FIO_SIZE=32M; MODE=quick
    N_MANY=5000; MANY_L=5k; BIG_MIB=64; N_SMALL=200; N_MERGED=10; N_UNTAR=2000
    N_WIDE=4000; PC_MIB=32
else
    RUNS=${BENCH_RUNS:-5}; FIO_SECS=${BENCH_FIO_SECS:-30}; FIO_SIZE=256M; MODE=full
    N_MANY=100000; MANY_L=100k; BIG_MIB=1024; N_SMALL=2000; N_MERGED=100; N_UNTAR=20000
    N_WIDE=200000; PC_MIB=200
fi
WIDE_L="$((N_WIDE / 1000))k"
N_EXTRA=98
BIG_L=$([ "$BIG_MIB" -ge 1024 ] && echo "$((BIG_MIB / 1024))GiB" || echo "${BIG_MIB}MiB")
MERGED_L="$((N_MERGED * 100 / 1000))k"; [ "$N_MERGED" -lt 10 ] && MERGED_L=$((N_MERGED * 100))
UNTAR_L="$((N_UNTAR / 1000))k"
CACHE=${BENCH_CACHE:-/var/tmp/stratafs-bench}
OUT=${BENCH_OUT:-$CACHE/bench-results.md}
SYSTEMS=(${BENCH_SYSTEMS:-native kernel fo1 fo2 stratafs})
WORKLOADS=(${BENCH_WORKLOADS:-W1 W2 W3 W4 W5 W6 W7 W8 W9 W10 W11 W12 W13 W14 C})
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-900}
STRATAFS_OPTS=${STRATAFS_OPTS:-}
CLK_TCK=$(getconf CLK_TCK)

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mounts, drop_caches, chroot)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
mkdir -p "$CACHE" || die "cannot create $CACHE"
START_S=$SECONDS
STAMP=$(date +%Y%m%d-%H%M%S)
RESD=$CACHE/results-$STAMP-$MODE
RUND=$CACHE/run.$$
mkdir -p "$RESD" "$RUND"/{m,bin} || die "cannot create $RESD"
TSV=$RESD/results.tsv
META=$RESD/meta.txt
LOG=$RESD/bench.log
: >"$TSV"; : >"$META"; : >"$LOG"
M=$RUND/m U=$RUND/u W=$RUND/w S=$RUND/s
OUTF=$RUND/out VALUEF=$RUND/value
MOUNTED=0 DPID= WD= SYS= R= VAR_OPTS=

meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }

# ---------------------------------------------------------------- cleanup
force_unmount() { # MNT: abort the FUSE connection if any, then detach
    local mm
    mm=$(findmnt -rno MAJ:MIN -M "$1" 2>/dev/null | head -1)
    if [ -n "$mm" ] && [ -w "/sys/fs/fuse/connections/${mm#*:}/abort" ]; then
        echo 1 >"/sys/fs/fuse/connections/${mm#*:}/abort" 2>/dev/null
    fi
    umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null
}
alive() { # PID: running and not a zombie
    local st
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    { st=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
reap_daemon() { # wait for our daemon to exit after the unmount, else kill it (by pid)
    local pid=$1 i
    [ -n "$pid" ] || return 0
    for i in $(seq 100); do alive "$pid" || return 0; sleep 0.1; done
    say "daemon $pid still running 10 s after unmount: SIGTERM"
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    [ -n "$WD" ] && kill "$WD" 2>/dev/null
    if mountpoint -q "$M" 2>/dev/null; then
        umount "$M" 2>/dev/null || force_unmount "$M"
    fi
    reap_daemon "$DPID"
    native_restore
    if ! mountpoint -q "$M" 2>/dev/null; then
        rm -rf --one-file-system "$RUND"
    else
        say "warning: $M is still mounted, $RUND left in place"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP

# ---------------------------------------------------------------- dependencies
install_deps() {
    local missing=() pair
    for pair in fuse-overlayfs:fuse-overlayfs fio:fio hyperfine:hyperfine \
        debootstrap:debootstrap setfattr:attr fusermount3:fuse3 python3:python3 \
        findmnt:util-linux chroot:coreutils; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; } \
            >>"$LOG" 2>&1 || die "apt-get install ${missing[*]} failed (see $LOG)"
    fi
    FO2=$CACHE/fo2/bin/fuse-overlayfs
    if ! [ -x "$FO2" ]; then
        say "cargo install fuse-overlayfs 2.x into $CACHE/fo2 (about 1-2 min)"
        cargo install fuse-overlayfs --version '^2' --root "$CACHE/fo2" >>"$LOG" 2>&1 ||
            die "cargo install fuse-overlayfs failed (see $LOG)"
    fi
    command -v rustc >/dev/null || die "rustc is needed (to build stratafs and the lstat helper)"
    LSTAT=$CACHE/bin/lstat-all
    if ! [ -x "$LSTAT" ] || [ "$HERE/lstat_all.rs" -nt "$LSTAT" ]; then
        mkdir -p "$CACHE/bin"
        rustc -O --edition 2021 -o "$LSTAT" "$HERE/lstat_all.rs" >>"$LOG" 2>&1 ||
            die "cannot build the lstat helper (see $LOG)"
    fi
}

build_stratafs() {
    local bin rev
    if [ -n "${STRATAFS_BIN:-}" ]; then
        bin=$STRATAFS_BIN rev="given binary ($("$STRATAFS_BIN" --version 2>/dev/null | head -1))"
    elif [ -n "${STRATAFS_REV:-}" ]; then
        rev=$(git -C "$REPO" rev-parse --short "$STRATAFS_REV") || die "bad STRATAFS_REV"
        say "building stratafs $rev (git archive into $CACHE/src)"
        rm -rf "$CACHE/src" && mkdir -p "$CACHE/src"
        git -C "$REPO" archive "$rev" | tar -x -C "$CACHE/src" || die "git archive failed"
        (cd "$CACHE/src" && CARGO_TARGET_DIR=$CACHE/target cargo build --release) >>"$LOG" 2>&1 ||
            die "cargo build --release failed (see $LOG)"
        bin=$CACHE/target/release/stratafs
    else
        say "building stratafs (cargo build --release in $REPO)"
        (cd "$REPO" && cargo build --release) >>"$LOG" 2>&1 ||
            die "cargo build --release failed (see $LOG)"
        bin=$REPO/target/release/stratafs
        rev=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
    fi
    [ -x "$bin" ] || die "no stratafs binary at $bin"
    # a private copy: a rebuild in the repo during the run does not change what we measure
    cp "$bin" "$RUND/bin/stratafs" && STRATAFS=$RUND/bin/stratafs
    meta stratafs_rev "$rev"
}

# ---------------------------------------------------------------- layers
rootfs_debootstrap() { # DIR
    local mirror
    mirror=$(find_mirror)
    say "debootstrap --variant=minbase bookworm ($mirror), about 1 min"
    debootstrap --variant=minbase bookworm "$1" "$mirror" >>"$LOG" 2>&1 &&
        [ -x "$1/usr/bin/dpkg" ]
}

rootfs_debs() { # DIR: the priority-required packages, unpacked, with a dpkg status file
    local d=$1 debs=$1.debs pkgs f
    say "debootstrap unavailable: apt-get download + dpkg-deb -x of the required packages"
    rm -rf "$debs"; mkdir -p "$debs" "$d"/usr/{bin,sbin,lib,lib64} "$d"/var/lib/dpkg/{info,updates} || return 1
    for f in bin sbin lib lib64; do ln -sfn "usr/$f" "$d/$f"; done   # merged /usr, as bookworm
    pkgs=$(apt-cache dumpavail | python3 -c '
import sys
pk = None
want = set(["apt"])
for line in sys.stdin:
    if line.startswith("Package: "): pk = line.split()[1]
    elif line.startswith("Priority: required") and pk: want.add(pk)
print(" ".join(sorted(want)))') || return 1
    [ -n "$pkgs" ] || return 1
    # plus their dependencies (libc6 and friends are not priority required themselves)
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances $pkgs | grep -E '^[a-z0-9]' | sort -u) || return 1
    (cd "$debs" && apt-get download $pkgs) >>"$LOG" 2>&1 || return 1
    : >"$d/var/lib/dpkg/status"
    for f in "$debs"/*.deb; do
        dpkg-deb --fsys-tarfile "$f" | tar -x --keep-directory-symlink -C "$d" || return 1
        dpkg-deb -f "$f" | awk 'NR==1{print; print "Status: install ok installed"; next} {print}' \
            >>"$d/var/lib/dpkg/status"
        echo >>"$d/var/lib/dpkg/status"
    done
    touch "$d/var/lib/dpkg/available"
    rm -rf "$debs"
    [ -x "$d/usr/bin/dpkg" ]
}

rootfs_generated() { # DIR: a rootfs-shaped tree of ~7,000 files (no dpkg: W9 skipped)
    say "building a generated rootfs-like tree (no Debian rootfs available: W9 is skipped)"
    python3 - "$1" <<'EOF'
import os, sys, random
r = random.Random(7); root = sys.argv[1]
for top, n in (("usr/bin", 400), ("usr/lib/x86_64-linux-gnu", 600), ("etc", 300), ("var/lib/dpkg/info", 900)):
    os.makedirs(os.path.join(root, top), exist_ok=True)
    for i in range(n):
        open(os.path.join(root, top, "f%04d" % i), "wb").write(b"x" * r.randint(0, 65536))
for p in range(250):
    d = os.path.join(root, "usr/share/doc/pkg%03d" % p); os.makedirs(d, exist_ok=True)
    for i in range(20):
        open(os.path.join(d, "doc%02d" % i), "wb").write(b"d" * r.randint(0, 8192))
EOF
}

build_rootfs() {
    local d=$CACHE/rootfs how=${BENCH_ROOTFS:-auto}
    if [ -f "$CACHE/rootfs.ok" ] && [ -d "$d" ]; then
        ROOTFS_KIND=$(<"$CACHE/rootfs.ok"); return 0
    fi
    rm -rf --one-file-system "$d" "$d.tmp"
    ROOTFS_KIND=
    if [ "$how" = auto ] || [ "$how" = debootstrap ]; then
        rootfs_debootstrap "$d.tmp" && ROOTFS_KIND=debootstrap
    fi
    if [ -z "$ROOTFS_KIND" ] && { [ "$how" = auto ] || [ "$how" = debs ]; }; then
        rm -rf --one-file-system "$d.tmp"
        rootfs_debs "$d.tmp" && ROOTFS_KIND=debs
    fi
    if [ -z "$ROOTFS_KIND" ]; then
        rm -rf --one-file-system "$d.tmp"; mkdir -p "$d.tmp"
        rootfs_generated "$d.tmp" || die "cannot build any rootfs"
        ROOTFS_KIND=generated
    fi
    mv "$d.tmp" "$d" && echo "$ROOTFS_KIND" >"$CACHE/rootfs.ok"
}

build_fixtures() {
    FX=$CACHE/fx-$MODE
    local stamp="v1 rootfs=$ROOTFS_KIND $N_MANY $BIG_MIB $N_SMALL $N_MERGED $N_EXTRA $N_UNTAR $N_WIDE"
    stamp+=" $(md5sum <"$HERE/fixtures.py" | cut -c1-12)"
    if [ -f "$FX/.ok" ] && [ "$(<"$FX/.ok")" = "$stamp" ]; then return 0; fi
    say "building the layers in $FX ($MODE sizes; a few minutes the first time)"
    rm -rf --one-file-system "$FX"
    mkdir -p "$FX"/{top,base,native,extra} || die "mkdir $FX"
    cp -a "$CACHE/rootfs" "$FX/base/rootfs" && cp -a "$CACHE/rootfs" "$FX/native/rootfs" ||
        die "copying the rootfs failed"
    python3 "$HERE/fixtures.py" "$FX" "$N_MANY" "$BIG_MIB" "$N_SMALL" "$N_MERGED" "$N_EXTRA" \
        "$N_UNTAR" "$N_WIDE" >>"$LOG" 2>&1 || die "fixtures.py failed (see $LOG)"
    (cd "$FX/native" && find rootfs many) >"$FX/lstat.list" || die "lstat list"
    sync
    echo "$stamp" >"$FX/.ok"
}

# ---------------------------------------------------------------- mounts
LOWERS2=top:base
lowers100() {
    local i s=
    for ((i = N_EXTRA - 1; i >= 0; i--)); do s+=$(printf 'extra/%02d:' "$i"); done
    echo "${s}top:base"
}

clean_run_dirs() {
    mountpoint -q "$M" && die "internal: $M still mounted"
    rm -rf --one-file-system "$U" "$W" "$S"
}

daemon_pid() { # MNT: the live FUSE daemon serving it
    local p
    for p in $(daemons_of "$1"); do
        alive "$p" && { echo "$p"; return; }
    done
}

mount_union() { # SYS LOWERS UPPER WORK MNT: mount one union of SYS (not native)
    local sys=$1 o="lowerdir=$2,upperdir=$3,workdir=$4$VAR_OPTS" m=$5 rc=0
    case $sys in
    kernel) (cd "$FX" && mount -t overlay overlay -o "$o" "$m") ;;
    fo1) (cd "$FX" && fuse-overlayfs -o "$o" "$m") ;;
    fo2) (cd "$FX" && "$FO2" -o "$o" "$m") ;;
    stratafs) (cd "$FX" && "$STRATAFS" -o "$o$STRATAFS_OPTS" "$m") ;;
    *) die "unknown system $sys" ;;
    esac >>"$LOG" 2>&1 || rc=$?
    if [ $rc != 0 ] || ! mountpoint -q "$m"; then
        say "mount of $sys failed (rc $rc, see $LOG)"
        echo "mount of $sys failed: rc $rc" >>"$LOG"
        mountpoint -q "$m" && force_unmount "$m"
        return 1
    fi
}

up() { # SYS [LOWERS]: mount a fresh union (or pick the native dir); sets R, DPID, MOUNTED
    local sys=$1 lowers=${2:-$LOWERS2}
    SYS=$sys DPID= MOUNTED=0 R=$RUND/not-mounted
    clean_run_dirs
    mkdir -p "$U" "$W" "$S" "$M"
    if [ "$sys" = native ]; then R=$FX/native; native_restore; MOUNTED=1; return 0; fi
    mount_union "$sys" "$lowers" "$U" "$W" "$M" || return 1
    R=$M MOUNTED=1
    case $sys in fo1 | fo2 | stratafs)
        DPID=$(daemon_pid "$M")
        [ -n "$DPID" ] || say "warning: no daemon process found for $sys"
        ;;
    esac
    return 0
}

down() {
    local pid=$DPID
    if [ "$SYS" != native ] && mountpoint -q "$M"; then
        if ! umount "$M" 2>>"$LOG"; then
            sleep 1
            umount "$M" 2>>"$LOG" || { say "umount $M failed: forcing"; force_unmount "$M"; }
        fi
    fi
    reap_daemon "$pid"
    DPID= MOUNTED=0
    [ "$SYS" = native ] && native_restore
    clean_run_dirs
}

native_restore() { # undo the changes the write workloads make to the native tree
    local n=${FX:-}/native
    [ -n "${FX:-}" ] && [ -d "$n" ] || return 0
    [ -e "$n/merged.moved" ] && [ ! -e "$n/merged" ] && mv "$n/merged.moved" "$n/merged"
    [ -f "$n/big.img" ] && truncate -s "$((BIG_MIB * 1048576))" "$n/big.img" && chmod 0644 "$n/big.img"
    return 0
}

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# ---------------------------------------------------------------- measuring
cpu_ticks() { # PID -> utime+stime in ticks (all threads)
    local st f
    [ -n "$1" ] || return 0
    { st=$(<"/proc/$1/stat"); } 2>/dev/null || return 0
    st=${st##*) }
    read -r -a f <<<"$st"
    echo $((f[11] + f[12]))
}
vm_kb() { # PID FIELD -> kB
    [ -n "$1" ] && awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null
}

watchdog_start() { # abort the FUSE connection if the measured command hangs
    [ "$SYS" = native ] || [ "$SYS" = kernel ] && return 0
    local what=$1
    (
        trap 'kill $sp 2>/dev/null; exit 0' TERM
        sleep "$CMD_TIMEOUT" & sp=$!
        wait $sp
        echo "watchdog: '$what' on $SYS ran over ${CMD_TIMEOUT}s: aborting the FUSE connection" >>"$LOG"
        say "watchdog: '$what' on $SYS ran over ${CMD_TIMEOUT}s: aborting the FUSE connection"
        force_unmount "$M"
    ) &
    WD=$!
}
watchdog_stop() { [ -n "$WD" ] && { kill "$WD" 2>/dev/null; wait "$WD" 2>/dev/null; WD=; }; return 0; }

rec() { # metric value unit secs cpu hwm check rc
    local IFS=$'\t'
    printf 'm\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$SYS" "$RUN" "$2" "$3" "$4" "$5" "$6" "$7" "$8" >>"$TSV"
}

# measure METRIC UNIT CMD...: time CMD (in this shell: functions work), record it.
# Value: seconds; for MiB/s, MIB/seconds; a command that writes $VALUEF sets the value.
# CHK (a shell snippet, run untimed afterwards) gives the check column; else the first
# line of CMD's stdout. CPU_DIV divides the daemon's CPU time (for repeated commands).
CHK= MIB= CPU_DIV=1
measure() {
    local metric=$1 unit=$2 c0 c1 t0 t1 rc secs value cpu= hwm= check
    shift 2
    if [ "$MOUNTED" != 1 ]; then
        rec "$metric" "" "$unit" "" "" "" "not mounted" 99
        CHK= CPU_DIV=1; return 0
    fi
    rm -f "$VALUEF"
    c0=$(cpu_ticks "$DPID")
    watchdog_start "$metric"
    t0=${EPOCHREALTIME/./}
    "$@" >"$OUTF" 2>>"$LOG"
    rc=$?
    t1=${EPOCHREALTIME/./}
    watchdog_stop
    c1=$(cpu_ticks "$DPID")
    secs=$(printf '%d.%06d' $(((t1 - t0) / 1000000)) $(((t1 - t0) % 1000000)))
    case $unit in
    MiB/s) value=$(awk -v m="$MIB" -v s="$secs" 'BEGIN {printf "%.3f", m / s}') ;;
    *) value=$secs ;;
    esac
    [ -s "$VALUEF" ] && value=$(<"$VALUEF")
    [ -n "$c0" ] && [ -n "$c1" ] &&
        cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" -v d="$CPU_DIV" 'BEGIN {printf "%.3f", (b - a) / t / d}')
    hwm=$(vm_kb "$DPID" VmHWM)
    if [ -n "$CHK" ]; then
        check=$(eval "$CHK" 2>&1 | tr '\n\t' '  ' | sed 's/ *$//')
    else
        check=$(head -1 "$OUTF" | tr '\t' ' ')
    fi
    [ $rc != 0 ] && { echo "$metric on $SYS run $RUN: exit $rc" >>"$LOG"; value=; }
    rec "$metric" "$value" "$unit" "$secs" "$cpu" "$hwm" "$check" "$rc"
    printf '    %-34s %-9s %12s %s%s\n' "$metric" "$SYS" "$value" "$unit" \
        "$([ $rc != 0 ] && echo " FAILED rc=$rc")" >&2
    CHK= CPU_DIV=1
    return 0
}

# ---------------------------------------------------------------- workloads
walk_find() { find "$1" | wc -l; }
walk_du() { du -s "$1" >/dev/null; }
ls_count() { ls -f "$1" | wc -l; }
tar_count() { tar -C "$1" -cf - rootfs | wc -c; }
append_each() { local f; for f in "$1"/*; do printf x >>"$f" || return 1; done; }
append_one() { printf x >>"$1"; }
dpkg_l() { chroot "$1" dpkg -l | wc -l; }
hyperfine_med() { # CMD: hyperfine median of 10 runs after 2 warmups -> $VALUEF
    hyperfine -N --warmup 2 --runs 10 --export-json "$RUND/hf.json" "$1" >/dev/null || return 1
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' \
        "$RUND/hf.json" >"$VALUEF"
}
run_fio() { # DIR -> IOPS in $VALUEF
    fio --name=randwrite --directory="$1" --rw=randwrite --bs=4k --size="$FIO_SIZE" \
        --runtime="$FIO_SECS" --time_based --ioengine=psync --fallocate=none \
        --output-format=json --output="$RUND/fio.json" >/dev/null || return 1
    python3 -c '
import json, sys
t = open(sys.argv[1]).read()
print("%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"])' "$RUND/fio.json" >"$VALUEF"
}

dname() { [ "$1" = many ] && echo "$MANY_L-dir" || echo "$1"; }

walks() { # PREFIX SYS LOWERS: find and du of rootfs/ and many/, each on a fresh mount, cold then warm
    local p=$1 sys=$2 lowers=$3 d tool
    for d in rootfs many; do
        for tool in find du; do
            up "$sys" "$lowers" && cold
            measure "$p $tool $(dname $d) cold" s "walk_$tool" "$R/$d"
            measure "$p $tool $(dname $d) warm" s "walk_$tool" "$R/$d"
            down
        done
    done
}
wl_W1() { walks W1 "$1" "$LOWERS2"; }
wl_W12() { [ "$1" = native ] && return 0; walks W12 "$1" "$(lowers100)"; }
wl_W2() {
    up "$1" && cold
    measure "W2 lstat all cold" s "$LSTAT" "$R" "$FX/lstat.list"
    measure "W2 lstat all warm" s "$LSTAT" "$R" "$FX/lstat.list"
    down
}
wl_W3() {
    up "$1" && cold
    measure "W3 tar -c rootfs cold" s tar_count "$R"
    down
}
wl_W4() {
    up "$1" && cold
    MIB=$BIG_MIB
    measure "W4 read $BIG_L cold" MiB/s dd if="$R/big.img" of=/dev/null bs=1M status=none
    measure "W4 read $BIG_L warm" MiB/s dd if="$R/big.img" of=/dev/null bs=1M status=none
    down
}
# The tree NAME of the mount to change in place; on native a scratch copy of it.
writable_tree() { # SYS NAME
    if [ "$1" = native ]; then cp -a "$FX/native/$2" "$S/$2" && echo "$S/$2"; else echo "$R/$2"; fi
}
wl_W5() {
    local sd
    up "$1"
    sd=$(writable_tree "$1" small)
    cold
    CHK="find '$sd' -type f -printf '%s\\n' | awk '{n++; s+=\$1} END {print n, s}'; find '$FX/top/small' -type f -printf '%s\\n' | awk '{s+=\$1} END {print s}'"
    measure "W5 append x$N_SMALL small files" s append_each "$sd"
    sync; cold
    CHK="stat -c %s '$R/big.img' '$FX/top/big.img'"
    measure "W5 append $BIG_L file" s append_one "$R/big.img"
    sync
    down
}
wl_W6() {
    local dst
    up "$1"
    dst=$R/untar-dst; [ "$1" = native ] && dst=$S/untar-dst
    mkdir -p "$dst"
    sync   # no writeback of earlier workloads during the timed untar
    CHK="find '$dst' -type f | wc -l"
    measure "W6 untar $UNTAR_L files" s tar -xf "$FX/untar.tar" -C "$dst"
    sync
    CHK="ls -A '$dst' | wc -l"
    measure "W6 rm -rf $UNTAR_L files" s rm -rf "$dst/untar"
    down
}
wl_W7() {
    up "$1" && cold
    measure "W7 ls -f $MANY_L-dir cold" s ls_count "$R/many"
    measure "W7 ls -f $MANY_L-dir warm" s ls_count "$R/many"
    down
}
wl_W8() {
    local d
    up "$1"
    d=$R/fio-dir; [ "$1" = native ] && d=$S/fio-dir
    mkdir -p "$d"
    measure "W8 fio randwrite 4k" IOPS run_fio "$d"
    down
}
wl_W9() {
    [ "$ROOTFS_KIND" = generated ] && return 0
    up "$1" && cold
    measure "W9 chroot dpkg -l cold" s dpkg_l "$R/rootfs"
    CPU_DIV=12
    measure "W9 chroot dpkg -l warm" s hyperfine_med "chroot $R/rootfs dpkg -l"
    down
}
# with_lever_variants SYS FN: FN once on a fresh cold mount with the default options and,
# where SYS has the levers, once more with metacopy=on,redirect_dir=on (FN gets "" or
# that option string).
with_lever_variants() {
    local x
    for x in "" ",metacopy=on,redirect_dir=on"; do
        [ -n "$x" ] && ! has_levers "$1" && continue
        VAR_OPTS=$x
        up "$1" && cold
        "$2" "$x"
        down
    done
    VAR_OPTS=
}
w10_chmod() {
    CHK="stat -c %a '$R/big.img' '$FX/top/big.img'"
    measure "W10 chmod $BIG_L lower file${1:+, metacopy=on}" s chmod 0600 "$R/big.img"
}
w11_mv() {
    CHK="find '$R/merged.moved' -type f | wc -l; ls '$R/merged.moved' | wc -l; [ -e '$R/merged' ] && echo old-name-still-there"
    measure "W11 mv merged dir ($MERGED_L files)${1:+, redirect_dir=on}" s mv "$R/merged" "$R/merged.moved"
}
wl_W10() { with_lever_variants "$1" w10_chmod; }
wl_W11() { with_lever_variants "$1" w11_mv; }
cached_kb() { awk '$1 == "Cached:" {print $2}' /proc/meminfo; }

# The growth of the page cache when 10 mounts read the same PC_MIB MiB of one lower file,
# over its growth when one does -> $VALUEF. Mounts are made before the cold start, so only
# the reads count.
pagecache_growth() { # SYS
    local i c0 c1= pids=() m
    for i in $(seq 1 10); do
        m=$RUND/pc$i
        mkdir -p "$m/u" "$m/w" "$m/m"
        mount_union "$1" "$LOWERS2" "$m/u" "$m/w" "$m/m" || return 1
    done
    cold; sleep 1
    c0=$(cached_kb)
    for i in $(seq 1 10); do
        dd if="$RUND/pc$i/m/big.img" of=/dev/null bs=1M count="$PC_MIB" status=none || return 1
        [ "$i" = 1 ] && c1=$(cached_kb)
    done
    awk -v a="$c0" -v b="$c1" -v c="$(cached_kb)" 'BEGIN {printf "%.3f", (c - a) / (b - a)}' >"$VALUEF"
    # Not the check column: the sizes differ by design between systems.
    echo "W13 $1 run $RUN: $(( ($(cached_kb) - c0) / 1024 )) MiB cached by 10 mounts, $(( (c1 - c0) / 1024 )) by one" >>"$LOG"
}
pagecache_unmount() {
    local i m
    for i in $(seq 1 10); do
        m=$RUND/pc$i
        if mountpoint -q "$m/m"; then umount "$m/m" 2>>"$LOG" || force_unmount "$m/m"; fi
        rm -rf --one-file-system "$m"
    done
}
wl_W13() {
    [ "$1" = native ] && return 0
    SYS=$1 DPID= MOUNTED=1
    measure "W13 page cache, 10 mounts read ${PC_MIB}MiB" x pagecache_growth "$1"
    pagecache_unmount
    MOUNTED=0
}
wl_W14() {
    local d
    up "$1"
    d=$(writable_tree "$1" wide)
    cold
    CHK="[ -e '$d' ] && echo still-there; ls '$FX/top/wide' | wc -l"
    measure "W14 rm -rf $WIDE_L merged dir cold" s rm -rf "$d"
    down
}

# C: the client scripts, each timing its steps on kernel overlayfs, fuse-overlayfs 1.10 and
# stratafs, repeated RUNS times; folded in as rows "C <client> <step>" (not per system:
# called once, from run 1).
wl_C() {
    [ "$RUN" = 1 ] && [ "$1" = "${SYSTEMS[0]}" ] || return 0
    local c rc res fs sys step secs n
    for c in podman docker apt; do
        res=$RESD/clients-$c.tsv
        say "  C: scripts/clients/$c.sh --repeat $RUNS (its log: $RESD/clients-$c.log)"
        rc=0
        STRATAFS=$STRATAFS CLIENTS_RESULTS=$res \
            bash "$REPO/scripts/clients/$c.sh" --repeat "$RUNS" >"$RESD/clients-$c.log" 2>&1 || rc=$?
        if [ $rc = 77 ]; then
            printf 'note\t%s\n' "C $c skipped: $(grep '^SKIP:' "$RESD/clients-$c.log" | tail -1)" >>"$TSV"
            continue
        fi
        [ $rc != 0 ] && printf 'note\t%s\n' "C $c: the script exited $rc (see clients-$c.log)" >>"$TSV"
        [ -s "$res" ] || continue
        declare -A nth=()
        while IFS=$'\t' read -r fs step secs; do
            case $fs in overlay) sys=kernel ;; fuse-overlayfs) sys=fo1 ;; stratafs) sys=stratafs ;; *) continue ;; esac
            n=$(( ${nth["$fs $step"]:-0} + 1 )); nth["$fs $step"]=$n
            SYS=$sys RUN=$n rec "C $c $step" "$secs" s "$secs" "" "" "" 0
        done <"$res"
        unset nth
        RUN=1
    done
}

# kernel overlayfs and stratafs have metacopy and redirect_dir (off by default in both):
# W10 and W11 run a second time with them on (rows marked metacopy=on / redirect_dir=on)
has_levers() { [ "$1" = kernel ] || [ "$1" = stratafs ]; }

rss_check() { # SYS: walk everything on one mount, VmRSS, drop inodes, VmRSS again
    local b h a
    up "$1" || return 0
    walk_find "$R/rootfs" >/dev/null; walk_find "$R/many" >/dev/null
    du -s "$R/rootfs" "$R/many" >/dev/null
    "$LSTAT" "$R" "$FX/lstat.list" >/dev/null
    b=$(vm_kb "$DPID" VmRSS) h=$(vm_kb "$DPID" VmHWM)
    sync; echo 2 >/proc/sys/vm/drop_caches
    sleep 5
    a=$(vm_kb "$DPID" VmRSS)
    printf 'rss\t%s\t%s\t%s\t%s\n' "$1" "$b" "$h" "$a" >>"$TSV"
    say "  $1: VmRSS $b kB after the walk (VmHWM $h), $a kB after drop_caches 2"
    down
}

# ---------------------------------------------------------------- main
install_deps
build_stratafs
build_rootfs
build_fixtures
native_restore

meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta mode "$([ "$QUICK" = 1 ] && echo 'BENCH_QUICK=1 (small trees)' || echo 'full')"
meta runs "$RUNS"
meta fio_secs "$FIO_SECS"
meta nproc "$(nproc)"
meta kernel "$(uname -r)"
meta cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
meta mem "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
meta fs "$(findmnt -no FSTYPE -T "$CACHE")"
meta fo1_version "fuse-overlayfs $(fuse-overlayfs --version 2>/dev/null | awk '/fuse-overlayfs/ {print $3}') (Debian)"
meta fo2_version "fuse-overlayfs $("$FO2" --version 2>/dev/null | awk '{print $NF}') (crates.io)"
meta stratafs_opts "defaults$STRATAFS_OPTS"
meta ovl_params "$(cd /sys/module/overlay/parameters 2>/dev/null && for p in redirect_dir metacopy index xino_auto; do printf '%s=%s ' "$p" "$(cat $p 2>/dev/null)"; done | sed 's/ $//')"
meta lowers "rootfs: $ROOTFS_KIND bookworm minbase ($(find "$CACHE/rootfs" | wc -l) entries, $(du -sh "$CACHE/rootfs" | cut -f1)); $MANY_L-file dir, $BIG_L file, $N_SMALL small files, $MERGED_L-file merged dir; W12: $((N_EXTRA + 2)) lowers"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
[ "$ROOTFS_KIND" = generated ] &&
    printf 'note\t%s\n' "W9 skipped: the rootfs is a generated tree, not a Debian system (no debootstrap nor Debian packages)" >>"$TSV"

say "mode $MODE, $RUNS run(s), systems: ${SYSTEMS[*]}, workloads: ${WORKLOADS[*]}; results in $RESD"
say "load: $(cut -d' ' -f1-3 /proc/loadavg)"
nsys=${#SYSTEMS[@]}
for ((RUN = 1; RUN <= RUNS; RUN++)); do
    printf 'load\t%s\t%s\n' "$RUN" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '\t')" >>"$TSV"
    say "run $RUN/$RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for wl in "${WORKLOADS[@]}"; do
        say "  $wl"
        for ((k = 0; k < nsys; k++)); do
            sys=${SYSTEMS[$(((k + RUN - 1) % nsys))]}
            "wl_$wl" "$sys"
        done
    done
done
RUN=0
say "memory check (echo 2 > drop_caches)"
for sys in "${SYSTEMS[@]}"; do
    case $sys in fo1 | fo2 | stratafs) rss_check "$sys" ;; esac
done

el=$((SECONDS - START_S))
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta runtime "$((el / 60)) min $((el % 60)) s"
python3 "$HERE/report.py" "$TSV" "$META" >"$RESD/report.md" || die "report.py failed"
cp "$RESD/report.md" "$OUT"
cat "$RESD/report.md"
say "report: $OUT (raw records and log: $RESD)"
