#!/usr/bin/env python3
"""Compares an eager and a CUDA-graph vLLM decode sweep of the same batch sizes, batch size by batch size.

Usage: compare_graphs.py EAGER_RESULTS GRAPH_RESULTS [--markdown FILE]

For each batch size in both (steps.csv of each; tensor-parallel merged rows are left out):
  - kernels per step in each detailed category, eager and graphs: the six categories of the decoder layers
    must be equal (the graph sweep's replayed kernels are attributed through the eager reference step
    each graph window starts with), and attention and linear must be > 0 under graphs;
  - GPU time per step per category, eager and graphs, and the difference (graphs - eager);
  - the graph steps' replayed kernels: mapped exactly, inferred, unattributed (per step).
Prints JSON; exit status 1 when a check fails, 2 for unreadable input.
"""
import argparse
import csv
import json
import os
import sys
from collections import defaultdict

DETAIL = ("kqv_proj", "rope", "paged_attention", "o_proj", "gated_up_proj", "down_proj", "others")
LAYER = DETAIL[:6]


def per_batch(path):
    """batch size -> mean per step of every numeric column of interest."""
    with open(os.path.join(path, "steps.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r.get("rank", "0") != "merged"]
    acc = defaultdict(lambda: defaultdict(float))
    n = defaultdict(int)
    for r in rows:
        b = int(r["batch_size"])
        n[b] += 1
        for d in DETAIL:
            acc[b][f"{d}_kernels"] += float(r[f"detail_{d}_kernels"])
            acc[b][f"{d}_us"] += float(r[f"detail_{d}_us"])
        for c in ("gpu_time_us", "attention_us", "linear_us", "others_us", "layers"):
            acc[b][c] += float(r[c])
        for c in ("graph_replayed", "graph_exact", "graph_inferred", "graph_unattributed"):
            acc[b][c] += float(r.get(c) or 0)
    return {b: {k: v / n[b] for k, v in acc[b].items()} | {"steps": n[b]} for b in acc}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("eager")
    p.add_argument("graphs")
    p.add_argument("--markdown")
    a = p.parse_args(argv)
    try:
        eager, graphs = per_batch(a.eager), per_batch(a.graphs)
    except (OSError, KeyError, ValueError) as e:
        print(f"compare_graphs: {e}", file=sys.stderr)
        return 2
    failures, out = [], []
    for b in sorted(set(eager) & set(graphs)):
        e, g = eager[b], graphs[b]
        row = {"batch_size": b, "eager_steps": e["steps"], "graph_steps": g["steps"],
               "replayed_per_step": g["graph_replayed"], "exact": g["graph_exact"],
               "inferred": g["graph_inferred"], "unattributed": g["graph_unattributed"],
               "layers": g["layers"], "categories": {}}
        for d in DETAIL:
            row["categories"][d] = {
                "eager_kernels": e[f"{d}_kernels"], "graph_kernels": g[f"{d}_kernels"],
                "eager_us": round(e[f"{d}_us"], 3), "graph_us": round(g[f"{d}_us"], 3),
                "difference_us": round(g[f"{d}_us"] - e[f"{d}_us"], 3),
            }
            if d in LAYER and abs(e[f"{d}_kernels"] - g[f"{d}_kernels"]) > 1e-9:
                failures.append(f"batch {b}: {d}: {g[f'{d}_kernels']} kernels per step under graphs, "
                                f"{e[f'{d}_kernels']} eager")
        if not (g["attention_us"] > 0 and g["linear_us"] > 0):
            failures.append(f"batch {b}: attention {g['attention_us']} us, linear {g['linear_us']} us under graphs")
        if g["graph_replayed"] == 0:
            failures.append(f"batch {b}: no replayed kernels in the graph sweep (did it run with graphs?)")
        out.append(row)
    missing = sorted(set(eager) ^ set(graphs))
    if missing:
        failures.append(f"batch sizes in one sweep only: {missing}")
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("| batch | replayed/step | exact | inferred | unattributed | layers | "
                    + " | ".join(f"{d} kernels e/g" for d in DETAIL) + " | "
                    + " | ".join(f"{d} µs e → g" for d in DETAIL) + " |\n")
            f.write("|" + "---:|" * (6 + 2 * len(DETAIL)) + "\n")
            for r in out:
                c = r["categories"]
                f.write(f"| {r['batch_size']} | {r['replayed_per_step']:.0f} | {r['exact']:.0f} | {r['inferred']:.0f} | "
                        f"{r['unattributed']:.0f} | {r['layers']:.0f} | "
                        + " | ".join(f"{c[d]['eager_kernels']:.0f}/{c[d]['graph_kernels']:.0f}" for d in DETAIL) + " | "
                        + " | ".join(f"{c[d]['eager_us']:.1f} → {c[d]['graph_us']:.1f}" for d in DETAIL) + " |\n")
    print(json.dumps({"eager": a.eager, "graphs": a.graphs, "batch_sizes": out, "failures": failures}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
