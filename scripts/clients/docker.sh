#!/usr/bin/env bash
# docker (Debian's docker.io) with its fuse-overlayfs storage driver calling stratafs
# (issue 7), and the same scenario on the overlay2 driver (kernel overlayfs) and on the
# fuse-overlayfs driver with the real fuse-overlayfs (Debian's package). Run by hand.
#
#   scripts/clients/docker.sh [--fs "overlay fuse-overlayfs stratafs"] [--repeat N]
#
# For each filesystem a private dockerd: --data-root in a temp dir, --exec-root and the
# socket in /run, --iptables=false --bridge=none, --exec-opt native.cgroupdriver=cgroupfs,
# --default-ulimit nofile=20000:20000 --default-ulimit nproc=32768:32768. For stratafs the
# driver is fuse-overlayfs with stratafs first in dockerd's PATH under the name
# `fuse-overlayfs`. Then, as podman.sh: import the cached bookworm minbase, run, build
# scripts/clients/Containerfile (legacy builder, --network none), check the built image,
# run c1 with more changes, docker diff c1, docker commit c1, check the committed image,
# docker diff of the committed image. Timings side by side; exit 0 when every check passed
# on stratafs, 1 when stratafs misbehaved, 77 when this machine cannot run dockerd.
set -euo pipefail
CLIENT=docker
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

parse_client_args "$@"

require_basics
need_pkgs docker.io containerd runc fuse3 debootstrap util-linux
want_fuse_overlayfs_peer
[ -x /usr/bin/docker ] || skip "docker.io installed no /usr/bin/docker"
[ -x /usr/sbin/dockerd ] || skip "docker.io installed no /usr/sbin/dockerd"
new_run_dir docker
find_stratafs
ensure_rootfs

CTX="$RUN_DIR/context"
mkdir -p "$CTX"
cp "$HERE/Containerfile" "$CTX/Dockerfile"
cp "$HERE/check-image.sh" "$CTX/"

# stratafs under the name the fuse-overlayfs driver looks up in PATH.
SHIM="$RUN_DIR/shim"
mkdir -p "$SHIM"
ln -s "$STRATAFS" "$SHIM/fuse-overlayfs"

# dockerd, containerd and runc make these even with private roots: remove those this run
# made, once empty.
for d in /run/runc /run/containerd /run/containerd/s /run/docker /run/docker/plugins; do  # parents first: undone in reverse
    [ -e "$d" ] || on_exit "rmdir '$d' 2>/dev/null"
done

# Exec roots (and the socket) in /run: short paths (unix socket paths are limited).
EXECS=$(mktemp -d /run/stratafs-docker.XXXXXX)
on_exit "unmount_under '$EXECS'; rm -rf '$EXECS'"

DD=""; EX=""; DPID=""
D() { timeout -k 10 "$STEP_TIMEOUT" /usr/bin/docker -H "unix://$EX/docker.sock" "$@"; }

# Is PID still the dockerd we started with exec root EXEC (not a reused PID)?
our_dockerd() { [ -n "$1" ] && { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "--exec-root $2 "; }

stop_dockerd() { # PID DATA EXEC
    local pid="$1" i
    our_dockerd "$pid" "$3" || { unmount_under "$2"; unmount_under "$3"; return 0; }
    timeout 60 /usr/bin/docker -H "unix://$3/docker.sock" rm -f $(timeout 30 /usr/bin/docker -H "unix://$3/docker.sock" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do our_dockerd "$pid" "$3" || break; sleep 0.2; done
    if our_dockerd "$pid" "$3"; then
        log "dockerd $pid did not stop in 30 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # The containerd dockerd started (its state is in our exec root).
    local p
    for p in $(pgrep -f "containerd --config $3/" 2>/dev/null || true); do kill -TERM "$p" 2>/dev/null || true; done
    unmount_under "$2"
    unmount_under "$3"
}

run_fs() { # FS
    local fs="$1" rc out missing driver path i
    DD="$RUN_DIR/$fs"
    EX="$EXECS/$fs"
    mkdir -p "$DD/data" "$EX"
    log "== $(fs_label "$fs")"
    case "$fs" in
        overlay) driver=overlay2; path="$PATH" ;;
        fuse-overlayfs) driver=fuse-overlayfs; path="$PATH" ;;
        stratafs) driver=fuse-overlayfs; path="$SHIM:$PATH" ;;
    esac
    PATH="$path" setsid /usr/sbin/dockerd --data-root "$DD/data" --exec-root "$EX" \
        --pidfile "$EX/docker.pid" -H "unix://$EX/docker.sock" \
        --storage-driver "$driver" --iptables=false --ip6tables=false --bridge=none \
        --ip-masq=false --userland-proxy=false \
        --exec-opt native.cgroupdriver=cgroupfs \
        --default-ulimit nofile=20000:20000 --default-ulimit nproc=32768:32768 \
        >"$DD/dockerd.log" 2>&1 </dev/null &
    DPID=$!
    on_exit "stop_dockerd '$DPID' '$DD' '$EX'"
    for i in $(seq 120); do
        D version >/dev/null 2>&1 && break
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.5
    done
    if ! D version >/dev/null 2>&1; then
        tail -5 "$DD/dockerd.log" >&2
        [ "$fs" = overlay ] && skip "dockerd does not start here (overlay2 driver): $(grep -m1 -iE 'level=(fatal|error)|failed' "$DD/dockerd.log" || tail -1 "$DD/dockerd.log")"
        fail "$fs" "dockerd with --storage-driver $driver does not start: $(grep -iE 'level=(fatal|error)|failed' "$DD/dockerd.log" | tail -3 | tr '\n' '|')"
        return
    fi
    log "dockerd $DPID: $(D info --format '{{.Driver}} {{json .DriverStatus}} cgroup {{.CgroupDriver}}' 2>&1)"

    rc=0
    timed "$fs" "import" sh -c 'tar --numeric-owner -C "$1" -c . | timeout -k 10 "$2" /usr/bin/docker -H "unix://$3/docker.sock" import - localhost/deb:1' \
        sh "$ROOTFS" "$STEP_TIMEOUT" "$EX" >"$DD/import.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "docker import: status $rc: $(tail -5 "$DD/import.log" | tr '\n' '|')"
        stop_dockerd "$DPID" "$DD/data" "$EX"; return
    fi

    rc=0
    out=$(timed "$fs" "run" D run --rm --network none localhost/deb:1 \
        sh -c 'cat /etc/debian_version && ulimit -n && ls / | wc -l' 2>&1) || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "docker run: status $rc: $(printf '%s' "$out" | tail -5 | tr '\n' '|')"
        [ "$fs" = overlay ] && { stop_dockerd "$DPID" "$DD/data" "$EX"; skip "docker run fails on overlay2 here: $(printf '%s' "$out" | tail -2 | tr '\n' ' ')"; }
        stop_dockerd "$DPID" "$DD/data" "$EX"; return
    fi
    case "$(printf '%s' "$out" | sed -n 2p)" in 20000) ;; *) fail "$fs" "docker run: ulimit -n is not 20000: $(printf '%s' "$out" | tr '\n' '|')" ;; esac

    rc=0
    timed "$fs" "build" env DOCKER_BUILDKIT=0 timeout -k 10 "$STEP_TIMEOUT" /usr/bin/docker -H "unix://$EX/docker.sock" \
        build --network none -t localhost/deb:built "$CTX" >"$DD/build.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "docker build: status $rc: $(grep -E 'FAIL|rror' "$DD/build.log" | head -12 | tr '\n' '|')"
        stop_dockerd "$DPID" "$DD/data" "$EX"; return
    fi
    grep -q '^CHECKS OK' "$DD/build.log" \
        || fail "$fs" "check inside docker build: $(grep -E '^FAIL|FAILED' "$DD/build.log" | head -12 | tr '\n' '|')"

    rc=0
    out=$(timed "$fs" "run + check built" D run --rm --network none localhost/deb:built \
        sh /usr/local/bin/check-image.sh built 2>&1) || rc=$?
    [ $rc = 0 ] || fail "$fs" "check of the built image: $(printf '%s' "$out" | head -20 | tr '\n' '|')"

    # docker diff takes containers only: a container of the committed image, unchanged,
    # diffs as empty; the committed layer is checked through c1's diff.
    c1_round "$fs" "$DD/" docker D || true

    D rm -f c1 >/dev/null 2>&1 || true
    stop_dockerd "$DPID" "$DD/data" "$EX"
    local left
    left=$(findmnt -rn -o TARGET | grep -F -e "$DD/" -e "$EX/" || true)
    [ -z "$left" ] || fail "$fs" "mounts left after dockerd stopped: $left"
    rm -rf "$DD" "$EX"
}

run_rounds
compare_trees $FS_LIST
compare_diffs docker $FS_LIST

finish_run "docker $(/usr/bin/docker --version | awk '{print $3}' | tr -d ,) (overlay2; fuse-overlayfs driver for the FUSE ones)" "as fuse-overlayfs in PATH"
