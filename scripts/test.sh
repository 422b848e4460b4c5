#!/usr/bin/env bash
# The test command: what README.md tells you to run and what .ci/run runs.
#   1. cargo test --release --no-fail-fast: unit, integration and model tests (all through real mounts)
#   2. scripts/conformance.sh pjdfstest on native / kernel overlayfs / stratafs; fails if a
#                             test that passes on native fails on stratafs
# Both steps always run; the exit status is non-zero if either failed. A summary of
# cargo's "test result:" lines and of the pjdfstest counts is printed at the end.
# Needs root and /dev/fuse. Installs missing Debian packages (scripts/deps.sh) and
# pjdfstest (cargo install) on first use.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="$PATH:$HOME/.cargo/bin"
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the tests mount filesystems)" >&2; exit 1; }

scripts/deps.sh --if-missing

log="$(mktemp -d "${TMPDIR:-/tmp}/stratafs-testlog.XXXXXX")"
trap 'rm -rf "$log"' EXIT
t0=$(date +%s)

echo "== cargo test --release --no-fail-fast"
cargo_rc=0
cargo test --release --no-fail-fast 2>&1 | tee "$log/cargo.log" || cargo_rc=$?
t1=$(date +%s)

echo
echo "== scripts/conformance.sh"
conf_rc=0
bash scripts/conformance.sh 2>&1 | tee "$log/conformance.log" || conf_rc=$?
t2=$(date +%s)

echo
echo "================ summary ================"
echo "cargo test --release: $([ $cargo_rc = 0 ] && echo ok || echo "FAILED (status $cargo_rc)") in $((t1 - t0))s"
awk '/^ +Running / { what = ($2 == "unittests" ? $2 " " $3 : $2) } /^ +Doc-tests / { what = "doc-tests " $2 }
     /^test result:/ { printf "  %-40s %s\n", what, $0 }' "$log/cargo.log"
echo "scripts/conformance.sh: $([ $conf_rc = 0 ] && echo ok || echo "FAILED (status $conf_rc)") in $((t2 - t1))s"
grep -E '^(native|kernel overlayfs|stratafs) |^GATE' "$log/conformance.log" | sed 's/^/  /' || true
[ $cargo_rc = 0 ] && [ $conf_rc = 0 ]
