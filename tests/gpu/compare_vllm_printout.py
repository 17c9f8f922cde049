#!/usr/bin/env python3
"""Compares `coord analyze --json` of vLLM traces with vLLM's own printout of torch's key_averages() table
for the same profiling window (`profiler_out_<rank>.txt`, sorted by self CUDA time, at most 100 rows,
names cut at 55 characters).

Usage:
  compare_vllm_printout.py [--coord BIN] PRINTOUT TRACE [PRINTOUT TRACE ...]
  compare_vllm_printout.py [--coord BIN] --sweep COORD_TRACES_DIR ORACLE_DIR HOST
      (the stored traces of every sweep in ORACLE_DIR, COORD_TRACES_DIR/<sweep>/<host>/<point>/*.zst,
      against ORACLE_DIR/<sweep>/<point>.txt as the vLLM driver writes them with TRACEFLEET_ORACLE_DIR set)

Every printed row must have a row of `coord analyze` with the same name (cut as torch cuts it) whose call
count is equal and whose Self CPU, CPU total, Self CUDA and CUDA total agree within the printout's
rounding (half a unit of its last digit: 0.0005 us, ms or s as printed). Rows are paired one to one (a
record_function has a host and a GPU row of one name). Prints a JSON summary; exit status 1 when a row
disagrees or has no partner, 2 for bad arguments or unreadable files.
"""
import glob
import json
import os
import re
import subprocess
import sys

# torch.autograd.profiler_util._build_table cuts names at max_name_column_width (55) minus 3, plus "...".
NAME_WIDTH = 55
UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}
TIME_RE = re.compile(r"^(-?\d+(?:\.\d+)?)(us|ms|s)$")
# Printed column -> (coord analyze --json field)
FIELDS = {
    "Self CPU": "self_cpu_time_total_us",
    "CPU total": "cpu_time_total_us",
    "Self CUDA": "self_device_time_total_us",
    "CUDA total": "device_time_total_us",
}


def cut(name):
    return name if len(name) < NAME_WIDTH - 3 else name[: NAME_WIDTH - 3] + "..."


def parse_time(text):
    """'7.163ms' -> (7163.0 us, tolerance in us)."""
    m = TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a time: {text!r}")
    value, unit = m.groups()
    decimals = len(value.split(".")[1]) if "." in value else 0
    scale = UNITS[unit]
    # Half a unit of the last printed digit, plus a hair for the float formatting itself.
    return float(value) * scale, 0.5 * 10 ** -decimals * scale * 1.0001 + 1e-6


def parse_printout(path):
    """The rows of a key_averages() table: [{"name", "line", "# of Calls": int, "Self CPU": (us, tol), ...}]."""
    with open(path) as f:
        lines = f.read().splitlines()
    seps = [i for i, l in enumerate(lines) if l.startswith("---") and set(l.strip()) <= {"-", " "}]
    heads = [i for i in range(len(lines)) if lines[i].strip().startswith("Name ") and "# of Calls" in lines[i]]
    if not heads or not [s for s in seps if s > heads[0]]:
        raise ValueError(f"{path}: no key_averages() table (a Name ... # of Calls header and ----- lines)")
    # Header cells are separated by two or more spaces; a row's cells hold no spaces, so its last cells are
    # its numbers and what stands before them is the (right-aligned) name.
    header = re.split(r"\s{2,}", lines[heads[0]].strip())
    for col in ["Name", "# of Calls", *FIELDS]:
        if col not in header:
            raise ValueError(f"{path}: no column {col!r} in {header}")
    first = next(s for s in seps if s > heads[0])
    last = next((s for s in seps if s > first), len(lines))
    n = len(header) - 1
    rows = []
    for lineno in range(first + 1, last):
        tokens = lines[lineno].split()
        if len(tokens) <= n:
            raise ValueError(f"{path}:{lineno + 1}: a row with {len(tokens)} cells, not {n + 1}")
        cells = dict(zip(header[1:], tokens[-n:]))
        row = {"name": " ".join(tokens[:-n]), "line": lineno + 1, "# of Calls": int(cells["# of Calls"])}
        for col in FIELDS:
            row[col] = parse_time(cells[col])
        rows.append(row)
    return rows


def analyze(coord, trace):
    out = subprocess.run([coord, "analyze", "--json", trace], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"coord analyze {trace}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def agrees(printed, row):
    if printed["# of Calls"] != row["count"]:
        return False
    for col, field in FIELDS.items():
        want, tol = printed[col]
        if abs((row.get(field) or 0.0) - want) > tol:
            return False
    return True


def compare(printout, trace, coord, summary):
    printed = parse_printout(printout)
    got = analyze(coord, trace)
    by_name = {}
    for r in got:
        by_name.setdefault(cut(r["key"]), []).append(r)
    summary["windows"] += 1
    for p in printed:
        summary["rows"] += 1
        candidates = by_name.get(p["name"], [])
        match = next((r for r in candidates if agrees(p, r)), None)
        if match is not None:
            candidates.remove(match)
            continue
        summary["mismatched_rows"] += 1
        closest = min(candidates, key=lambda r: abs(r["count"] - p["# of Calls"]), default=None)
        summary["mismatches"].append({
            "printout": printout, "line": p["line"], "name": p["name"],
            "printed": {"calls": p["# of Calls"], **{c: p[c][0] for c in FIELDS}},
            "analyze": None if closest is None else {"calls": closest["count"],
                                                     **{c: closest.get(f) for c, f in FIELDS.items()}},
        })


def sweep_pairs(traces_dir, oracle_dir, host):
    pairs = []
    for printout in sorted(glob.glob(os.path.join(oracle_dir, "*", "*.txt"))):
        point = os.path.basename(printout)[:-4]
        sweep = os.path.basename(os.path.dirname(printout))
        traces = sorted(glob.glob(os.path.join(traces_dir, sweep, host, point, "*.zst")))
        if len(traces) != 1:
            raise ValueError(f"sweep {sweep} point {point}: {len(traces)} stored traces, expected one per "
                             f"profiled window")
        pairs.append((printout, traces[0]))
    if not pairs:
        raise ValueError(f"no printouts in {oracle_dir}")
    return pairs


def main(argv):
    coord = "coord"
    if argv[:1] == ["--coord"]:
        coord, argv = argv[1], argv[2:]
    try:
        if argv[:1] == ["--sweep"] and len(argv) == 4:
            pairs = sweep_pairs(*argv[1:])
        elif argv and len(argv) % 2 == 0:
            pairs = list(zip(argv[::2], argv[1::2]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
        summary = dict(windows=0, rows=0, mismatched_rows=0, mismatches=[])
        for printout, trace in pairs:
            compare(printout, trace, coord, summary)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"compare_vllm_printout: {e}", file=sys.stderr)
        return 2
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 1 if summary["mismatched_rows"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
