#!/usr/bin/env bash
# The real GPU run behind docs/results/h200 (run from the repository root on a GPU host, with release
# binaries of coord and agent in $BIN, PyTorch + transformers installed):
#   1. coord serve + one agent on loopback (one job per GPU, a warm torch driver per GPU, GPU telemetry);
#   2. the decode sweep of examples/gpu-decode.toml twice: submitted the moment the agent starts (its warm
#      driver still importing torch) and again once the agent is up (the committed results);
#   3. the decode sweep again with uploads held until the workload ends (--pause-uploads), to measure the
#      agent's effect on the profiled steps' GPU time;
#   4. with torch's own key_averages() of every profiled step saved (TRACEFLEET_ORACLE_DIR), a decode and
#      the prefill sweep; then coord analyze of every stored trace of those against its key_averages();
#   5. the same decode points one at a time, each in a fresh process that builds the model again (as the
#      original experiment restarts its server per batch size, without its fixed sleeps).
# Clocks are never locked or changed here (shared machine). Everything lands in $RESULTS_DIR/h200.tgz.
set -u
BIN=${BIN:-target/release}
OUTD=${RESULTS_DIR:-/tmp/h200-out}
W=/tmp/tracefleet-h200
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$PWD/$BIN:$PATH"
# The server and agents stop with the script.
trap 'kill $(jobs -p) 2>/dev/null' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$W/timing.txt"; cp "$W/timing.txt" "$OUTD/timing.txt"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# sweep NAME SPEC OUT LIMIT: runs one sweep, logs its wall time (submit to result files written).
# wait_agent NAME: until the agent is connected (sweeps only go to connected agents).
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

agent --coordinator 127.0.0.1:50051 --name gpu-host --spool-dir "$W/spool" 2> "$W/agent.log" &
AGENT=$!
wait_agent gpu-host
sweep "decode sweep, submitted as the agent starts" examples/gpu-decode.toml decode-cold 150
# A daemon agent sits idle between sweeps; meanwhile its next warm driver finishes its imports.
sleep 15
sweep "decode sweep, agent up (warm driver)" examples/gpu-decode.toml decode 150
kill $AGENT; wait $AGENT 2>/dev/null

agent --coordinator 127.0.0.1:50051 --name gpu-host-paused --pause-uploads --spool-dir "$W/spool2" 2> "$W/agent2.log" &
AGENT=$!
wait_agent gpu-host-paused
sed 's/^name = "h200-decode"/name = "h200-decode-paused"/' examples/gpu-decode.toml > "$W/paused.toml"
sweep "decode sweep, uploads paused" "$W/paused.toml" decode-paused 150
kill $AGENT; wait $AGENT 2>/dev/null

TRACEFLEET_ORACLE_DIR="$W/oracles" agent --coordinator 127.0.0.1:50051 --name gpu-oracle --spool-dir "$W/spool3" 2> "$W/agent3.log" &
AGENT=$!
wait_agent gpu-oracle
sweep "decode sweep with key_averages() saved" examples/gpu-decode.toml decode-oracle 150
sweep "prefill sweep with key_averages() saved" examples/gpu-prefill.toml prefill 100
kill $AGENT; wait $AGENT 2>/dev/null
tar czf "$OUTD/h200-first.tgz" -C "$W" decode decode-cold decode-paused prefill timing.txt gpus.csv 2>/dev/null

# Baseline: one fresh process (and model build) per point, same driver, same points.
t=$(now_ms); n=0
for bs in 1 2 4 8 12 16 24 32 48 64 96 128 160 192 224 256; do
  cat > "$W/one.json" <<JSON
{"model": "llama-3.2-1b", "dtype": "bfloat16", "out_dir": "$W/baseline", "warmup_steps": 5, "profile_steps": 3,
 "profiler": {"record_shapes": true}, "points": [{"point_id": "decode-bs$bs-in128", "mode": "decode", "batch_size": $bs, "input_len": 128}]}
JSON
  p=$(now_ms)
  python3 agent/drivers/torch_driver.py --job "$W/one.json" > /dev/null 2>> "$W/baseline.log"
  n=$((n + 1)); echo "bs $bs: $(( $(now_ms) - p )) ms" >> "$W/baseline_points.txt"
  if [ $(( $(now_ms) - t )) -gt 280000 ]; then log "baseline stopped after $n points (time limit)"; break; fi
done
log "baseline, one fresh process per point: $n points in $(( $(now_ms) - t )) ms"

timeout 60 python3 tests/gpu/compare_oracles.py "$W/coord/traces" "$W/oracles" gpu-oracle > "$W/oracle_compare.json" 2> "$W/compare.log"
log "oracle comparison: exit $?"
grep -h "warm\|telemetry\|clocks" "$W"/agent*.log | sort | uniq -c | head -20 > "$W/agent_notes.txt"
tail -n 5 "$W/coord.log" "$W"/agent*.log > "$W/tails.txt" 2>&1
tar czf "$OUTD/h200.tgz" -C "$W" decode decode-cold decode-paused prefill timing.txt gpus.csv oracle_compare.json \
  decode.txt decode-cold.txt decode-paused.txt decode-oracle.txt prefill.txt tails.txt compare.log baseline.log \
  baseline_points.txt agent_notes.txt
cat "$W/timing.txt"
