#!/usr/bin/env bash
# The real GPU run behind docs/results/h200 (run from the repository root on a GPU host, with release
# binaries of coord and agent in $BIN, PyTorch + transformers installed):
#   1. coord serve + one agent on loopback (the agent runs one job per GPU);
#   2. the decode and prefill torch sweeps of examples/gpu-*.toml, with torch's own key_averages() of every
#      profiled step saved beside them (TRACEFLEET_ORACLE_DIR);
#   3. the decode sweep again with uploads held until the workload ends (--pause-uploads), to measure the
#      agent's effect on the profiled steps' GPU time;
#   4. the same decode points one at a time, each in a fresh process that builds the model again (as the
#      original experiment restarts its server per batch size, without its fixed sleeps);
#   5. coord analyze of every stored trace against torch's key_averages() of the same step.
# Everything lands in $RESULTS_DIR/h200.tgz.
set -u
BIN=${BIN:-target/release}
OUTD=${RESULTS_DIR:-/tmp/h200-out}
W=/tmp/tracefleet-h200
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$PWD/$BIN:$PATH"
# The server and agents stop with the script.
trap 'kill $(jobs -p) 2>/dev/null' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$W/timing.txt"; cp "$W/timing.txt" "$OUTD/timing.txt"; }

nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,driver_version --format=csv > "$W/gpus.csv"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' >> "$W/gpus.csv"
coord serve --listen 127.0.0.1:50051 --metrics-listen off --data-dir "$W/coord" 2> "$W/coord.log" &
export TRACEFLEET_ORACLE_DIR="$W/oracles"
agent --coordinator 127.0.0.1:50051 --name gpu-host --spool-dir "$W/spool" 2> "$W/agent.log" &
AGENT=$!
sleep 1

t=$SECONDS; timeout 150 coord sweep examples/gpu-decode.toml --coordinator 127.0.0.1:50051 --out "$W/decode" > "$W/decode.txt" 2>&1
log "decode sweep: exit $? in $((SECONDS - t)) s"
t=$SECONDS; timeout 80 coord sweep examples/gpu-prefill.toml --coordinator 127.0.0.1:50051 --out "$W/prefill" > "$W/prefill.txt" 2>&1
log "prefill sweep: exit $? in $((SECONDS - t)) s"

tar czf "$OUTD/h200-first.tgz" -C "$W" decode prefill timing.txt gpus.csv decode.txt prefill.txt 2>/dev/null
kill $AGENT; wait $AGENT 2>/dev/null
unset TRACEFLEET_ORACLE_DIR
agent --coordinator 127.0.0.1:50051 --name gpu-host-paused --pause-uploads --spool-dir "$W/spool2" 2> "$W/agent2.log" &
sleep 2
sed 's/^name = "h200-decode"/name = "h200-decode-paused"/' examples/gpu-decode.toml > "$W/paused.toml"
t=$SECONDS; timeout 150 coord sweep "$W/paused.toml" --coordinator 127.0.0.1:50051 --out "$W/decode-paused" > "$W/paused.txt" 2>&1
log "decode sweep, uploads paused: exit $? in $((SECONDS - t)) s"

# Baseline: one fresh process (and model build) per point, same driver, same points.
t=$SECONDS
for bs in 1 2 4 8 12 16 24 32 48 64 96 128 160 192 224 256; do
  cat > "$W/one.json" <<JSON
{"model": "llama-3.2-1b", "dtype": "bfloat16", "out_dir": "$W/baseline", "warmup_steps": 5, "profile_steps": 3,
 "profiler": {"record_shapes": true}, "points": [{"point_id": "decode-bs$bs-in128", "mode": "decode", "batch_size": $bs, "input_len": 128}]}
JSON
  python3 agent/drivers/torch_driver.py --job "$W/one.json" > /dev/null 2>> "$W/baseline.log"
  n=$((${n:-0} + 1))
  if [ $((SECONDS - t)) -gt 150 ]; then log "baseline stopped after $n points (time limit)"; break; fi
done
log "baseline points run: ${n:-0}"
log "baseline, one process per point: $((SECONDS - t)) s"

timeout 50 python3 tests/gpu/compare_oracles.py "$W/coord/traces" "$W/oracles" gpu-host > "$W/oracle_compare.json" 2> "$W/compare.log"
log "oracle comparison: exit $?"
tail -n 5 "$W/coord.log" "$W/agent.log" > "$W/tails.txt" 2>&1
tar czf "$OUTD/h200.tgz" -C "$W" decode prefill decode-paused timing.txt gpus.csv oracle_compare.json \
  decode.txt prefill.txt paused.txt tails.txt compare.log baseline.log
cat "$W/timing.txt"
