#!/usr/bin/env bash
# Run xfstests (fstests) on stratafs and on kernel overlayfs, side by side, and compare.
#
# Usage (as root, from anywhere):
#   scripts/xfstests.sh XFSTESTS_DIR [-g GROUP | TEST...]
#     XFSTESTS_DIR  a built xfstests checkout (git clone of xfstests, then `make`;
#                   the suite is not packaged in Debian). It is only read, except that
#                   ./check writes its temp files under /tmp.
#     -g GROUP      a test group (default: quick). A group without a "dir/" is taken
#                   from tests/generic (GROUP -> generic/GROUP), so that both filesystems
#                   run the same list: FSTYP=overlay would add tests/overlay otherwise.
#     TEST...       test names instead of a group, e.g. generic/001 generic/035
#   Environment:
#     STRATAFS          the stratafs binary (default: target/release/stratafs of this repo)
#     RESULTS           where results go (default /var/tmp/stratafs-xfstests/YYYYmmdd-HHMMSS)
#     ONLY=stratafs|overlay   run one side only (the comparison then shows one column)
#     IMG_SIZE          size of each sparse loop image (default 10G)
#     BASE_FSTYP        ext4 or xfs: the base filesystems under both (default ext4)
#     CHECK_TIMEOUT     seconds allowed for each ./check run, 0 = no limit (default 0);
#                       a run cut short is reported as such, with what had finished
#
# What it does: makes two sparse images, attaches them to loop devices and formats
# them $BASE_FSTYP (the "test" and "scratch" base filesystems). For stratafs it mounts
# them, makes lower1, lower2 (empty), upper and wd (the workdir) on each, and installs
# for the run a mount(8) helper /sbin/mount.fuse.stratafs-xfstests that maps the device names
# "stratafs-test" / "stratafs-scratch" to those dirs and runs stratafs through its
# mount(8) helper protocol (a link named mount.stratafs). xfstests runs with FSTYP=fuse
# FUSE_SUBTYP=.stratafs-xfstests, and "mkfs"es the fuse scratch fs by mounting it and
# rm -rf'ing its contents (common/rc).
# stratafs mounts show the type fuse.stratafs, which xfstests' sanity check compares with
# FSTYP=fuse: a df wrapper put first in PATH for the stratafs run only shows that type as
# "fuse". mount(8) types a "mount -o remount MNT" without -t from /proc/mounts
# (fuse.stratafs), so the helper is also linked as /sbin/mount.fuse.stratafs for the run,
# unless that file already exists; it passes remounts on unchanged. While the run lasts,
# every `mount -t fuse.stratafs` of the machine goes to that helper: mount nothing else
# that way (tests/mounting.rs and tests/nonroot.rs do) until it has ended.
# umount returns before the stratafs daemon has exited; stratafs itself waits up to 3 s
# for the lock of a previous mount of the same upper dir (S26), and the helper waits up
# to 60 s more for its daemon to exit, logging each wait in
# $RESULTS/stratafs/mount-helper.log (the summary gives the count and the longest).
# Then both images are formatted again and ./check -overlay runs on them with the same
# list (kernel overlayfs over the same base fs; xfstests mounts it itself, with its
# OVL_BASE_* dirs).
# The config files are passed to ./check through HOST_OPTIONS; nothing is written into
# XFSTESTS_DIR. The tests that need users run with fsgqa, fsgqa2 and 123456-fsgqa, which
# are created for the run if missing.
#
# Output: per fs, passed / failed / not run, then the tests that fail on stratafs but pass
# on overlay (with the first differing output line), those not run on stratafs but run on
# overlay (with xfstests' reason), and the other differences. Results (check.log, the
# per-test .out.bad / .full / .notrun / .dmesg files, the console logs and summary.txt)
# stay in $RESULTS/stratafs and $RESULTS/overlay.
#
# Needs: root, /dev/fuse, loop devices, the fuse3 package (fusermount3), e2fsprogs,
# util-linux, and what xfstests needs to build and run (Debian: build-essential autoconf
# automake libtool pkg-config gettext xfslibs-dev uuid-dev libacl1-dev libattr1-dev
# libaio-dev libgdbm-dev libssl-dev liburing-dev libcap-dev libinih-dev xfsprogs attr acl
# bc fio psmisc quota gawk dbench indent udev duperemove lvm2).
#
# Leaves on the machine: only $RESULTS. On exit, also on failure or Ctrl-C, it unmounts
# what it mounted, ends the stratafs daemons of this run (found by this run's temp dir in
# their command line), detaches its loop devices, deletes its images and temp dir, removes
# the helper(s) it installed and the users it created. Packages are not removed.
# Exit status: 0 when both runs completed (whatever the test results), 1 on a setup error
# or when a ./check run was cut short or could not start.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

[ $# -ge 1 ] || usage
case $1 in -h|--help) usage 0 ;; -*) usage ;; esac
XFSTESTS_DIR=$(readlink -f "$1"); shift
GROUP=quick
TESTS=()
while [ $# -gt 0 ]; do
	case $1 in
	-g) [ $# -ge 2 ] || usage; GROUP=$2; shift 2 ;;
	-g*) GROUP=${1#-g}; shift ;;
	-h|--help) usage 0 ;;
	-*) echo "unknown option $1" >&2; usage ;;
	*) TESTS+=("$1"); shift ;;
	esac
done
if [ ${#TESTS[@]} -gt 0 ]; then
	SELECT=("${TESTS[@]}")
	WHAT="tests: ${TESTS[*]}"
else
	case $GROUP in */*) ;; *) GROUP=generic/$GROUP ;; esac
	SELECT=(-g "$GROUP")
	WHAT="group $GROUP"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATAFS=$(readlink -f "${STRATAFS:-$REPO/target/release/stratafs}")
RESULTS=${RESULTS:-/var/tmp/stratafs-xfstests/$(date +%Y%m%d-%H%M%S)}
ONLY=${ONLY:-}
IMG_SIZE=${IMG_SIZE:-10G}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-0}
HELPER=/sbin/mount.fuse.stratafs-xfstests
HELPER2=/sbin/mount.fuse.stratafs
QA_USERS=(fsgqa fsgqa2 123456-fsgqa)

die() { echo "xfstests.sh: $*" >&2; exit 1; }
log() { echo "== $*"; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$XFSTESTS_DIR/check" ] || die "$XFSTESTS_DIR has no ./check: not an xfstests checkout"
[ -x "$XFSTESTS_DIR/ltp/fsstress" ] || die "$XFSTESTS_DIR is not built: run make -j2 there first"
case $ONLY in ""|stratafs|overlay) ;; *) die "ONLY must be stratafs or overlay" ;; esac
if [ "$ONLY" != overlay ]; then
	[ -x "$STRATAFS" ] || die "no stratafs binary at $STRATAFS (build it, or set STRATAFS=)"
	[ -c /dev/fuse ] || die "no /dev/fuse"
	command -v fusermount3 >/dev/null || die "fusermount3 missing (Debian package fuse3)"
	[ ! -e "$HELPER" ] || die "$HELPER exists: another run is under way, or one left it behind"
fi
if [ "$ONLY" != stratafs ]; then
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
		die "kernel overlayfs is not available"
fi
BASE_FSTYP=${BASE_FSTYP:-ext4}
case $BASE_FSTYP in ext4|xfs) ;; *) die "BASE_FSTYP must be ext4 or xfs" ;; esac
for t in mkfs.$BASE_FSTYP losetup findmnt truncate useradd userdel; do
	command -v $t >/dev/null || die "$t missing"
done

W=$(mktemp -d /var/tmp/stratafs-xfstests-run.XXXXXX)
chmod 755 "$W" # the tests' users (fsgqa...) must reach TEST_DIR and SCRATCH_MNT under it
LOOPS=()
CREATED_USERS=()
INSTALLED=()

# The stratafs daemons of this run: their command line names this run's layer dirs.
daemons() { pgrep -f -- "upperdir=$W/" || true; }

# Unmounts everything under $W: the stratafs mounts first, then waits (up to 30 s) for
# their daemons to exit, kills those left (and says so in $1 if given), then the rest.
unmount_all() {
	local note=${1:-/dev/null} m p i
	for m in $(findmnt -rn -t fuse.stratafs -o TARGET | grep -F "$W/" | sort -r); do
		umount "$m" 2>/dev/null || {
			echo "could not unmount $m (busy): killing its daemon" | tee -a "$note"
			for p in $(daemons); do kill -9 "$p"; done
			sleep 1
			umount "$m" 2>/dev/null || umount -l "$m"
		}
	done
	for i in $(seq 30); do [ -n "$(daemons)" ] || break; sleep 1; done
	if [ -n "$(daemons)" ]; then
		echo "stratafs daemons still running 30 s after unmount, killed:" \
			"$(ps -o pid=,args= -p "$(daemons | paste -sd,)")" | tee -a "$note"
		for p in $(daemons); do kill -9 "$p"; done
		sleep 1
	fi
	for m in $(findmnt -rn -o TARGET | grep -F "$W/" | sort -r); do
		umount "$m" 2>/dev/null || { sleep 2; umount "$m"; } || umount -l "$m"
	done
}

cleanup() {
	local rc=$? l f u
	set +e
	trap - EXIT INT TERM HUP
	unmount_all
	for l in "${LOOPS[@]}"; do losetup -d "$l"; done
	for f in "${INSTALLED[@]}"; do rm -f "$f"; done
	for u in "${CREATED_USERS[@]}"; do userdel -r "$u" >/dev/null 2>&1 || userdel "$u"; done
	rm -rf "$W"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

mkdir -p "$RESULTS"
RESULTS=$(readlink -f "$RESULTS")
log "xfstests $WHAT; results in $RESULTS; run dir $W"

for u in "${QA_USERS[@]}"; do
	if ! id "$u" >/dev/null 2>&1; then
		useradd -m -U -s /bin/bash "$u" 2>/dev/null ||
			useradd --badname -m -U -s /bin/bash "$u" || die "cannot create user $u"
		CREATED_USERS+=("$u")
	fi
done

mkdir -p "$W"/{img,bin,base-test,base-scratch,test,scratch}
for n in test scratch; do
	truncate -s "$IMG_SIZE" "$W/img/$n.img"
	LOOPS+=("$(losetup -f --show "$W/img/$n.img")")
done
TEST_LOOP=${LOOPS[0]}
SCRATCH_LOOP=${LOOPS[1]}

format_bases() {
	local d
	for d in "$TEST_LOOP" "$SCRATCH_LOOP"; do
		case $BASE_FSTYP in
		ext4) mkfs.ext4 -q -F "$d" ;;
		xfs) mkfs.xfs -q -f "$d" ;;
		esac
	done
}

# The summary of one run: "passed failed notrun" lists into $RESULTS/$1/{ran,failed,notrun}.
collect() {
	local dir=$RESULTS/$1 log=$RESULTS/$1/console.log
	sed -n 's/^Ran: //p' "$log" | tail -1 | tr ' ' '\n' | sed '/^$/d' | sort >"$dir/ran"
	sed -n 's/^Not run: //p' "$log" | tail -1 | tr ' ' '\n' | sed '/^$/d' | sort >"$dir/notrun"
	sed -n 's/^Failures: //p' "$log" | tail -1 | tr ' ' '\n' | sed '/^$/d' | sort >"$dir/failed"
	if [ ! -s "$dir/ran" ] && [ ! -s "$dir/notrun" ]; then
		# ./check did not get to its summary (cut short): use the per-test lines
		grep -oE '^[a-z0-9]+/[0-9]+' "$log" | sort -u >"$dir/ran" || true
		(cd "$dir" && find . -name '*.notrun' | sed 's|^\./||; s|\.notrun$||') | sort >"$dir/notrun"
		# passed: "generic/001 3s" or "generic/001 2s ...  3s"; anything else that
		# started failed, including the test that was running when the run was cut
		grep -E '^[a-z0-9]+/[0-9]+ +([0-9]+s \.\.\. +)?[0-9]+s$' "$log" |
			awk '{print $1}' | sort -u >"$dir/passed.tmp" || true
		comm -23 "$dir/ran" "$dir/notrun" | comm -23 - "$dir/passed.tmp" >"$dir/failed"
		rm -f "$dir/passed.tmp"
	fi
	# ./check's "Ran:" counts the tests that turned out "not run" too
	comm -23 "$dir/ran" "$dir/notrun" >"$dir/ran.tmp"; mv "$dir/ran.tmp" "$dir/ran"
	comm -23 "$dir/ran" "$dir/failed" >"$dir/passed"
}

run_check() { # NAME CONFIG [extra check args]
	local name=$1 cfg=$2 rc=0
	shift 2
	mkdir -p "$RESULTS/$name"
	log "running ./check $* ${SELECT[*]} on $name (console: $RESULTS/$name/console.log)"
	(
		cd "$XFSTESTS_DIR"
		export HOST_OPTIONS=$cfg RESULT_BASE=$RESULTS/$name
		if [ "$name" = stratafs ]; then export PATH=$W/bin:$PATH; fi
		if [ "$CHECK_TIMEOUT" != 0 ]; then
			exec timeout -k 60 "$CHECK_TIMEOUT" ./check "$@" "${SELECT[@]}"
		else
			exec ./check "$@" "${SELECT[@]}"
		fi
	) </dev/null 2>&1 | tee "$RESULTS/$name/console.log" && rc=0 || rc=$?
	echo "$rc" >"$RESULTS/$name/check.rc"
	collect "$name"
	local con=$RESULTS/$name/console.log
	if grep -q '^Interrupted' "$con" || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "CUT SHORT (exit $rc)" >"$RESULTS/$name/incomplete"
	elif ! grep -qE '^(Passed all|Failed) [0-9]+ ' "$con"; then
		if [ ! -s "$RESULTS/$name/ran" ] && [ ! -s "$RESULTS/$name/notrun" ]; then
			echo "DID NOT START (exit $rc)" >"$RESULTS/$name/incomplete"
		else
			echo "ENDED WITHOUT A SUMMARY (exit $rc)" >"$RESULTS/$name/incomplete"
		fi
	fi
	return 0
}

# ---- stratafs ----
if [ "$ONLY" != overlay ]; then
	format_bases
	mount "$TEST_LOOP" "$W/base-test"
	mount "$SCRATCH_LOOP" "$W/base-scratch"
	for b in "$W/base-test" "$W/base-scratch"; do mkdir -p "$b"/{lower1,lower2,upper,wd}; done
	ln -s "$STRATAFS" "$W/bin/mount.stratafs"
	REAL_DF=$(command -v df)
	cat >"$W/bin/df" <<EOF
#!/bin/bash
# xfstests compares df -T's type with FSTYP=fuse; stratafs mounts are fuse.stratafs
set -o pipefail
"$REAL_DF" "\$@" | sed -E 's/^([^ ]+ +)fuse\.stratafs( |$)/\1fuse         \2/'
EOF
	chmod +x "$W/bin/df"
	cat >"$HELPER" <<EOF
#!/bin/bash
# mount(8) helper installed by stratafs' scripts/xfstests.sh for one run (removed after it):
# maps the xfstests device names to layer dirs on the run's base filesystems.
src=\$1 mnt=\$2
shift 2 || { echo "usage: \$0 SOURCE MOUNTPOINT [-sfnv] -o OPTIONS" >&2; exit 1; }
opts= flags=()
while [ \$# -gt 0 ]; do
	case \$1 in
	-o) opts=\${opts:+\$opts,}\$2; shift 2 || break ;;
	-o*) opts=\${opts:+\$opts,}\${1#-o}; shift ;;
	-t) shift 2 || break ;;
	*) flags+=("\$1"); shift ;;
	esac
done
case \$src in
stratafs-test) base="$W/base-test" ;;
stratafs-scratch) base="$W/base-scratch" ;;
*) echo "\$0: unknown source \$src (stratafs-test or stratafs-scratch)" >&2; exit 32 ;;
esac
log() { echo "\$(date +%T.%N | cut -c1-12) \$src \$mnt: \$*" >>"$RESULTS/stratafs/mount-helper.log"; }
case ,\$opts, in
*,remount,*) log "-o \$opts" ;;
*)
	# umount returns before the daemon has exited and let go of its upper dir; a new
	# mount of that dir meanwhile is refused ("in use by another mount"). When no mount
	# of this source is left, wait (up to 60 s) for such a daemon to exit, and log it.
	if ! findmnt -rn -S "\$src" >/dev/null; then
		start=\$(date +%s%N) n=0
		while pids=\$(pgrep -d, -f -- "upperdir=\$base/upper,"); do
			if [ \$n = 0 ]; then
				log "waiting for the daemon of the previous mount to exit: \$(ps -L -o pid=,tid=,stat=,wchan:24=,etime= -p "\$pids" | tr -s ' \n' ' ')"
			fi
			[ \$n -lt 600 ] || { log "still running after 60 s"; break; }
			sleep 0.1; n=\$((n + 1))
		done
		[ \$n = 0 ] || log "waited \$(( (\$(date +%s%N) - start) / 1000000 )) ms"
	fi
	log "-o \$opts"
	opts=lowerdir=\$base/lower1:\$base/lower2,upperdir=\$base/upper,workdir=\$base/wd\${opts:+,\$opts}
	;;
esac
exec "$W/bin/mount.stratafs" "\$src" "\$mnt" "\${flags[@]}" -o "\$opts"
EOF
	chmod +x "$HELPER"
	INSTALLED+=("$HELPER")
	if [ ! -e "$HELPER2" ]; then
		ln -s "$(basename "$HELPER")" "$HELPER2"
		INSTALLED+=("$HELPER2")
	fi
	cat >"$W/stratafs.config" <<EOF
export FSTYP=fuse
export FUSE_SUBTYP=.stratafs-xfstests
export TEST_DEV=stratafs-test
export TEST_DIR=$W/test
export SCRATCH_DEV=stratafs-scratch
export SCRATCH_MNT=$W/scratch
EOF
	cp "$W/stratafs.config" "$RESULTS/stratafs.config"
	run_check stratafs "$W/stratafs.config"
	unmount_all "$RESULTS/stratafs/unmount-problems"
	[ -z "$(findmnt -rn -o TARGET | grep -F "$W/")" ] || die "cannot unmount after the stratafs run"
fi

# ---- kernel overlayfs ----
if [ "$ONLY" != stratafs ]; then
	format_bases
	cat >"$W/overlay.config" <<EOF
export FSTYP=$BASE_FSTYP
export TEST_DEV=$TEST_LOOP
export TEST_DIR=$W/base-test
export SCRATCH_DEV=$SCRATCH_LOOP
export SCRATCH_MNT=$W/base-scratch
EOF
	cp "$W/overlay.config" "$RESULTS/overlay.config"
	run_check overlay "$W/overlay.config" -overlay
fi

# ---- summary ----
first_diff() { # RUN TEST: the first line of the output that differs, or the failure note
	local d=$RESULTS/$1 t=$2 line=
	if [ -f "$d/$t.out.bad" ] && [ -f "$XFSTESTS_DIR/tests/$t.out" ]; then
		# the first unexpected line, else the first missing one
		line=$(diff "$XFSTESTS_DIR/tests/$t.out" "$d/$t.out.bad" | grep -m1 '^>' || true)
		[ -n "$line" ] || line=$(diff "$XFSTESTS_DIR/tests/$t.out" "$d/$t.out.bad" | grep -m1 '^<' || true)
	fi
	[ -n "$line" ] || line=$(grep -m1 -E "^$t( |$)" "$d/console.log" | cut -c1-150 || true)
	if [ -z "$line" ] && [ -f "$d/$t.dmesg" ]; then line="dmesg: $(head -c 120 "$d/$t.dmesg")"; fi
	echo "$line" | tr '\n\t' '  ' | cut -c1-160
}
notrun_reason() { head -1 "$RESULTS/$1/$2.notrun" 2>/dev/null || echo "?"; }
count() { if [ -f "$1" ]; then wc -l <"$1"; else echo -; fi; }

{
	echo
	echo "xfstests $WHAT ($(cd "$XFSTESTS_DIR" && git describe --always 2>/dev/null || echo unknown)), kernel $(uname -r), base fs $BASE_FSTYP, $(date)"
	printf '%-10s %8s %8s %8s  %s\n' fs passed failed "not run" note
	for fs in stratafs overlay; do
		[ -d "$RESULTS/$fs" ] || continue
		printf '%-10s %8s %8s %8s  %s\n' "$fs" "$(count "$RESULTS/$fs/passed")" \
			"$(count "$RESULTS/$fs/failed")" "$(count "$RESULTS/$fs/notrun")" \
			"$(cat "$RESULTS/$fs/incomplete" 2>/dev/null || true)"
	done
	waits=$(sed -n 's/.* waited \([0-9]*\) ms$/\1/p' "$RESULTS/stratafs/mount-helper.log" 2>/dev/null |
		sort -n || true)
	if [ -n "$waits" ]; then
		echo "stratafs: $(echo "$waits" | wc -l) mounts waited for the daemon of the previous" \
			"mount to exit (longest $(echo "$waits" | tail -1) ms), see mount-helper.log"
	fi
	if [ -s "$RESULTS/stratafs/unmount-problems" ]; then
		echo "stratafs unmount/daemon problems:"; sed 's/^/  /' "$RESULTS/stratafs/unmount-problems"
	fi
	if [ -d "$RESULTS/stratafs" ] && [ -d "$RESULTS/overlay" ]; then
		S=$RESULTS/stratafs O=$RESULTS/overlay
		echo
		echo "Failed on stratafs, passed on overlay ($(comm -12 "$S/failed" "$O/passed" | wc -l)):"
		for t in $(comm -12 "$S/failed" "$O/passed"); do echo "  $t: $(first_diff stratafs "$t")"; done
		echo
		echo "Not run on stratafs, run on overlay ($(comm -12 "$S/notrun" "$O/ran" | wc -l)):"
		for t in $(comm -12 "$S/notrun" "$O/ran"); do echo "  $t: $(notrun_reason stratafs "$t")"; done
		echo
		echo "Failed on stratafs, not run on overlay ($(comm -12 "$S/failed" "$O/notrun" | wc -l)):"
		for t in $(comm -12 "$S/failed" "$O/notrun"); do
			echo "  $t: $(first_diff stratafs "$t") [overlay: $(notrun_reason overlay "$t")]"
		done
		echo
		echo "Failed on both: $(comm -12 "$S/failed" "$O/failed" | tr '\n' ' ')"
		echo "Failed on overlay only: $(comm -13 "$S/failed" "$O/failed" | tr '\n' ' ')"
		echo "Not run on overlay, run on stratafs: $(comm -12 "$O/notrun" "$S/ran" | tr '\n' ' ')"
		echo
		echo "Not run on stratafs, by reason:"
		for t in $(cat "$S/notrun"); do notrun_reason stratafs "$t"; done | sort | uniq -c | sort -rn
	fi
	echo
	echo "Results: $RESULTS/{stratafs,overlay} (console.log, check.log, <test>.out.bad/.full/.notrun)"
} | tee "$RESULTS/summary.txt"

for fs in stratafs overlay; do
	[ ! -f "$RESULTS/$fs/incomplete" ] || exit 1
done
exit 0
