#!/usr/bin/env bash
# The real GPU run behind docs/results/h200-analysis (run from the repository root on a GPU host, with
# release binaries of coord and agent in $BIN, PyTorch + transformers installed): coord serve + one agent on
# loopback, then with shapes recorded (the roofline needs them):
#   1. the decode sweep of examples/gpu-decode.toml twice (runs A and B: what `coord diff` of two runs of
#      the same sweep shows);
#   2. the same sweep with `[torch] attention = "cudnn"` instead of the default FlashAttention backend (a
#      known change: `coord diff` should show attention and nothing else);
#   3. the prefill sweep of examples/gpu-prefill.toml.
# Clocks are never locked or changed (shared machine). Results (tables, Parquet, manifests; no traces)
# land in $RESULTS_DIR/h200-analysis.tgz.
set -u
BIN=${BIN:-target/release}
OUTD=${RESULTS_DIR:-/tmp/h200-out}
W=/tmp/tracefleet-h200
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$PWD/$BIN:$PATH"
trap 'kill $(jobs -p) 2>/dev/null' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$W/timing.txt"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_agent() {
  for _ in $(seq 100); do coord status 2>/dev/null | grep -qE "^ +$1 +connected" && return 0; sleep 0.1; done
  log "agent $1 did not connect"
}
sweep() {
  local t; t=$(now_ms)
  timeout "$4" coord sweep "$2" --coordinator 127.0.0.1:50051 --out "$W/$3" > "$W/$3.txt" 2>&1
  log "$1: exit $? in $(( $(now_ms) - t )) ms"
}

nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,driver_version --format=csv > "$W/gpus.csv"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' >> "$W/gpus.csv"
coord serve --insecure --listen 127.0.0.1:50051 --metrics-listen off --data-dir "$W/coord" 2> "$W/coord.log" &
sleep 0.5
agent --coordinator 127.0.0.1:50051 --name h200 --gpus 0 --spool-dir "$W/spool" 2> "$W/agent.log" &
wait_agent h200
# The agent's warm driver imports torch in the background: let it finish before the first measured sweep.
sleep 15
sed 's/^name = "h200-decode"/name = "h200-decode-a"/' examples/gpu-decode.toml > "$W/decode-a.toml"
sed 's/^name = "h200-decode"/name = "h200-decode-b"/' examples/gpu-decode.toml > "$W/decode-b.toml"
sed -e 's/^name = "h200-decode"/name = "h200-decode-cudnn"/' -e 's/^dtype = "bfloat16"/dtype = "bfloat16"\nattention = "cudnn"/' \
  examples/gpu-decode.toml > "$W/decode-cudnn.toml"
grep -q 'attention = "cudnn"' "$W/decode-cudnn.toml" || log "the cudnn sweep file lacks its attention line"
sweep "decode sweep, run A (flash)" "$W/decode-a.toml" decode-a 150
sweep "decode sweep, run B (flash)" "$W/decode-b.toml" decode-b 150
sweep "decode sweep, cudnn attention" "$W/decode-cudnn.toml" decode-cudnn 150
sweep "prefill sweep" examples/gpu-prefill.toml prefill 100
cp "$W"/*.toml "$W/coord.log" "$W/agent.log" "$OUTD/" 2>/dev/null
tar czf "$OUTD/h200-analysis.tgz" -C "$W" decode-a decode-b decode-cudnn prefill timing.txt gpus.csv \
  decode-a.txt decode-b.txt decode-cudnn.txt prefill.txt 2>/dev/null
log "done"
