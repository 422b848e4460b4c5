#!/usr/bin/env python3
"""Turn the raw records of scripts/bench.sh into the markdown report.

Usage: report.py RESULTS.tsv META.txt > report.md

RESULTS.tsv records (tab separated), written by bench.sh:
  m     metric system run value unit secs cpu_s hwm_kb check rc
  rss   system rss_walked_kb hwm_kb rss_after_drop_kb
  load  run load1 load5 load15
  note  text
META.txt: key=value lines (machine, versions, settings).
"""
import collections
import statistics
import sys

SYSTEMS = ["native", "kernel", "fo1", "fo2", "stratafs"]
NAMES = {
    "native": "native dir",
    "kernel": "kernel overlayfs",
    "fo1": "fuse-overlayfs 1.10 (C)",
    "fo2": "fuse-overlayfs 2.0 (Rust)",
    "stratafs": "stratafs",
}
FUSE = ["fo1", "fo2", "stratafs"]
HIGHER_IS_BETTER = {"MiB/s", "IOPS"}


def targets(metric):
    """The issue-12 targets of a metric: a list of (kind, op, bound, label), all to be met.
    kind: "ratio" to kernel overlayfs, "fo1" ratio to fuse-overlayfs 1.10, "abs" the value
    itself, "self" ratio to stratafs' own W1 row."""
    w, rest = metric.split(" ", 1)
    cold, warm = rest.endswith(" cold"), rest.endswith(" warm")
    if w in ("W1", "W2", "W7", "W9") and cold:
        return [("ratio", "<=", 2.0, "<= 2.0x")]
    if w in ("W1", "W2", "W7", "W9") and warm:
        return [("ratio", "<=", 1.2, "<= 1.2x")]
    if w == "W3":
        return [("ratio", "<=", 1.3, "<= 1.3x")]
    if w == "W4":
        return [("ratio", ">=", 0.9, ">= 0.9x")]
    if w == "W8":
        return [("ratio", ">=", 0.8, ">= 0.8x")]
    if w == "W5":
        return [("ratio", "<=", 1.2, "<= 1.2x")]
    if w == "W6":
        return [("ratio", "<=", 1.5, "<= 1.5x")]
    # The O(1) targets of chmod and mv are for the levers that make them O(1).
    if w == "W10" and "metacopy=on" in rest:
        return [("abs", "<=", 0.020, "<= 20 ms")]
    if w == "W11" and "redirect_dir=on" in rest:
        return [("abs", "<=", 0.050, "<= 50 ms")]
    if w == "W12" and warm:
        return [("self", "<=", 1.5, "<= 1.5x own W1 warm")]
    if w == "W13":
        return [("abs", "<=", 1.1, "<= 1.1x one mount's")]
    if w == "W14":
        return [("ratio", "<=", 2.0, "<= 2.0x")]
    if w == "C":
        client, step = rest.split(" ", 1)
        t = []
        if step == "build":
            t.append(("ratio", "<=", 2.0, "<= 2.0x"))
        if (client == "podman" and step in ("build", "import", "commit c1", "diff c1")) or (
                client == "docker" and step == "build"):
            t.append(("fo1", "<=", 1 / 1.5, "1.5x faster than fuse-overlayfs 1.10"))
        if client == "apt" and step == "apt-get install":
            t.append(("ratio", "<=", 1.3, "<= 1.3x"))
        return t
    return []


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "x":
        return "%.2fx" % v
    if unit in HIGHER_IS_BETTER:
        return "%.0f" % v if v >= 100 else "%.3g" % v
    if v < 0.1:
        return "%.1f ms" % (v * 1000)
    return "%.3g s" % v if v < 100 else "%.0f s" % v


def fnum(v):
    return "%.3g" % v


def main():
    rows = collections.OrderedDict()  # metric -> sys -> list of records
    rss, loads, notes = {}, [], []
    for line in open(sys.argv[1]):
        f = line.rstrip("\n").split("\t")
        if f[0] == "m":
            metric, system, run, value, unit, secs, cpu, hwm, check, rc = f[1:11]
            rows.setdefault(metric, {}).setdefault(system, []).append(
                dict(run=int(run), value=float(value) if value else None, unit=unit,
                     cpu=float(cpu) if cpu else None, hwm=int(hwm) if hwm else None,
                     check=check, rc=int(rc)))
        elif f[0] == "rss":
            rss[f[1]] = tuple(int(x) if x else None for x in f[2:5])
        elif f[0] == "load":
            loads.append((int(f[1]), f[2], f[3], f[4]))
        elif f[0] == "note":
            notes.append(f[1])
    meta = collections.OrderedDict()
    for line in open(sys.argv[2]):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            meta[k] = v

    out = []
    p = out.append
    p("Machine: %s; %s vCPUs (`nproc`), %s RAM; Linux %s; layers on %s." % (
        meta.get("cpu", "?"), meta.get("nproc", "?"), meta.get("mem", "?"),
        meta.get("kernel", "?"), meta.get("fs", "?")))
    p("Run: %s, %s; %s run(s) per workload, interleaved round-robin across systems; "
      "W8 fio %s s; lowers: %s; total runtime %s." % (
          meta.get("date", "?"), meta.get("mode", "?"), meta.get("runs", "?"),
          meta.get("fio_secs", "?"), meta.get("lowers", "?"), meta.get("runtime", "?")))
    p("Versions: stratafs %s (options: %s); %s; %s; kernel overlayfs defaults (%s)." % (
        meta.get("stratafs_rev", "?"), meta.get("stratafs_opts", "defaults"),
        meta.get("fo1_version", "?"), meta.get("fo2_version", "?"),
        meta.get("ovl_params", "?")))
    if loads:
        l1 = [float(x[1]) for x in loads]
        p("Load average (1 min) at the start of each run: %s (min %.2f, max %.2f); "
          "before the benchmark %s, after %s." % (
              ", ".join(x[1] for x in loads), min(l1), max(l1),
              meta.get("load_start", "?"), meta.get("load_end", "?")))
    p("")
    p("Each cell: median (min–max) and the ratio of medians to kernel overlayfs. Times "
      "are wall-clock seconds (lower is better); MiB/s and IOPS: higher is better. "
      "cold = after `sync; echo 3 > /proc/sys/vm/drop_caches`, warm = the same command "
      "again right after. Every union is mounted fresh (empty upper) for each measurement.")
    p("")
    hdr = ["workload", "unit"] + [NAMES[s] for s in SYSTEMS] + [
        "stratafs target", "target met", "beats both fuse-overlayfs"]
    p("| " + " | ".join(hdr) + " |")
    p("|" + "|".join(["---"] * 2 + ["---:"] * len(SYSTEMS) + ["---"] * 3) + "|")

    summary = []
    mismatches = []
    failures = []
    med = {}
    for metric, bysys in rows.items():
        unit = next(iter(bysys.values()))[0]["unit"]
        for s, recs in bysys.items():
            vals = [r["value"] for r in recs if r["rc"] == 0 and r["value"] is not None]
            med[(metric, s)] = statistics.median(vals) if vals else None
            nf = sum(1 for r in recs if r["rc"] != 0)
            if nf:
                failures.append("%s on %s: %d of %d runs failed" % (metric, NAMES[s], nf, len(recs)))
            ref = bysys.get("native") or bysys.get("kernel")
            if ref and s not in ("native",):
                refchk = {r["run"]: r["check"] for r in ref if r["check"]}
                for r in recs:
                    if r["check"] and r["run"] in refchk and r["check"] != refchk[r["run"]]:
                        mismatches.append("%s on %s (run %d): got `%s`, %s gave `%s`" % (
                            metric, NAMES[s], r["run"], r["check"],
                            "native" if bysys.get("native") else "kernel overlayfs",
                            refchk[r["run"]]))
    for metric, bysys in rows.items():
        unit = next(iter(bysys.values()))[0]["unit"]
        kmed = med.get((metric, "kernel"))
        cells = [metric, unit]
        for s in SYSTEMS:
            recs = bysys.get(s)
            if not recs:
                cells.append("—")
                continue
            vals = [r["value"] for r in recs if r["rc"] == 0 and r["value"] is not None]
            if not vals:
                cells.append("FAILED")
                continue
            m = med[(metric, s)]
            c = fmt(m, unit)
            if len(vals) > 1:
                c += " (%s–%s)" % (fmt(min(vals), unit), fmt(max(vals), unit))
            if kmed:
                c += " **%.2fx**" % (m / kmed) if s == "stratafs" else " %.2fx" % (m / kmed)
            if len(vals) < len(recs):
                c += " [%d failed]" % (len(recs) - len(vals))
            cells.append(c)
        sm = med.get((metric, "stratafs"))
        met = "—"
        verdicts = []
        for kind, op, bound, label in targets(metric):
            if sm is None:
                continue
            if kind == "ratio":
                x = sm / kmed if kmed else None
            elif kind == "fo1":
                f1 = med.get((metric, "fo1"))
                x = sm / f1 if f1 else None
            elif kind == "abs":
                x = sm
            else:
                base = med.get((metric.replace("W12", "W1", 1), "stratafs"))
                x = sm / base if base else None
            if x is None:
                continue
            ok = x <= bound if op == "<=" else x >= bound
            if kind == "abs":
                shown = fmt(x, unit) if unit == "x" else "%.1f ms" % (x * 1000)
            elif kind == "fo1":
                shown = "%.2fx fo1" % x
            else:
                shown = "%.2fx" % x
            verdicts.append(("PASS" if ok else "MISS") + " (" + shown + ")")
            summary.append((metric, ok, shown, label))
        if verdicts:
            met = "; ".join(verdicts)
        cells.append("; ".join(t[3] for t in targets(metric)) or "—")
        cells.append(met)
        beats = "—"
        if sm is not None:
            hib = unit in HIGHER_IS_BETTER
            others = [(s, med.get((metric, s))) for s in ("fo1", "fo2") if med.get((metric, s))]
            if others:
                lost = [NAMES[s] for s, v in others if (sm <= v if hib else sm >= v)]
                beats = "yes" if not lost else "no (" + ", ".join(lost) + ")"
        cells.append(beats)
        p("| " + " | ".join(cells) + " |")

    # daemon CPU and memory
    p("")
    p("FUSE daemons: CPU seconds (utime+stime of the daemon during the timed command, "
      "median) / peak RSS (VmHWM of that mount, max over runs, MiB).")
    p("")
    p("| workload | " + " | ".join(NAMES[s] for s in FUSE) + " |")
    p("|---|" + "---:|" * len(FUSE))
    peak = {s: 0 for s in FUSE}
    for metric, bysys in rows.items():
        cells = [metric]
        for s in FUSE:
            recs = bysys.get(s) or []
            cpus = [r["cpu"] for r in recs if r["cpu"] is not None]
            hwms = [r["hwm"] for r in recs if r["hwm"]]
            if hwms:
                peak[s] = max(peak[s], max(hwms))
            cells.append("%s / %s" % (fnum(statistics.median(cpus)) if cpus else "—",
                                      "%.0f" % (max(hwms) / 1024) if hwms else "—"))
        p("| " + " | ".join(cells) + " |")
    p("")
    p("Peak RSS over the whole benchmark (max VmHWM over every mount): " + ", ".join(
        "%s %.0f MiB" % (NAMES[s], peak[s] / 1024) for s in FUSE if peak[s]) +
      " (stratafs target <= 150 MiB: %s)." % (
          "PASS" if peak["stratafs"] and peak["stratafs"] <= 150 * 1024 else "MISS"))
    if rss:
        p("")
        p("Memory after a walk of the rootfs and the big directory (find, du, lstat of "
          "every file) on one mount, then `echo 2 > /proc/sys/vm/drop_caches` "
          "(the kernel forgets its inodes):")
        p("")
        p("| daemon | VmRSS after walk | VmHWM | VmRSS after drop_caches | shrinks |")
        p("|---|---:|---:|---:|---|")
        for s in FUSE:
            if s in rss:
                b, h, a = rss[s]
                p("| %s | %s | %s | %s | %s |" % (
                    NAMES[s], *("%.1f MiB" % (x / 1024) if x else "—" for x in (b, h, a)),
                    ("yes (-%.0f%%)" % (100 * (b - a) / b)) if b and a is not None and a < b * 0.9
                    else "no"))
    if summary:
        p("")
        npass = sum(1 for x in summary if x[1])
        p("stratafs targets: %d of %d met. Missed: %s." % (
            npass, len(summary),
            "; ".join("%s %s (target %s)" % (m, shown, lab) for m, ok, shown, lab in summary
                      if not ok) or "none"))
    if failures or mismatches:
        p("")
        p("Failures and wrong results:")
        for x in failures + mismatches:
            p("- " + x)
    for n in notes:
        p("")
        p("Note: " + n)
    print("\n".join(out))


if __name__ == "__main__":
    main()
