# Shell helpers shared by scripts/bench.sh and scripts/clients/*.sh (sourced, not run).
# Each function says what it needs; none exits or prints on its own.

# The Debian mirror apt uses on this host (deb822 .sources or one-line .list), for
# debootstrap; $MIRROR overrides.
find_mirror() {
    [ -n "${MIRROR:-}" ] && { echo "$MIRROR"; return; }
    local f m
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        m=$(awk -v s="${SUITE:-bookworm}" '
            BEGIN { RS = ""; FS = "\n" }
            { uris = ""; ok = 0
              for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
                if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == s) ok = 1 }
                if ($i ~ /^Types:/ && $i !~ /(^|[ \t])deb([ \t]|$)/) { ok = 0; break }
              }
              if (ok && uris != "") { print uris; exit } }' "$f")
        [ -n "$m" ] && { echo "$m"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        m=$(sed -E 's/\[[^]]*\]//' "$f" | awk -v s="${SUITE:-bookworm}" '$1 == "deb" && $3 == s { print $2; exit }')
        [ -n "$m" ] && { echo "$m"; return; }
    done
    echo "http://deb.debian.org/debian"
}

# PIDs of the stratafs / fuse-overlayfs daemons serving mount point $1 (found by their
# command line, which ends with the mount point: these are daemons this run started).
daemons_of() {
    local p args
    for p in /proc/[0-9]*; do
        { mapfile -d '' args <"$p/cmdline"; } 2>/dev/null || continue
        [ ${#args[@]} -gt 1 ] && [ "${args[-1]}" = "$1" ] || continue
        case ${args[0]} in *stratafs | *fuse-overlayfs) echo "${p#/proc/}" ;; esac
    done
    return 0
}

