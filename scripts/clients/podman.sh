#!/usr/bin/env bash
# podman with overlay.mount_program=stratafs (issue 7), and the same scenario on podman's
# kernel overlay driver and with mount_program=fuse-overlayfs (Debian's, when it installs).
#
#   scripts/clients/podman.sh [--fs "overlay fuse-overlayfs stratafs"] [--repeat N]
#
# For each filesystem a private podman (--root/--runroot/--tmpdir in a temp dir; runtime
# runc, cgroup_manager cgroupfs, default_ulimits nofile/nproc, events_logger file; every
# container with --network none, --pull never):
#   import  tar -C ROOTFS -c . | podman import - localhost/deb:1   (cached bookworm minbase)
#   run     podman run --rm localhost/deb:1 ...
#   build   podman build of scripts/clients/Containerfile: RUN steps create, modify and
#           delete lower files and dirs (rm -rf DIR && mkdir DIR, a hard link, sed -i, mv of
#           a dir, ...), then check-image.sh checks them inside the build
#   check   podman run of the built image: check-image.sh built (deleted names gone for
#           readdir AND lookup, new contents present)
#   c1      podman run --name c1 of the built image, making more changes
#   diff    podman container diff c1 (must list the changes; compared with kernel overlayfs')
#   commit  podman commit c1, then check-image.sh committed in a container of the result
#   diff image  podman diff of the committed image (its top layer, c1's, against its parent)
# Prints the timings side by side. Exit 0: every check passed on stratafs; 1: stratafs
# misbehaved (a peer's failures are printed, not fatal); 77: this machine cannot run
# podman (reason on the "SKIP:" line). Needs root and /dev/fuse; installs podman, runc,
# conmon, fuse3, debootstrap and fuse-overlayfs with apt-get when missing.
set -euo pipefail
CLIENT=podman
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

parse_client_args "$@"

require_basics
need_pkgs podman runc conmon fuse3 debootstrap util-linux
want_fuse_overlayfs_peer
new_run_dir podman
find_stratafs
ensure_rootfs

# Private configuration: nothing from /etc/containers is used.
cat >"$RUN_DIR/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
: >"$RUN_DIR/registries.conf"
export CONTAINERS_CONF="$RUN_DIR/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$RUN_DIR/registries.conf"

CTX="$RUN_DIR/context"
mkdir -p "$CTX"
cp "$HERE/Containerfile" "$HERE/check-image.sh" "$CTX/"

# runc keeps its state in /run/runc whatever podman's roots: remove it if this run made it.
[ -e /run/runc ] || on_exit "rmdir /run/runc 2>/dev/null"
# containers/image keeps its blob info cache there whatever the roots: likewise.
[ -e /var/lib/containers ] || on_exit "rm -rf /var/lib/containers"

# podman refuses a runroot path longer than 50 characters: the runroots live in /run.
RUNROOTS=$(mktemp -d /run/stratafs-podman.XXXXXX)
on_exit "unmount_under '$RUNROOTS'; rm -rf '$RUNROOTS'"

PD=""     # the fs run's dir
RR=""     # its runroot
SOPTS=()  # its storage options: podman drops storage.conf's graph options once --root is
          # given, so overlay.mount_program goes on the command line, as engines pass it
P() { # podman with this run's private roots and a step timeout
    timeout -k 10 "$STEP_TIMEOUT" podman --root "$PD/root" --runroot "$RR" --tmpdir "$PD/tmp" \
        --storage-driver overlay "${SOPTS[@]}" "$@"
}

# Can podman run here at all? (runc, cgroupfs, the ulimits: podman info checks the setup.)
PD="$RUN_DIR/probe"; RR="$RUNROOTS/probe"
mkdir -p "$PD/root" "$RR" "$PD/tmp"
if ! out=$(timeout 120 podman --root "$PD/root" --runroot "$RR" --tmpdir "$PD/tmp" --storage-driver vfs info 2>&1); then
    printf '%s\n' "$out" | tail -5 >&2
    skip "podman info fails with runtime runc, cgroup_manager cgroupfs, events_logger file: $(printf '%s' "$out" | grep -m1 -i error)"
fi
unmount_under "$PD"; unmount_under "$RR"; rm -rf "$PD" "$RR"

run_fs() { # FS
    local fs="$1" rc out missing
    PD="$RUN_DIR/$fs"
    RR="$RUNROOTS/$fs"
    mkdir -p "$PD/root" "$RR" "$PD/tmp"
    log "== $(fs_label "$fs")"
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "graphroot = \"$PD/root\""
        echo "runroot = \"$RR\""
        echo '[storage.options.overlay]'
        case "$fs" in
            stratafs) echo "mount_program = \"$STRATAFS\"" ;;
            fuse-overlayfs) echo "mount_program = \"$(command -v fuse-overlayfs)\"" ;;
        esac
    } >"$PD/storage.conf"
    export CONTAINERS_STORAGE_CONF="$PD/storage.conf"
    case "$fs" in
        stratafs) SOPTS=(--storage-opt "overlay.mount_program=$STRATAFS") ;;
        fuse-overlayfs) SOPTS=(--storage-opt "overlay.mount_program=$(command -v fuse-overlayfs)") ;;
        *) SOPTS=() ;;
    esac
    # Make sure podman really uses the mount program (or the kernel driver) asked for.
    out=$(P info --format '{{json .Store.GraphOptions}} {{json .Store.GraphStatus}}' 2>&1) || true
    case "$fs" in
        overlay) printf '%s' "$out" | grep -q 'mount_program' && die "podman's overlay driver uses a mount program: $out" ;;
        *) printf '%s' "$out" | grep -q "mount_program" || die "podman ignores overlay.mount_program for $fs: $out" ;;
    esac
    log "podman store: $out"
    # P as a program, for pipelines; its arguments are fixed now.
    { echo '#!/bin/sh'; printf 'exec timeout -k 10 %q podman --root %q --runroot %q --tmpdir %q --storage-driver overlay' "$STEP_TIMEOUT" "$PD/root" "$RR" "$PD/tmp"
      [ ${#SOPTS[@]} = 0 ] || printf ' %q' "${SOPTS[@]}"; echo ' "$@"'; } >"$PD/P"
    chmod +x "$PD/P"
    on_exit "[ -x '$PD/P' ] && '$PD/P' rm -a -f -t 0 >/dev/null 2>&1; unmount_under '$PD'; unmount_under '$RR'"

    rc=0
    timed "$fs" "import" sh -c 'tar --numeric-owner -C "$1" -c . | "$2" import - localhost/deb:1' \
        sh "$ROOTFS" "$PD/P" >"$PD/import.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        [ "$fs" = overlay ] && { tail -5 "$PD/import.log" >&2; die "podman import fails on its kernel overlay driver too (the machine or this script is broken)"; }
        fail "$fs" "podman import: status $rc: $(tail -5 "$PD/import.log" | tr '\n' '|')"
        return
    fi

    rc=0
    out=$(timed "$fs" "run" P run --rm --network none --pull never localhost/deb:1 \
        sh -c 'cat /etc/debian_version && ulimit -n && ls / | wc -l' 2>&1) || rc=$?
    if [ $rc != 0 ]; then
        [ "$fs" = overlay ] && { printf '%s\n' "$out" | tail -5 >&2; die "podman run fails on its kernel overlay driver too (the machine or this script is broken)"; }
        fail "$fs" "podman run: status $rc: $(printf '%s' "$out" | tail -5 | tr '\n' '|')"
        return
    fi
    case "$(printf '%s' "$out" | sed -n 2p)" in 20000) ;; *) fail "$fs" "podman run: ulimit -n is not 20000: $(printf '%s' "$out" | tr '\n' '|')" ;; esac

    rc=0
    timed "$fs" "build" P build --pull=never --network none -t localhost/deb:built -f "$CTX/Containerfile" "$CTX" \
        >"$PD/build.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "podman build: status $rc: $(grep -E 'FAIL|rror' "$PD/build.log" | head -12 | tr '\n' '|')"
        return
    fi
    grep -q '^CHECKS OK' "$PD/build.log" \
        || fail "$fs" "check inside podman build: $(grep -E '^FAIL|FAILED' "$PD/build.log" | head -12 | tr '\n' '|')"

    rc=0
    out=$(timed "$fs" "run + check built" P run --rm --network none --pull never localhost/deb:built \
        sh /usr/local/bin/check-image.sh built 2>&1) || rc=$?
    [ $rc = 0 ] || fail "$fs" "check of the built image: $(printf '%s' "$out" | head -20 | tr '\n' '|')"

    if c1_round "$fs" "$PD/" podman P; then
        rc=0
        timed "$fs" "diff committed image" P image diff localhost/deb:committed >"$PD/diff-image.out" 2>"$PD/diff-image.err" || rc=$?
        if [ $rc != 0 ]; then
            fail "$fs" "podman diff localhost/deb:committed: status $rc: $(tail -5 "$PD/diff-image.err" | tr '\n' '|')"
        else
            check_diff "$fs" "podman diff of the committed image" "$PD/diff-image.out" "diff-image.$fs"
        fi
    fi

    P rm -a -f -t 0 >/dev/null 2>&1 || true
    local left
    left=$(findmnt -rn -o TARGET,FSTYPE | grep -F -e "$PD/" -e "$RR/" | grep fuse || true)
    [ -z "$left" ] || fail "$fs" "FUSE mounts left after podman rm: $left"
    unmount_under "$PD"
    unmount_under "$RR"
    rm -rf "$PD" "$RR"
    unset CONTAINERS_STORAGE_CONF
}

run_rounds

compare_trees $FS_LIST
compare_diffs podman $FS_LIST

finish_run "podman $(podman --version | awk '{print $3}') (overlay driver; mount_program for the FUSE ones)" "runc $(runc --version | awk 'NR==1 {print $3}')"
