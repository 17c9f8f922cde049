#!/usr/bin/env bash
# A short check of a build on the GPU host with the real vLLM: coord serve + one agent on GPU 0, an eager
# decode sweep of four batch sizes (examples/vllm-decode.toml's model and steps), then the step checks of
# check_vllm_results.py and two checks of the sweep's tables: vLLM's sampling kernel (launched outside
# every op, after the step's annotation) is counted once per step, and no trace had events left out.
# Run from the repository root with release binaries of coord and agent in $BIN and vLLM importable by
# python3. Results land in $OUT (or /tmp/decode-check). Clocks are never changed.
set -u
BIN=${BIN:-target/release}
OUTD=${OUT:-/tmp/decode-check}
W=/tmp/tracefleet-decode-check
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$BIN:$PATH" PYTHONUNBUFFERED=1
trap 'kill $(jobs -p) 2>/dev/null' EXIT
coord serve --insecure --data-dir "$W/coord" --metrics-listen off 2> "$W/coord.log" &
agent --coordinator 127.0.0.1:50051 --name h200 --gpus 0 --spool-dir "$W/spool" 2> "$W/agent.log" &
sed -e 's/^batch_sizes = .*/batch_sizes = [1, 8, 32, 128]/' -e 's/^name = .*/name = "decode-check"/' \
  examples/vllm-decode.toml > "$W/decode.toml"
sleep 2
T0=$(date +%s)
timeout 470 coord sweep "$W/decode.toml" --coordinator 127.0.0.1:50051 --out "$W/out" > "$W/sweep.txt" 2>&1
echo "sweep: exit $? in $(( $(date +%s) - T0 )) s"
tail -12 "$W/sweep.txt"
python3 tests/gpu/check_vllm_results.py "$W/out" --layers 16 > "$W/check.json" 2>&1
echo "step checks: exit $?"
python3 - "$W/out" <<'PY'
import csv, json, sys
out = sys.argv[1]
rows = [r for r in csv.DictReader(open(f"{out}/kernels.csv")) if "sample" in r["kernel"].lower()]
bad = [r for r in rows if r["steps"] != r["calls"]]
print(f"sampling kernels: {len(rows)} series rows, {len(bad)} with calls != steps")
for r in bad[:5]:
    print("  ", r["batch_size"], r["kernel"][:60], "steps", r["steps"], "calls", r["calls"])
m = json.load(open(f"{out}/manifest.json"))
left = [w for w in m["warnings"] if w.get("kind") == "left_out"]
print(f"left_out warnings: {len(left)}", *[w["message"] for w in left[:3]], sep="\n  ")
print("point_status:", [(p["point"], p["state"], p["traces"]) for p in m["point_status"]])
sys.exit(1 if bad or left else 0)
PY
echo "table checks: exit $?"
cp -r "$W/out" "$OUTD/results"; cp "$W"/*.txt "$W"/*.log "$W/check.json" "$OUTD/" 2>/dev/null
