#!/usr/bin/env python3
"""Build the benchmark's layer trees (everything except the Debian rootfs itself).

Usage: fixtures.py FXDIR N_MANY BIG_MIB N_SMALL N_MERGED_DIRS N_EXTRA N_UNTAR N_WIDE

Writes, below FXDIR (which must hold base/rootfs and native/rootfs already, as copies of
the rootfs):
  top/                    the upper lower layer ("A" in lowerdir=A:B)
    many/f000000..        N_MANY small files in one directory (W1, W7)
    big.img               BIG_MIB MiB of pseudo-random bytes (W4, W5, W10)
    small/s0000..         N_SMALL files of 1-16 KiB (W5)
    merged/dNN/aNNN       half of the merged tree (W11); the other half is in base/
    rootfs/etc/...        a few files over the rootfs, one replacing a lower file,
                          and an overlayfs whiteout (char 0/0) hiding etc/issue.net
    wide/dNNNN/aNNN       half of N_WIDE entries of a merged tree (W14): dirs of 200
                          entries, 100 in each layer
  base/merged/dNN/bNNN    the other half of the merged tree (every dNN is in both layers)
  base/wide/dNNNN/bNNN    the other half of wide/
  native/                 the same merged view as one plain directory tree
  extra/NN/               N_EXTRA small layers for W12 (lowers extra/NN:...:top:base),
                          each adding files in rootfs/etc, rootfs/usr/bin, rootfs/usr/share
                          and many/, and replacing rootfs/etc/bench-shared.conf
  untar.tar               N_UNTAR files in directories of 100 (W6)
Content is deterministic (fixed seeds), so two builds are identical.
"""
import io
import os
import random
import sys
import tarfile


def write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def both(roots, rel, data):
    for r in roots:
        p = os.path.join(r, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        write(p, data)


def main():
    fx = sys.argv[1]
    n_many, big_mib, n_small, n_merged, n_extra, n_untar, n_wide = map(int, sys.argv[2:9])
    top, base, native = (os.path.join(fx, d) for d in ("top", "base", "native"))
    rnd = random.Random(20261128)

    # many/: one flat directory
    for r in (top, native):
        os.makedirs(os.path.join(r, "many"), exist_ok=True)
    for i in range(n_many):
        data = b"file %06d\n" % i * (1 + i % 8)
        both((top, native), "many/f%06d" % i, data)

    # small/: files of 1..16 KiB
    for i in range(n_small):
        data = bytes([65 + i % 26]) * rnd.randint(1024, 16384)
        both((top, native), "small/s%04d" % i, data)

    # merged/: every dNN in both layers, aNNN files in top, bNNN in base
    for d in range(n_merged):
        for j in range(50):
            both((top, native), "merged/d%02d/a%03d" % (d, j), b"a %d %d\n" % (d, j))
            both((base, native), "merged/d%02d/b%03d" % (d, j), b"b %d %d\n" % (d, j))

    # wide/: n_wide entries (dirs included) merged from both layers, for rm -rf (W14)
    for d in range(max(1, n_wide // 201)):
        for j in range(100):
            both((top, native), "wide/d%04d/a%03d" % (d, j), b"")
            both((base, native), "wide/d%04d/b%03d" % (d, j), b"")

    # rootfs overrides in top (native/rootfs gets the same result)
    both((top, native), "rootfs/etc/bench-top.conf", b"from the top layer\n")
    both((top, native), "rootfs/etc/debian_version", b"12.99-stratafs-bench\n")
    for i in range(100):
        both((top, native), "rootfs/usr/share/bench-top/t%03d" % i, b"t %d\n" % i)
    wh = os.path.join(top, "rootfs/etc/issue.net")
    if not os.path.lexists(wh):
        os.mknod(wh, 0o600 | 0o020000, os.makedev(0, 0))  # overlayfs whiteout
    nat = os.path.join(native, "rootfs/etc/issue.net")
    if os.path.lexists(nat):
        os.unlink(nat)

    # big.img: pseudo-random, not sparse, not compressible
    chunk = rnd.randbytes(1 << 20)
    for r in (top, native):
        with open(os.path.join(r, "big.img"), "wb") as f:
            for i in range(big_mib):
                # vary each MiB cheaply so no two MiB blocks are equal
                f.write(i.to_bytes(8, "little") + chunk[8:])

    # extra layers for W12 (newest first in lowerdir: extra/NN-1:...:extra/00:top:base)
    for n in range(n_extra):
        e = os.path.join(fx, "extra", "%02d" % n)
        both((e,), "rootfs/etc/bench-layer-%02d.conf" % n, b"layer %d\n" % n)
        both((e,), "rootfs/etc/bench-shared.conf", b"shared, layer %d\n" % n)
        both((e,), "rootfs/usr/bin/bench-tool-%02d" % n, b"#!/bin/sh\necho %d\n" % n)
        os.chmod(os.path.join(e, "rootfs/usr/bin/bench-tool-%02d" % n), 0o755)
        for i in range(10):
            both((e,), "rootfs/usr/share/bench-layer-%02d/f%d" % (n, i), b"%d %d\n" % (n, i))
        both((e,), "many/zz-layer-%02d" % n, b"layer %d\n" % n)

    # untar.tar: n_untar files, 100 per directory, 0..4 KiB
    with tarfile.open(os.path.join(fx, "untar.tar"), "w", format=tarfile.GNU_FORMAT) as t:
        for d in range((n_untar + 99) // 100):
            ti = tarfile.TarInfo("untar/d%03d" % d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            t.addfile(ti)
            for j in range(min(100, n_untar - d * 100)):
                data = bytes([97 + j % 26]) * rnd.randint(0, 4096)
                ti = tarfile.TarInfo("untar/d%03d/f%03d" % (d, j))
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
                t.addfile(ti, io.BytesIO(data))


if __name__ == "__main__":
    main()
