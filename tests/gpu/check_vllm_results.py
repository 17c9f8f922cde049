#!/usr/bin/env python3
"""Checks a vLLM sweep's result tables (coord sweep or coord ingest output) step by step.

Usage: check_vllm_results.py RESULTS_DIR --layers N [--graphs]

Eager (default), every step of every series must have:
  - the batch of its series in vLLM's own step annotation (B decodes, or B prefills of input_len tokens);
  - N decoder layers found, attention > 0 and linear > 0;
  - N GEMM launches in each of kqv_proj, o_proj, gated_up_proj and down_proj (kernels.csv; cuBLAS's
    split-K reduction kernels and workspace memsets count with their GEMM but are not GEMMs).
With --graphs (full CUDA graphs): the same, the replayed kernels being attributed through the eager reference
step each window starts with; and every step must have replayed kernels mapped onto a reference step.
Tensor-parallel results: every rank's rows are checked as a series of their own; merged rows are left out.
Prints a JSON summary per series; exit status 1 when a check fails, 2 for unreadable input.
"""
import argparse
import csv
import json
import os
import re
import sys
from collections import defaultdict

PROJECTIONS = ("kqv_proj", "o_proj", "gated_up_proj", "down_proj")
NOT_GEMM = re.compile(r"splitKreduce|^Memset|^Memcpy")
STEP = re.compile(r"execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)$")


def series_of(row):
    return (row["host"], row["gpu"], row["mode"], int(row["batch_size"]), int(row["input_len"]), row.get("rank", "0"))


def expected(mode, b, l):
    return (0, 0, b, b) if mode == "decode" else (b, b * l, 0, 0)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--graphs", action="store_true")
    a = p.parse_args(argv)
    try:
        with open(os.path.join(a.results, "steps.csv")) as f:
            steps = list(csv.DictReader(f))
        with open(os.path.join(a.results, "kernels.csv")) as f:
            kernels = list(csv.DictReader(f))
        manifest_path = os.path.join(a.results, "manifest.json")
        manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    except (OSError, ValueError) as e:
        print(f"check_vllm_results: {e}", file=sys.stderr)
        return 2
    failures = []
    out = defaultdict(lambda: dict(steps=0, annotation_ok=0, layers_ok=0, attention_and_linear=0, gemms={}))
    for r in steps:
        if r.get("rank") == "merged":
            continue
        s = series_of(r)
        o = out[s]
        o["steps"] += 1
        m = STEP.match(r["step_name"])
        got = tuple(int(x) for x in m.groups()) if m else None
        if s[4] == 0 and got and s[2] == "prefill":
            got = (got[0], 0, got[2], got[3])
            want = (s[3], 0, 0, 0)
        else:
            want = expected(s[2], s[3], s[4])
        if got == want:
            o["annotation_ok"] += 1
        else:
            failures.append(f"{s} {r['trace']} step {r['step']}: annotation {r['step_name']!r}, not {want}")
        if a.graphs and not (int(r.get("graph_replayed") or 0) > 0 and r.get("graph_reference")):
            failures.append(f"{s} {r['trace']} step {r['step']}: no replayed kernels mapped onto a reference step")
        if int(r["layers"]) == a.layers:
            o["layers_ok"] += 1
        else:
            failures.append(f"{s} {r['trace']} step {r['step']}: {r['layers']} layers, not {a.layers}")
        if float(r["attention_us"]) > 0 and float(r["linear_us"]) > 0:
            o["attention_and_linear"] += 1
        else:
            failures.append(f"{s} {r['trace']} step {r['step']}: attention {r['attention_us']} us, "
                            f"linear {r['linear_us']} us")
    per = defaultdict(float)
    for k in kernels:
        if k["category"] in PROJECTIONS and not NOT_GEMM.search(k["kernel"]):
            s = series_of(k)
            # calls over the steps the kernel ran in; a GEMM kernel runs in every step of its series
            per[(s, k["category"])] += int(k["calls"]) / max(out[s]["steps"], 1)
    for s, o in out.items():
        for cat in PROJECTIONS:
            n = round(per.get((s, cat), 0.0), 6)
            o["gemms"][cat] = n
            if n != a.layers:
                failures.append(f"{s}: {n} GEMM launches per step in {cat}, not {a.layers}")
    summary = {
        "results": a.results,
        "series": len(out),
        "steps": sum(o["steps"] for o in out.values()),
        "failures": failures[:50],
        "failed_checks": len(failures),
        "per_series": [dict(mode=s[2], batch_size=s[3], input_len=s[4], host=s[0], **o) for s, o in sorted(out.items())],
    }
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 1 if failures or not out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
