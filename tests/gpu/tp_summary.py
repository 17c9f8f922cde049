#!/usr/bin/env python3
"""Per-rank and merged per-step numbers of a tensor-parallel sweep (coord sweep or coord ingest output).

Usage: tp_summary.py RESULTS [--markdown FILE]

Per batch size (means over steps): each rank's GPU time, collective time, wait and transfer; the merged
step (the slowest rank's view): its GPU time and categories with the wait left out, the wait apart, which
rank was slowest, and the largest spread of the ranks' end times of one collective (the clock check).
Checks: every step of every batch size has a merged row and a row per rank; each rank's categories add
up to its GPU time and its collective time to wait + transfer; the merged step's GPU time is its slowest
rank's net of waiting (the most of any rank). Prints JSON; exit status 1 when a check fails, 2 for unreadable input.
"""
import argparse
import csv
import json
import os
import sys
from collections import defaultdict


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--markdown")
    a = p.parse_args(argv)
    try:
        with open(os.path.join(a.results, "steps.csv")) as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        print(f"tp_summary: {e}", file=sys.stderr)
        return 2
    f_ = lambda r, c: float(r[c] or 0)
    failures = []
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[int(r["batch_size"])][r["rank"]].append(r)
    out = []
    for b in sorted(by):
        ranks = sorted(k for k in by[b] if k != "merged")
        merged = by[b].get("merged", [])
        n = len(merged)
        if n == 0 or any(len(by[b][k]) != n for k in ranks):
            failures.append(f"batch {b}: {n} merged steps, per rank {[len(by[b][k]) for k in ranks]}")
        for k in ranks:
            for r in by[b][k]:
                cats = f_(r, "attention_us") + f_(r, "linear_us") + f_(r, "others_us")
                if abs(cats - f_(r, "gpu_time_us")) > 0.01:
                    failures.append(f"batch {b} rank {k} step {r['step']}: categories {cats} != GPU time {r['gpu_time_us']}")
                if abs(f_(r, "collective_wait_us") + f_(r, "collective_transfer_us") - f_(r, "collective_us")) > 0.01:
                    failures.append(f"batch {b} rank {k} step {r['step']}: wait + transfer != collective time")
        for m in merged:
            own = [r for r in by[b][m["slowest_rank"]] if r["trace"] == m["trace"] and r["step"] == m["step"]]
            net = lambda r: f_(r, "gpu_time_us") - f_(r, "collective_wait_us")
            if len(own) != 1 or abs(net(own[0]) - f_(m, "gpu_time_us")) > 0.01:
                failures.append(f"batch {b} step {m['step']}: merged GPU time is not its slowest rank's net of waiting")
            others = [r for k in ranks for r in by[b][k] if r["step_name"] == m["step_name"] and r["step"] == m["step"]]
            if any(net(r) > f_(m, "gpu_time_us") + 0.01 for r in others if r["trace"] != m["trace"]):
                failures.append(f"batch {b} step {m['step']}: a rank has more GPU time net of waiting than the merged step")
        mean = lambda rs, c: sum(f_(r, c) for r in rs) / max(len(rs), 1)
        row = {"batch_size": b, "steps": n, "ranks": {}}
        for k in ranks:
            rs = by[b][k]
            row["ranks"][k] = {c: round(mean(rs, c), 3) for c in
                               ("gpu_time_us", "collective_us", "collective_wait_us", "collective_transfer_us")}
        row["merged"] = {c: round(mean(merged, c), 3) for c in
                         ("gpu_time_us", "attention_us", "linear_us", "others_us", "collective_wait_us",
                          "collective_transfer_us", "rank_end_skew_us")}
        row["merged"]["slowest_rank"] = [m["slowest_rank"] for m in merged]
        row["merged"]["max_rank_end_skew_us"] = max((f_(m, "rank_end_skew_us") for m in merged), default=0)
        out.append(row)
    if a.markdown:
        with open(a.markdown, "w") as f:
            ranks = sorted({k for r in out for k in r["ranks"]})
            f.write("| batch | steps | " + " | ".join(
                f"rank {k} GPU µs | rank {k} collective µs (wait + transfer)" for k in ranks)
                + " | merged GPU µs | merged attention | merged linear | merged others (no wait) | wait (slowest rank) | slowest rank | end skew µs (median per step, largest step) |\n")
            f.write("|" + "---:|" * (2 + 2 * len(ranks) + 7) + "\n")
            for r in out:
                m = r["merged"]
                cells = [str(r["batch_size"]), str(r["steps"])]
                for k in ranks:
                    x = r["ranks"].get(k, {})
                    cells += [f"{x.get('gpu_time_us', 0):.1f}",
                              f"{x.get('collective_us', 0):.1f} ({x.get('collective_wait_us', 0):.1f} + {x.get('collective_transfer_us', 0):.1f})"]
                cells += [f"{m['gpu_time_us']:.1f}", f"{m['attention_us']:.1f}", f"{m['linear_us']:.1f}",
                          f"{m['others_us']:.1f}", f"{m['collective_wait_us']:.1f}", ",".join(m["slowest_rank"]),
                          f"{m['max_rank_end_skew_us']:.2f}"]
                f.write("| " + " | ".join(cells) + " |\n")
    print(json.dumps({"results": a.results, "batch_sizes": out, "failures": failures}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
