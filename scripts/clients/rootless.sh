#!/usr/bin/env bash
# Rootless containers (issue 11): podman and buildah run by a plain user with subuid and
# subgid ranges, with `mount_program = stratafs` and the mountopt the podman images use
# (`nodev,fsync=0`) in the user's storage.conf; the same scenario with rootless podman's
# own kernel overlay driver and with mount_program=fuse-overlayfs (Debian's 1.x).
#
#   scripts/clients/rootless.sh [--fs "overlay fuse-overlayfs stratafs"] [--repeat N]
#
# As root, the script makes what a rootless user needs and removes it at exit: the user
# stratafs-rootless (home in the run dir) with subordinate ids, /dev/fuse open to users
# (mode 0666, as Debian's udev rule makes it; some containers leave it 0600). Then, as that
# user, for each filesystem in a private graphroot/runroot:
#   import  podman import of the cached bookworm minbase tarball (files of several owners)
#   run     podman run --rm (ids in the container: root, and the image's owners)
#   build   podman build of a Containerfile whose RUN steps install a local .deb with dpkg
#           (files owned by uids 1234, 42 and 0), add a user and its files, change and
#           remove lower files, then check-image.sh checks the result inside the build
#   buildah buildah from + run + commit of the same base with more changes
#   diff    podman diff of a container that changed files
#   commit  podman commit of that container, then a container of the result lists its
#           tree (owners included), compared with the kernel driver's
# Exit 0: every check passed on stratafs; 1: stratafs misbehaved; 77: this machine cannot
# run rootless podman (reason on the "SKIP:" line).
set -euo pipefail
CLIENT=rootless
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

parse_client_args "$@"

require_basics
need_pkgs podman buildah uidmap runc fuse3 debootstrap util-linux passwd
want_fuse_overlayfs_peer
new_run_dir rootless
chmod 755 "$RUN_DIR"
find_stratafs
ensure_rootfs
TARBALL="$CLIENTS_CACHE/$SUITE-minbase.tar.gz"
[ -r "$TARBALL" ] || die "no rootfs tarball at $TARBALL"

# ---- the rootless user -------------------------------------------------------------------
RUSER=stratafs-rootless
UHOME="$RUN_DIR/home"
if ! id "$RUSER" >/dev/null 2>&1; then
    useradd --no-create-home --home-dir "$UHOME" --shell /bin/sh "$RUSER" \
        || skip "useradd $RUSER failed"
    on_exit "pkill -KILL -u '$RUSER' 2>/dev/null; sleep 0.2; userdel '$RUSER' 2>/dev/null"
else
    on_exit "pkill -KILL -u '$RUSER' 2>/dev/null"
fi
RUID=$(id -u "$RUSER")
mkdir -p "$UHOME"
chown "$RUSER:" "$UHOME"
for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$RUSER:" "$f" 2>/dev/null; then
        echo "$RUSER:300000:65536" >>"$f"
        on_exit "sed -i '/^$RUSER:/d' '$f'"
    fi
done
if [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    old_mode=$(stat -c %a /dev/fuse)
    chmod 666 /dev/fuse
    on_exit "chmod $old_mode /dev/fuse"
fi
# The user's runtime dir (podman's pause process, locks): short, as runroot paths must be.
XDG=$(mktemp -d /run/stratafs-rl.XXXXXX)
chown "$RUSER:" "$XDG"
chmod 700 "$XDG"
on_exit "unmount_under '$XDG'; rm -rf '$XDG'"

# The stratafs binary under test, where the user can run it.
chmod 755 "$RUN_DIR/bin" "$STRATAFS"

cat >"$UHOME/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
: >"$UHOME/registries.conf"

# A local .deb with files of several owners, for dpkg inside the build.
PKG="$RUN_DIR/pkg"
mkdir -p "$PKG/DEBIAN" "$PKG/opt/multi/by-1234" "$PKG/opt/multi/by-shadow"
cat >"$PKG/DEBIAN/control" <<'EOF'
Package: strata-multiuid
Version: 1.0
Architecture: all
Maintainer: stratafs tests <tests@localhost>
Description: files owned by several users, installed with dpkg in a rootless build
EOF
echo 1234 >"$PKG/opt/multi/by-1234/f"
echo shadow >"$PKG/opt/multi/by-shadow/f"
echo root >"$PKG/opt/multi/by-root"
chown -R 1234:1234 "$PKG/opt/multi/by-1234"
chown -R 0:42 "$PKG/opt/multi/by-shadow"
chmod 2750 "$PKG/opt/multi/by-shadow"
CTX="$UHOME/context"
mkdir -p "$CTX"
dpkg-deb --build "$PKG" "$CTX/strata-multiuid.deb" >/dev/null
cp "$HERE/check-image.sh" "$CTX/"
# The shared Containerfile, with a first step that installs that .deb with dpkg and adds
# a user and files of other owners.
awk '{ print } /^FROM localhost\/deb:1$/ {
    print "COPY strata-multiuid.deb /tmp/strata-multiuid.deb"
    print "RUN set -e; dpkg -i /tmp/strata-multiuid.deb; rm /tmp/strata-multiuid.deb; \\"
    print "    dpkg -s strata-multiuid | grep -q \"Status: install ok installed\"; \\"
    print "    useradd -u 1500 -m bob; echo mine > /home/bob/f; chown 1500:1500 /home/bob/f; \\"
    print "    chown 1234:42 /etc/motd"
}' "$HERE/Containerfile" >"$CTX/Containerfile"
chown -R "$RUSER:" "$UHOME"

# U CMD...: CMD as the rootless user, with only this run's configuration and a timeout.
U() {
    timeout -k 10 "$STEP_TIMEOUT" runuser -u "$RUSER" -- env -i \
        HOME="$UHOME" USER="$RUSER" XDG_RUNTIME_DIR="$XDG" \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LC_ALL=C \
        CONTAINERS_CONF="$UHOME/containers.conf" \
        CONTAINERS_REGISTRIES_CONF="$UHOME/registries.conf" \
        BUILDAH_ISOLATION=rootless \
        "$@"
}
# The user's own storage.conf, where users put it (rootless podman ignores graphroot and
# runroot: its store is rootless_storage_path, its runroot is under XDG_RUNTIME_DIR).
SCONF="$UHOME/.config/containers/storage.conf"
mkdir -p "$(dirname "$SCONF")"

# Can rootless podman run here at all? (user namespaces, newuidmap, runc)
printf '[storage]\ndriver = "vfs"\nrootless_storage_path = "%s"\n' "$UHOME/probe" >"$SCONF"
chown -R "$RUSER:" "$UHOME/.config"
if ! out=$(U podman info 2>&1); then
    printf '%s\n' "$out" | tail -5 >&2
    skip "rootless podman info fails: $(printf '%s' "$out" | grep -m1 -i error)"
fi
U podman system migrate >/dev/null 2>&1 || true
U podman unshare rm -rf "$UHOME/probe" >/dev/null 2>&1 || true

run_fs() { # FS
    local fs="$1" rc out
    local root="$UHOME/$fs"
    log "== $(fs_label "$fs") (rootless)"
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "rootless_storage_path = \"$root\""
        echo '[storage.options.overlay]'
        # What the podman images say; fsync=0 is a fuse-overlayfs option the kernel refuses.
        case "$fs" in
            overlay) echo 'mountopt = "nodev"' ;;
            *) echo 'mountopt = "nodev,fsync=0"' ;;
        esac
        case "$fs" in
            stratafs) echo "mount_program = \"$STRATAFS\"" ;;
            fuse-overlayfs) echo "mount_program = \"$(command -v fuse-overlayfs)\"" ;;
        esac
    } >"$SCONF"
    chown "$RUSER:" "$SCONF"
    out=$(U podman info --format '{{.Store.GraphRoot}} {{json .Store.GraphOptions}}' 2>&1) || true
    case "$(printf '%s' "$out" | tail -1)" in "$root "*) ;; *) die "podman does not use the store at $root: $out" ;; esac
    case "$fs" in
        overlay) printf '%s' "$out" | grep -q mount_program && die "rootless overlay driver uses a mount program: $out" ;;
        *) printf '%s' "$out" | grep -q mount_program || die "podman ignores mount_program for $fs: $out" ;;
    esac

    rc=0
    timed "$fs" "import" U podman import "$TARBALL" localhost/deb:1 >"$UHOME/import-$fs.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        [ "$fs" = overlay ] && { tail -5 "$UHOME/import-$fs.log" >&2; die "rootless podman import fails on the kernel driver too"; }
        fail "$fs" "podman import: status $rc: $(tail -5 "$UHOME/import-$fs.log" | tr '\n' '|')"
        return
    fi

    rc=0
    out=$(timed "$fs" "run" U podman run --rm --network none --pull never localhost/deb:1 \
        sh -c 'id -u; stat -c "%u:%g" /etc/shadow /etc/passwd; echo x > /root/w && cat /root/w' 2>&1) || rc=$?
    [ $rc = 0 ] && [ "$out" = "$(printf '0\n0:42\n0:0\nx')" ] \
        || fail "$fs" "podman run: status $rc: $(printf '%s' "$out" | tail -5 | tr '\n' '|')"

    rc=0
    timed "$fs" "build" U podman build --pull=never --network none -t localhost/deb:built \
        -f "$CTX/Containerfile" "$CTX" >"$UHOME/build-$fs.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "podman build: status $rc: $(grep -E 'FAIL|rror' "$UHOME/build-$fs.log" | head -12 | tr '\n' '|')"
        return
    fi
    grep -q '^CHECKS OK' "$UHOME/build-$fs.log" \
        || fail "$fs" "check inside the build: $(grep -E '^FAIL|FAILED' "$UHOME/build-$fs.log" | head -12 | tr '\n' '|')"

    rc=0
    out=$(timed "$fs" "run + check built" U podman run --rm --network none --pull never localhost/deb:built \
        sh -c 'sh /usr/local/bin/check-image.sh built && stat -c "%n %u:%g %a" /home/bob/f /etc/motd' 2>&1) || rc=$?
    [ $rc = 0 ] || fail "$fs" "check of the built image: $(printf '%s' "$out" | head -20 | tr '\n' '|')"
    case "$out" in *"/home/bob/f 1500:1500 644"*"/etc/motd 1234:42 "*) ;;
        *) fail "$fs" "owners in the built image: $(printf '%s' "$out" | tail -3 | tr '\n' '|')" ;; esac

    rc=0
    timed "$fs" "buildah from+run+commit" U sh -c '
        set -e
        c=$(buildah from --pull-never localhost/deb:built)
        buildah run --network none "$c" -- sh -c "echo by-buildah > /srv/buildah && chown 1500:42 /srv/buildah && rm /etc/motd"
        buildah commit -q "$c" localhost/deb:buildah >/dev/null
        buildah rm "$c" >/dev/null' >"$UHOME/buildah-$fs.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "$fs" "buildah: status $rc: $(tail -5 "$UHOME/buildah-$fs.log" | tr '\n' '|')"
    else
        out=$(U podman run --rm --network none --pull never localhost/deb:buildah \
            sh -c 'stat -c "%u:%g" /srv/buildah; cat /srv/buildah; ls /etc/motd 2>&1 || true' 2>&1) || true
        case "$out" in "1500:42"*"by-buildah"*"No such file"*) ;;
            *) fail "$fs" "buildah's image: $(printf '%s' "$out" | tr '\n' '|')" ;; esac
    fi

    if C1_MORE='chown 1234:1234 /srv/c1-added && chown -R 1500:1500 /var/c1dir' \
        c1_round "$fs" "$UHOME/$fs-" podman U podman; then
        grep -q ' 1234:1234 .* /srv/c1-added$' "$RUN_DIR/tree.$fs" \
            || fail "$fs" "owner of /srv/c1-added lost in the commit: $(grep ' /srv/c1-added$' "$RUN_DIR/tree.$fs")"
    fi

    U podman rm -a -f -t 0 >/dev/null 2>&1 || true
    local left
    left=$(findmnt -rn -o TARGET,FSTYPE | grep -F -e "$root/" | grep fuse || true)
    [ -z "$left" ] || fail "$fs" "FUSE mounts left after podman rm: $left"
    # Images and layers belong to subordinate ids: podman removes them in the user namespace.
    U podman rmi -a -f >/dev/null 2>&1 || true
    U podman unshare rm -rf "$root" >/dev/null 2>&1 || true
    U podman system migrate >/dev/null 2>&1 || true
}

run_rounds

compare_trees $FS_LIST
compare_diffs podman $FS_LIST

finish_run "rootless podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}') (uid $RUID, subordinate ids; mount_program for the FUSE ones)"
