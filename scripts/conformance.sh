#!/usr/bin/env bash
# POSIX conformance gate for stratafs, with the Rust pjdfstest (crates.io: pjdfstest).
#
# Runs the same pjdfstest suite against
#   native    a plain directory on the filesystem of the temp dir (ext4 on CI)
#   overlay   kernel overlayfs (mount -t overlay), two lowers + upper, for comparison
#   stratafs  target/release/stratafs -o lowerdir=L1:L2,upperdir=U,workdir=W,
#             allow_other,default_permissions   (pjdfstest switches uids: needs both)
# In both unions the test dir is a directory present in both lowers (a merged dir), so
# every test starts below a copied-up parent. The three test dirs have paths of the same
# length ($T/nat/m/p, $T/ovl/m/p, $T/sfs/m/p), short ones: pjdfstest binds unix sockets
# by absolute path, and sun_path holds only 107 bytes (ENAMETOOLONG beyond).
#
# Prints passed/failed/skipped for each, the tests that pass on native but fail on
# stratafs (with pjdfstest's message), and exits 1 if there is any such test (the gate),
# or if stratafs could not be mounted or the run did not complete.
# Kernel overlayfs results are informational (it fails the 41 `::char` tests because
# it reserves char 0/0 for whiteouts; stratafs's default `.wh.` whiteouts do not).
#
# Not run: the 13 `erofs` tests (they need allow_remount, i.e. remounting the fs under
# test read-only). The 2 `exdev` tests run against a small tmpfs given as -s.
# `link::link_count_max` is skipped by pjdfstest itself on FUSE and overlayfs: glibc's
# pathconf(_PC_LINK_MAX) answers the "unknown" 127 there.
#
# Usage: scripts/conformance.sh [--table] [--keep] [PATTERN...]
#   --table    also print a markdown table of the counts (for README.md)
#   --keep     keep the temp dir (logs, layers) instead of removing it
#   PATTERN    only tests whose name contains PATTERN (pjdfstest filter)
# Env: STRATAFS_BIN   use this binary instead of building target/release/stratafs
#      PJDFSTEST      pjdfstest binary (default: from PATH or ~/.cargo/bin, installed if missing)
#      PJDFSTEST_VERSION  version installed when missing (default 0.2.2)
#      PJDFSTEST_TIMEOUT  seconds per suite run (default 900)
#      CONFORMANCE_LOGS   copy the three pjdfstest logs and the daemon log into this dir
# Needs root (mounts, uid switching) and /dev/fuse.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
table=0
keep=0
patterns=()
for a in "$@"; do
    case "$a" in
        --table) table=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "conformance.sh: unknown option $a" >&2; exit 2 ;;
        *) patterns+=("$a") ;;
    esac
done

say() { printf '%s\n' "$*"; }
die() { printf 'conformance.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mounts, and pjdfstest switches uids)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
export PATH="$PATH:$HOME/.cargo/bin"
export LC_ALL=C

# --- tools ------------------------------------------------------------------------------
pjd="${PJDFSTEST:-$(command -v pjdfstest || true)}"
if [ -z "$pjd" ]; then
    ver="${PJDFSTEST_VERSION:-0.2.2}"
    say "== installing pjdfstest $ver (cargo install; needs libacl1-dev)"
    cargo install --locked --quiet pjdfstest --version "$ver" \
        || die "cargo install pjdfstest failed (apt-get install -y libacl1-dev?)"
    pjd="$(command -v pjdfstest)"
fi
if [ -n "${STRATAFS_BIN:-}" ]; then
    strata="$STRATAFS_BIN"
else
    (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
    strata="$repo/target/release/stratafs"
fi
[ -x "$strata" ] || die "no stratafs binary at $strata"

# Two unprivileged users, each in its own primary group (pjdfstest's [dummy_auth]).
user1=nobody
user2=
for u in tests daemon bin; do
    if id -u "$u" >/dev/null 2>&1; then user2=$u; break; fi
done
id -u "$user1" >/dev/null 2>&1 || die "user 'nobody' is missing"
[ -n "$user2" ] || die "need a second unprivileged user (tests, daemon or bin)"

# --- temp dir and cleanup ---------------------------------------------------------------
T="$(mktemp -d "${TMPDIR:-/tmp}/sfsconf.XXXXXX")"
chmod 0755 "$T"     # the dummy users must be able to walk into the test dirs
daemon_pid=
mounts=()           # mount points to take down on exit, in mount order

under_T_mounted() { awk -v p="$T/" 'index($2, p) == 1 { found = 1 } END { exit !found }' /proc/mounts; }

stop_daemon() {
    # Ends the stratafs daemon we started (by its pid), after its mount is gone.
    [ -n "$daemon_pid" ] || return 0
    local i
    for i in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    daemon_status=0
    wait "$daemon_pid" 2>/dev/null || daemon_status=$?
    daemon_pid=
}

cleanup() {
    local rc=$? i m
    set +e
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        m="${mounts[$i]}"
        mountpoint -q "$m" || continue
        if ! umount "$m" 2>/dev/null; then
            # busy or hung: end our daemon (aborts the FUSE connection), then detach
            [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && sleep 1
            umount "$m" 2>/dev/null || umount -l "$m"
        fi
    done
    stop_daemon
    if under_T_mounted; then
        echo "conformance.sh: something is still mounted under $T; not removing it" >&2
    elif [ "$keep" = 1 ]; then
        echo "kept $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- pjdfstest configuration ------------------------------------------------------------
cat >"$T/pjdfstest.toml" <<EOF
# Linux features that ext4, overlayfs and stratafs all offer
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["$user1", "$(id -gn "$user1")"], ["$user2", "$(id -gn "$user2")"]]
EOF

secondary=()
mkdir "$T/secondary"
if mount -t tmpfs -o size=16m,mode=0755 stratafs-conf-secondary "$T/secondary" 2>/dev/null; then
    mounts+=("$T/secondary")
    secondary=(-s "$T/secondary")
else
    say "note: cannot mount a tmpfs for the exdev tests; they will be skipped"
fi

# Two lower layers l1 (top) and l2 that both have the test dir p/, so m/p is merged.
make_layers() { # DIR
    mkdir -p "$1/l1/p" "$1/l2/p" "$1/u" "$1/w" "$1/m"
    echo top >"$1/l1/p/from-l1"
    echo bottom >"$1/l2/p/from-l2"
    echo hidden >"$1/l2/p/from-l1"
    chmod -R a+rX "$1"
}

# run_suite NAME DIR: runs pjdfstest in DIR, writes $T/NAME.log and $T/NAME.res
# (lines: name<TAB>ok|FAILED|skipped<TAB>first message line). Returns 1 if the run did
# not finish with a summary line.
run_suite() {
    local name=$1 dir=$2 start end rc=0
    start=$(date +%s)
    NO_COLOR=1 RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
        timeout -k 10 "${PJDFSTEST_TIMEOUT:-900}" \
        "$pjd" -c "$T/pjdfstest.toml" "${secondary[@]}" -p "$dir" ${patterns[@]+"${patterns[@]}"} \
        >"$T/$name.log" 2>&1 </dev/null || rc=$?
    end=$(date +%s)
    eval "secs_$name=$((end - start))"
    # A status line is "NAME<spaces>STATUS"; the lines after it (a skip reason, or the
    # panic message of a failed assertion, possibly several lines) are its message.
    awk '
        function flush() { if (n != "") print n "\t" s "\t" msg; n = "" }
        /^[^ \t]+ +(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)$/ {
            flush(); n = $1; s = $0; sub(/^[^ \t]+ +/, "", s); msg = ""; next }
        /^Summary:/ { flush(); next }
        n != "" { l = $0; gsub(/\t/, " ", l); gsub(/^ +| +$/, "", l)
                  if (l != "") msg = (msg == "" ? l : msg " / " l) }
        END { flush() }' "$T/$name.log" >"$T/$name.res"
    if ! grep -q '^Summary:' "$T/$name.log"; then
        [ "$rc" = 124 ] && say "!! $name: pjdfstest timed out after ${PJDFSTEST_TIMEOUT:-900}s" \
                        || say "!! $name: pjdfstest ended (status $rc) without a summary"
        tail -n 5 "$T/$name.log" | sed 's/^/   | /'
        return 1
    fi
    return 0
}

count() { awk -F'\t' -v s="$2" '$2 == s { n++ } END { print n + 0 }' "$T/$1.res"; }
summary_line() { # NAME LABEL
    if [ -s "$T/$1.res" ] || grep -q '^Summary:' "$T/$1.log" 2>/dev/null; then
        printf '%-30s passed %4d   failed %4d   skipped %4d   total %4d   (%ss)\n' "$2" \
            "$(count "$1" ok)" "$(( $(count "$1" FAILED) + $(count "$1" 'PASSED UNEXPECTEDLY') ))" \
            "$(count "$1" skipped)" "$(wc -l <"$T/$1.res")" "$(eval echo "\${secs_$1:-?}")"
    else
        printf '%-30s not run\n' "$2"
    fi
}

t0=$(date +%s)
say "== pjdfstest $("$pjd" --version | awk '{print $2}'), stratafs: $strata"
say "   temp dir $T ($(findmnt -n -o FSTYPE --target "$T" 2>/dev/null || stat -f -c %T "$T")), dummy users $user1 and $user2"
incomplete=0

# --- (a) native ---------------------------------------------------------------------
mkdir -p "$T/nat/m/p"
native_fs="$(findmnt -n -o FSTYPE --target "$T/nat" 2>/dev/null || stat -f -c %T "$T/nat")"
say "== native $native_fs dir"
run_suite native "$T/nat/m/p" || incomplete=1

# --- (b) kernel overlayfs ------------------------------------------------------------
make_layers "$T/ovl"
say "== kernel overlayfs"
if mount -t overlay stratafs-conf-overlay \
    -o "lowerdir=$T/ovl/l1:$T/ovl/l2,upperdir=$T/ovl/u,workdir=$T/ovl/w" \
    "$T/ovl/m" 2>"$T/overlay.err"; then
    mounts+=("$T/ovl/m")
    run_suite overlay "$T/ovl/m/p" || true
    umount "$T/ovl/m" || true
else
    say "note: cannot mount kernel overlayfs ($(cat "$T/overlay.err")); not compared"
    : >"$T/overlay.res"
fi

# --- (c) stratafs --------------------------------------------------------------------
make_layers "$T/sfs"
say "== stratafs"
m="$T/sfs/m"
# -f: the daemon stays our child, so its pid, exit status and stderr are ours to check.
NO_COLOR=1 "$strata" -f -o "lowerdir=$T/sfs/l1:$T/sfs/l2,upperdir=$T/sfs/u,workdir=$T/sfs/w,allow_other,default_permissions" \
    "$m" >"$T/stratafs-daemon.log" 2>&1 </dev/null &
daemon_pid=$!
mounts+=("$m")
for _ in $(seq 100); do
    grep -qF " $m fuse.stratafs " /proc/mounts && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
strata_ok=1
if ! grep -qF " $m fuse.stratafs " /proc/mounts; then
    say "!! stratafs did not mount:"
    sed 's/^/   | /' "$T/stratafs-daemon.log"
    strata_ok=0
    : >"$T/stratafs.res"
else
    run_suite stratafs "$m/p" || { incomplete=1; strata_ok=0; }
    kill -0 "$daemon_pid" 2>/dev/null || say "!! the stratafs daemon died during the run"
    umount "$m" || umount -l "$m"
    daemon_status=0
    stop_daemon
    [ "$daemon_status" = 0 ] || say "!! the stratafs daemon exited with status $daemon_status"
fi
# The daemon's warnings, errors and panics (INFO/DEBUG lines left out).
grep -vE '^[^ ]+ +(INFO|DEBUG|TRACE) ' "$T/stratafs-daemon.log" >"$T/daemon-notes" 2>/dev/null || true
if [ -s "$T/daemon-notes" ]; then
    say "-- stratafs daemon stderr, without INFO lines (last 20):"
    tail -n 20 "$T/daemon-notes" | sed 's/^/   | /'
fi

if [ -n "${CONFORMANCE_LOGS:-}" ]; then
    mkdir -p "$CONFORMANCE_LOGS"
    cp "$T"/*.log "$CONFORMANCE_LOGS"/ 2>/dev/null || true
fi

# --- results -------------------------------------------------------------------------
say ""
say "== pjdfstest results"
summary_line native "native ($native_fs)"
summary_line overlay "kernel overlayfs"
summary_line stratafs "stratafs"

# name<TAB>native<TAB>stratafs<TAB>stratafs message, for every test that passed on native
join -t $'\t' -j 1 \
    <(awk -F'\t' '$2 == "ok" { print $1 "\t" $2 }' "$T/native.res" | LC_ALL=C sort) \
    <(LC_ALL=C sort "$T/stratafs.res") >"$T/both" || true
regressions="$(awk -F'\t' '$3 != "ok" && $3 != "skipped"' "$T/both")"
lost="$(awk -F'\t' 'NR == FNR { seen[$1] = 1; next } $2 == "ok" && !($1 in seen) { print $1 }' \
    "$T/stratafs.res" "$T/native.res")"
skipped_only="$(awk -F'\t' '$3 == "skipped"' "$T/both")"
nreg=$(printf '%s' "$regressions" | grep -c . || true)
nlost=$(printf '%s' "$lost" | grep -c . || true)

if [ -n "$skipped_only" ]; then
    say ""
    say "passed on native, skipped on stratafs (pjdfstest's reason; not gated):"
    printf '%s\n' "$skipped_only" | awk -F'\t' '{ printf "  %-50s %s\n", $1, $4 }'
fi
if [ -s "$T/overlay.res" ]; then
    better=$(join -t $'\t' <(awk -F'\t' '$2 != "ok" {print $1 "\t" $2}' "$T/overlay.res" | LC_ALL=C sort) \
        <(awk -F'\t' '$2 == "ok" {print $1}' "$T/stratafs.res" | LC_ALL=C sort) | grep -c . || true)
    say "fail on kernel overlayfs but pass on stratafs: $better"
fi

say ""
if [ "$strata_ok" = 1 ] && [ "$incomplete" = 0 ] && [ "$nreg" = 0 ] && [ "$nlost" = 0 ]; then
    say "GATE OK: every test that passes on native passes on stratafs"
    gate=0
else
    say "GATE FAILED: tests that pass on native but fail on stratafs: $((nreg + nlost))"
    if [ -n "$regressions" ]; then
        printf '%s\n' "$regressions" | awk -F'\t' '{ printf "  %-50s %s\n      %s\n", $1, $3, $4 }'
    fi
    if [ -n "$lost" ]; then
        printf '%s\n' "$lost" | sed 's/^/  (no result on stratafs) /'
    fi
    [ "$strata_ok" = 1 ] || say "  (stratafs run did not complete)"
    [ "$incomplete" = 0 ] || say "  (a suite run did not complete)"
    gate=1
fi
say "conformance.sh took $(( $(date +%s) - t0 ))s"

if [ "$table" = 1 ]; then
    row() { # NAME LABEL
        if [ -s "$T/$1.res" ]; then
            printf '| %s | %d | %d | %d | %d |\n' "$2" "$(count "$1" ok)" \
                "$(( $(count "$1" FAILED) + $(count "$1" 'PASSED UNEXPECTEDLY') ))" \
                "$(count "$1" skipped)" "$(wc -l <"$T/$1.res")"
        else
            printf '| %s | - | - | - | - |\n' "$2"
        fi
    }
    say ""
    say "| pjdfstest $("$pjd" --version | awk '{print $2}') on Linux $(uname -r | cut -d- -f1) | passed | failed | skipped | total |"
    say "|---|---:|---:|---:|---:|"
    row stratafs "stratafs (allow_other,default_permissions)"
    row overlay "kernel overlayfs"
    row native "native $native_fs"
fi
exit "$gate"
