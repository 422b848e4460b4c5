#!/bin/sh
# Runs INSIDE a container of the images that podman.sh / docker.sh build (copied into the
# build context and from there into the image): checks every change that the Containerfile
# (MODE=built) and then the container c1 (MODE=committed) made, for lookup (stat/open of the
# name) AND for readdir (the name listed or not in its directory). Prints "CHECKS OK n" or
# one "FAIL: ..." line per failed check, exit 1.
MODE="${1:-built}"
n=0
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

listed() { ls -A "$(dirname "$1")" 2>/dev/null | grep -qxF "$(basename "$1")"; }

gone() { # PATH: no lookup finds it, no readdir lists it
    n=$((n + 1))
    if [ -e "$1" ] || [ -L "$1" ]; then bad "lookup still finds deleted $1"; fi
    if listed "$1"; then bad "readdir of $(dirname "$1") still lists deleted $(basename "$1")"; fi
}

has() { # PATH CONTENT: lookup finds it with this content, readdir lists it
    n=$((n + 1))
    got=$(cat "$1" 2>&1)
    [ "$got" = "$2" ] || bad "$1: want '$2', got '$(printf '%s' "$got" | head -c 200)'"
    listed "$1" || bad "readdir of $(dirname "$1") does not list $(basename "$1")"
}

present() { # PATH: still there (lookup and readdir)
    n=$((n + 1))
    [ -e "$1" ] || bad "lookup does not find $1"
    listed "$1" || bad "readdir of $(dirname "$1") does not list $(basename "$1")"
}

only() { # DIR NAMES...: readdir of DIR lists exactly NAMES (sorted)
    n=$((n + 1))
    d="$1"; shift
    want=$(printf '%s\n' "$@" | LC_ALL=C sort | tr '\n' ' ')
    got=$(ls -A "$d" 2>&1 | LC_ALL=C sort | tr '\n' ' ')
    [ "$got" = "$want" ] || bad "readdir of $d: want '$want', got '$got'"
}

same_inode() { # A B LINKS
    n=$((n + 1))
    a=$(stat -c '%i %h' "$1" 2>&1); b=$(stat -c '%i %h' "$2" 2>&1)
    [ "$a" = "$b" ] || bad "hard link $1 / $2: inode and link count differ: '$a' vs '$b'"
    [ "${a#* }" = "$3" ] || bad "hard link $1: link count ${a#* }, want $3"
}

# --- changes of the Containerfile (both modes) -------------------------------------------
present /etc/debian_version
present /usr/share/zoneinfo/Australia
gone /etc/host.conf
gone /usr/share/zoneinfo/Europe
gone /usr/share/zoneinfo/Asia
gone /etc/strata-tmp
gone /etc/skel
present /etc/skel-moved/.bash_logout
n=$((n + 1)); cmp -s /etc/skel-moved/.bash_logout /etc/skel-moved/.bashrc || bad "/etc/skel-moved/.bashrc is not the copy of .bash_logout"
n=$((n + 1)); [ "$(tail -n 1 /etc/issue)" = "appended" ] || bad "/etc/issue: last line '$(tail -n 1 /etc/issue)', want 'appended'"
n=$((n + 1)); [ "$(stat -c %a /etc/issue.net)" = 600 ] || bad "/etc/issue.net: mode $(stat -c %a /etc/issue.net), want 600"
n=$((n + 1)); grep -qx 'UMASK 027' /etc/login.defs || bad "/etc/login.defs: sed -i change missing"
n=$((n + 1)); grep -q '^UMASK[[:space:]]*022' /etc/login.defs && bad "/etc/login.defs: old UMASK line still there"
only /opt/strata sub
only /opt/strata/sub new
has /opt/strata/sub/new replaced
gone /opt/strata/sub/file
n=$((n + 1)); [ "$(readlink /usr/local/bin/strata-symlink)" = /etc/strata-created ] || bad "symlink strata-symlink -> '$(readlink /usr/local/bin/strata-symlink)'"
n=$((n + 1)); cmp -s /usr/bin/tac /usr/local/bin/tac-hardlink || bad "/usr/local/bin/tac-hardlink differs from /usr/bin/tac"
same_inode /etc/issue /etc/issue.link 2
n=$((n + 1)); [ "$(printf 'a\nb\n' | /usr/local/bin/tac-hardlink | tr '\n' ' ')" = "b a " ] || bad "tac-hardlink does not run"
same_inode /etc/strata-created /etc/strata-created.link 2
has /etc/strata-created.link "$(cat /etc/strata-created)"
n=$((n + 1)); wh=$(find / -xdev -name '.wh.*' 2>/dev/null | head -5)
[ -z "$wh" ] || bad "whiteout names visible: $wh"

if [ "$MODE" = built ]; then
    has /etc/strata-created created
    has /etc/strata-empty ""
    only /usr/share/doc ONLY SECOND
    has /usr/share/doc/ONLY fresh
    present /usr/share/zoneinfo/America
    gone /srv/c1-added
else
    # --- changes of container c1, committed -------------------------------------------
    has /etc/strata-created created
    has /etc/strata-empty c1
    has /srv/c1-added.link c1
    same_inode /srv/c1-added /srv/c1-added.link 2
    has /srv/debian_version.link "$(cat /etc/debian_version)"
    only /usr/share/doc SECOND
    gone /usr/share/doc/ONLY
    gone /usr/share/zoneinfo/America
    present /usr/share/zoneinfo/Australia
    has /srv/c1-added c1
    only /var/c1dir inner
    has /var/c1dir/inner x
    gone /etc/shells
fi

if [ "$fails" = 0 ]; then
    echo "CHECKS OK $n"
else
    echo "$fails of $n checks failed"
    exit 1
fi
