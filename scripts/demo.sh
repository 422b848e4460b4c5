#!/usr/bin/env bash
# Installs stratafs (scripts/install.sh) and mounts the demo union of fixtures/demo:
#   lowers (top first): fixtures/demo/app, fixtures/demo/base
#   upper + work:       a fresh temp dir (the fixtures are never written: they are lowers)
# Usage: scripts/demo.sh [MOUNTPOINT]        (default /tmp/stratafs-demo/merged)
# Needs root (or a user allowed to mount FUSE) and /dev/fuse.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mnt="${1:-/tmp/stratafs-demo/merged}"

"$repo/scripts/install.sh"
bin="${PREFIX:-/usr/local}/bin/stratafs"

# Escape ':' ',' and '\' inside paths for the -o option string.
esc() { printf '%s' "$1" | sed 's/[\\:,]/\\&/g'; }

mkdir -p "$mnt"
mnt="$(cd "$mnt" && pwd)"
if findmnt -rn -M "$mnt" >/dev/null 2>&1; then
    if [ "$(findmnt -rn -o FSTYPE -M "$mnt")" = "fuse.stratafs" ]; then
        echo "unmounting the previous demo at $mnt"
        umount "$mnt"
    else
        echo "demo.sh: $mnt is already a mount point (not stratafs); pick another dir" >&2
        exit 1
    fi
fi

state="$(mktemp -d "${TMPDIR:-/tmp}/stratafs-demo-state.XXXXXX")"
mkdir "$state/upper" "$state/work"

opts="lowerdir=$(esc "$repo/fixtures/demo/app"):$(esc "$repo/fixtures/demo/base")"
opts+=",upperdir=$(esc "$state/upper"),workdir=$(esc "$state/work"),fsname=stratafs-demo"
"$bin" -o "$opts" "$mnt"

echo
echo "mounted: $(grep -F " $mnt " /proc/mounts || true)"
echo
echo "merged tree of $mnt:"
(cd "$mnt" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
    if [ -d "$p" ]; then printf '  %s/\n' "${p#./}"; else printf '  %-32s %s\n' "${p#./}" "$(stat -c '%A %s bytes' "$p")"; fi
done)
echo
echo "etc/app.conf (the app layer's copy hides base's):"
sed 's/^/  | /' "$mnt/etc/app.conf"
echo
echo "Not visible: etc/motd (whiteout .wh.motd in app), var/lib/app/{old-state,cache} (opaque dir)."
echo "Writes go to the upper: $state/upper"
echo
echo "to unmount:  umount $mnt    (then: rm -rf $state)"
