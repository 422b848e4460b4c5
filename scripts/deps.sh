#!/usr/bin/env bash
# System packages the tests need (Debian/Ubuntu), in one place for .ci/run and test.sh.
#   fuse3        fusermount3 and the FUSE userspace bits
#   attr         getfattr/setfattr, used by tests that look at xattrs in the layers
#   acl          setfacl/getfacl for the ACL tests of tests/permissions.rs
#   libacl1-dev  libacl.so, linked by pjdfstest when `cargo install pjdfstest` builds it
#   util-linux   mount, umount, mountpoint, findmnt
#   systemd      systemd-analyze and systemd-fstab-generator, which tests/mounting.rs runs
#                on the example unit and fstab in fixtures/ (no systemd as PID 1 needed)
#   e2fsprogs    mkfs.ext4 for the power-cut test in tests/crash.rs (a loop-mounted image)
#   python3 tar  independent readers of the layer tars in tests/layertool.rs
#   debootstrap podman runc conmon fuse-overlayfs buildah uidmap passwd
#                the real clients of tests/clients.rs (apt/dpkg in a chroot, podman with
#                stratafs as mount program, rootless podman and buildah: uidmap holds
#                newuidmap/newgidmap, passwd useradd; fuse-overlayfs only for the
#                side-by-side timings)
# Usage: scripts/deps.sh               apt-get update && apt-get install -y (CI)
#        scripts/deps.sh --if-missing  only when one of them is not installed yet
set -euo pipefail

pkgs=(fuse3 attr acl libacl1-dev util-linux systemd e2fsprogs python3 tar debootstrap podman runc conmon fuse-overlayfs buildah uidmap passwd)
command -v cc >/dev/null || pkgs+=(gcc libc6-dev)   # linker for cargo, if the image lacks it

if [ "${1:-}" = --if-missing ]; then
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && exit 0
    echo "deps.sh: installing missing packages: ${missing[*]}"
fi
command -v apt-get >/dev/null || { echo "deps.sh: no apt-get; install: ${pkgs[*]}" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "deps.sh: run as root to install: ${pkgs[*]}" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${pkgs[@]}"
