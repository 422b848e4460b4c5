#!/usr/bin/env bash
# Builds stratafs in release mode and installs the binary and the mount(8) helper.
#   scripts/install.sh            -> /usr/local/bin/stratafs, /sbin/mount.stratafs
#   PREFIX=/opt/x scripts/install.sh -> /opt/x/bin/stratafs (SBINDIR=... for the helper)
# mount(8) looks for /sbin/mount.TYPE: the helper is a link to the same binary, which
# speaks the helper protocol when called by that name.
# A default path such as /usr/local/bin matters: mount.fuse3 (-t fuse.stratafs) runs the
# binary through /bin/sh without your PATH.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${PREFIX:-/usr/local}"

command -v cargo >/dev/null || { [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"; }
command -v cargo >/dev/null || { echo "install.sh: cargo not found (install a Rust toolchain)" >&2; exit 1; }

(cd "$repo" && cargo build --release)
install -d "$prefix/bin"
install -m 0755 "$repo/target/release/stratafs" "$prefix/bin/stratafs"
sbindir="${SBINDIR:-/sbin}"
install -d "$sbindir"
ln -sf "$prefix/bin/stratafs" "$sbindir/mount.stratafs"
echo "installed $prefix/bin/stratafs ($("$prefix/bin/stratafs" --version)) and $sbindir/mount.stratafs"
