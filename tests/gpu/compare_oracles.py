#!/usr/bin/env python3
"""Compares `coord analyze --json` of every stored trace with torch's key_averages() of the same step.

Usage: compare_oracles.py COORD_TRACES_DIR ORACLE_DIR HOST
Stored traces: COORD_TRACES_DIR/<sweep>/<host>/<point>/<mode>%2Flogs_<bs>%2Ftrace_<step>.json.zst
Oracles:       ORACLE_DIR/<point>__<step>.json
Prints a JSON summary: traces and rows compared, rows outside tolerance (count exact; device times within
0.1% or 0.01 us; CPU times within 1% or 0.01 us), and the largest differences.
"""
import glob
import json
import os
import re
import subprocess
import sys
from collections import defaultdict


def group(rows):
    out = defaultdict(list)
    for r in rows:
        out[r["key"]].append(r)
    for v in out.values():
        v.sort(key=lambda r: (r["cpu_time_total_us"] or 0, r["device_time_total_us"] or 0))
    return out


def main():
    traces_dir, oracle_dir, host = sys.argv[1:4]
    summary = dict(traces=0, rows=0, mismatched_rows=0, missing_keys=0, worst=[])
    for path in sorted(glob.glob(os.path.join(traces_dir, "*", host, "*", "*.zst"))):
        point = os.path.basename(os.path.dirname(path))
        m = re.search(r"trace_(\d+)\.json", os.path.basename(path))
        oracle = os.path.join(oracle_dir, f"{point}__{m.group(1) if m else 0}.json")
        if not os.path.exists(oracle):
            continue
        got = json.loads(subprocess.check_output(["coord", "analyze", "--json", path]))
        want = json.load(open(oracle))
        g, w = group(got), group(want)
        summary["traces"] += 1
        for key, wrows in w.items():
            grows = g.get(key, [])
            if len(grows) != len(wrows):
                summary["missing_keys"] += 1
                continue
            for a, b in zip(grows, wrows):
                summary["rows"] += 1
                bad = a["count"] != b["count"]
                for field, rel in (("cpu_time_total_us", 0.01), ("self_cpu_time_total_us", 0.01),
                                   ("device_time_total_us", 0.001), ("self_device_time_total_us", 0.001)):
                    x, y = a[field] or 0.0, b[field] or 0.0
                    if abs(x - y) > max(rel * abs(y), 0.01):
                        bad = True
                        summary["worst"].append((abs(x - y) / max(abs(y), 1e-9), point, key[:60], field, x, y))
                summary["mismatched_rows"] += bad
    summary["worst"] = sorted(summary["worst"], reverse=True)[:10]
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
