#!/usr/bin/env bash
# Long soak of the data-integrity and crash tests (by hand, not in CI; CI runs the same
# tests with small counts through scripts/test.sh).
#
#   scripts/soak.sh [--fsx-ops N] [--crash-rounds N] [--loops N] [--only fsx|crash]
#
#   --fsx-ops N       fsx operations per run, each run once with passthrough and once with
#                     passthrough=off (default 1000000; CI: 20000)
#   --crash-rounds N  SIGKILL rounds of the crash test (default 500; CI: 20)
#   --loops N         repeat the whole soak N times with fresh seeds (default 1)
#   --only fsx|crash  run one of the two
#
# Each run prints its seed; a failure prints the command that replays it
# (STRATAFS_FSX_SEED / STRATAFS_CRASH_SEED). Logs stay in a temp dir named at the end.
# Needs root and /dev/fuse (the tests mount filesystems); the crash test needs about
# 600 MiB free in $TMPDIR (two 100 MiB lower files, their upper copies, cut copy-ups).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="$PATH:$HOME/.cargo/bin"

fsx_ops=1000000
crash_rounds=500
loops=1
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --fsx-ops) fsx_ops="$2"; shift 2 ;;
        --crash-rounds) crash_rounds="$2"; shift 2 ;;
        --loops) loops="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$only" in ""|fsx|crash) ;; *) echo "soak.sh: --only fsx or crash" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "soak.sh: run as root (the tests mount filesystems)" >&2; exit 1; }

log="$(mktemp -d "${TMPDIR:-/tmp}/stratafs-soak.XXXXXX")"
echo "== building (cargo test --release --no-run); logs in $log"
cargo test --release --no-run --test fsx --test crash >"$log/build.log" 2>&1 \
    || { tail -30 "$log/build.log"; exit 1; }

failed=0
run() { # name, env assignments..., -- cargo test args...
    local name="$1"; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local out="$log/$name.log" t0 t1 rc=0
    t0=$(date +%s)
    env "${envs[@]}" cargo test --release "$@" -- --nocapture >"$out" 2>&1 || rc=$?
    t1=$(date +%s)
    if [ $rc = 0 ]; then
        echo "   ok   $name in $((t1 - t0))s"
        grep -E '^fsx \(.*ops checked|^crash: [0-9]+ kill rounds' "$out" | sed 's/^/        /' || true
    else
        failed=1
        echo "   FAILED $name in $((t1 - t0))s (log: $out)"
        grep -E 'FAILED|panicked|replay' "$out" | head -8 | sed 's/^/        /' || true
    fi
}

for i in $(seq 1 "$loops"); do
    echo "== soak loop $i/$loops"
    s=$(( $(date +%s%N) ^ (i * 7919) ))
    if [ "$only" != crash ]; then
        run "fsx-$i" "STRATAFS_FSX_OPS=$fsx_ops" "STRATAFS_FSX_SEED=${STRATAFS_FSX_SEED:-$s}" \
            -- --test fsx fsx_
        echo "        replay: STRATAFS_FSX_OPS=$fsx_ops STRATAFS_FSX_SEED=${STRATAFS_FSX_SEED:-$s} cargo test --release --test fsx fsx_"
    fi
    if [ "$only" != fsx ]; then
        run "crash-$i" "STRATAFS_CRASH_ROUNDS=$crash_rounds" \
            "STRATAFS_CRASH_SEED=${STRATAFS_CRASH_SEED:-$s}" -- --test crash
        echo "        replay: STRATAFS_CRASH_ROUNDS=$crash_rounds STRATAFS_CRASH_SEED=${STRATAFS_CRASH_SEED:-$s} cargo test --release --test crash"
    fi
done

echo "== soak $([ $failed = 0 ] && echo passed || echo FAILED); logs in $log"
exit $failed
