#!/usr/bin/env bash
# The batch check on real traces of the torch backend, on the GPU host: coord serve + one agent, decode and
# prefill sweeps of two model families (examples/gpu-*.toml with fewer batch sizes), then every step row
# of steps.csv must carry the tokens its batch fed to the model (decode: the batch size; prefill: batch
# size x input length), none may be left out, and no sweep may warn of another batch. A false alarm here
# would drop real steps from the tables. Run from the repository root with release binaries of coord and
# agent in $BIN, torch + transformers installed. Results land in $OUT (or /tmp/tokens-check). Clocks are
# never changed.
set -u
BIN=${BIN:-target/release}
OUTD=${OUT:-/tmp/tokens-check}
W=/tmp/tracefleet-tokens-check
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$BIN:$PATH" PYTHONUNBUFFERED=1
trap 'kill $(jobs -p) 2>/dev/null' EXIT
coord serve --insecure --data-dir "$W/coord" --metrics-listen off 2> "$W/coord.log" &
agent --coordinator 127.0.0.1:50051 --name h200 --gpus 0 --spool-dir "$W/spool" 2> "$W/agent.log" &
sleep 2
spec() { # NAME BASE MODEL BATCHES
  sed -e "s/^batch_sizes = .*/batch_sizes = $4/" -e "s/^name = .*/name = \"$1\"/" \
    -e "s/^model = \"[^\"]*\"/model = \"$3\"/" "examples/$2.toml" > "$W/$1.toml"
}
spec llama-decode gpu-decode llama-3.2-1b "[1, 8, 64, 256]"
spec llama-prefill gpu-prefill llama-3.2-1b "[1, 4, 32]"
spec qwen-decode gpu-decode qwen2.5-1.5b "[1, 16, 128]"
spec qwen-prefill gpu-prefill qwen2.5-1.5b "[2, 8]"
status=0
for s in llama-decode llama-prefill qwen-decode qwen-prefill; do
  T0=$(date +%s)
  timeout 150 coord sweep "$W/$s.toml" --coordinator 127.0.0.1:50051 --out "$W/$s" > "$W/$s.txt" 2>&1
  echo "$s: exit $? in $(( $(date +%s) - T0 )) s; $(grep -m1 -E '^(completed|failed|cancelled)' "$W/$s.txt")"
  python3 - "$W/$s" <<'PY' || status=1
import csv, json, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/steps.csv")))
bad = []
for r in rows:
    want = int(r["batch_size"]) * (int(r["input_len"]) if r["mode"] == "prefill" else 1)
    if r["model_tokens"] != str(want) or r["left_out"]:
        bad.append((r["mode"], r["batch_size"], r["model_tokens"], r["left_out"]))
warned = [w["message"] for w in json.load(open(f"{out}/manifest.json"))["warnings"] if w["kind"] == "batch_mismatch"]
print(f"  {len(rows)} step rows, tokens {sorted({r['model_tokens'] for r in rows}, key=int)}; "
      f"{len(bad)} wrong or left out {bad[:4]}; batch_mismatch warnings: {len(warned)} {warned[:1]}")
sys.exit(1 if bad or warned or not rows else 0)
PY
done
echo "tokens check: exit $status"
for s in llama-decode llama-prefill qwen-decode qwen-prefill; do
  mkdir -p "$OUTD/$s"; cp "$W/$s.txt" "$OUTD/"; cp "$W/$s/steps.csv" "$W/$s/manifest.json" "$OUTD/$s/" 2>/dev/null
done
cp "$W"/*.log "$OUTD/" 2>/dev/null
exit $status
