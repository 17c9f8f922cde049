#!/usr/bin/env bash
# The real vLLM runs behind docs/results/h200-vllm. Run from the repository root on a GPU host, with
# release binaries of coord and agent in $BIN and vLLM importable by python3 (PYTHONPATH as needed):
#
#   tests/gpu/h200_vllm_run.sh one   # coord serve + two agents on loopback, one per GPU (GPU 1 optional):
#       GPU 0, agent h200-gpu0: the eager decode sweep (examples/vllm-decode.toml), timed from submit to
#              result files with the agent's warm vLLM driver ready; then one point at a time, each in a
#              fresh driver process (vLLM import and engine start included), for the baseline;
#       GPU 1, agent h200-gpu1 (or GPU 0 after the above, on a one-GPU host), with vLLM's own
#              key_averages() printout of every profiled window saved (TRACEFLEET_ORACLE_DIR): the eager
#              decode, prefill and CUDA-graph decode sweeps (the committed results); then coord analyze of
#              every stored window against its printout, and the step checks of check_vllm_results.py.
#   tests/gpu/h200_vllm_run.sh two   # one agent on both GPUs: the eager decode sweep sharded over them
#       (one job per GPU), two points of the torch driver; then an agent on GPU 0 alone: the same vLLM
#       sweep, for the comparison (same machine, same run).
#   tests/gpu/h200_vllm_run.sh graphs   # two agents, one per GPU: the eager decode sweep on GPU 0 and the
#       CUDA-graph decode sweep on GPU 1 (same 16 batch sizes, side by side); then compare_graphs.py
#       (kernels per category, batch size by batch size) and the step checks of both.
#   tests/gpu/h200_vllm_run.sh tp       # one agent with both GPUs: the tensor-parallel decode sweep
#       (examples/vllm-decode-tp2.toml, 7 batch sizes), eager and with CUDA graphs; tp_summary.py of each.
#
# Clocks are never locked or changed (shared machine). Everything lands in $RESULTS_DIR.
set -u
BIN=${BIN:-target/release}
OUTD=${RESULTS_DIR:-/tmp/h200-vllm-out}
W=${WORK:-/tmp/tracefleet-vllm}
PHASE=${1:-one}
mkdir -p "$W" "$OUTD"
export PATH="$PWD/$BIN:$PATH" PYTHONUNBUFFERED=1
trap 'kill $(jobs -p) 2>/dev/null' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$W/timing.txt"; cp "$W/timing.txt" "$OUTD/timing.txt"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_agent() {
  for _ in $(seq 200); do coord status 2>/dev/null | grep -qE "^ +$1 +connected" && return 0; sleep 0.1; done
  log "agent $1 did not connect"; return 1
}
# spec FILE NAME HOST: a copy of sweep FILE named NAME, for agent HOST only.
spec() {
  sed "s/^name = .*/name = \"$2\"/" "$1" > "$W/$2.toml"
  printf '\n[agents]\nhosts = ["%s"]\n' "$3" >> "$W/$2.toml"
  echo "$W/$2.toml"
}
# sweep LABEL SPEC OUT LIMIT_S: one sweep, its wall time from submit to result files written.
sweep() {
  local t; t=$(now_ms)
  timeout "$4" coord sweep "$2" --coordinator 127.0.0.1:50051 --out "$W/$3" > "$W/$3.txt" 2>&1
  log "$1: exit $? in $(( $(now_ms) - t )) ms"
}
serve() {
  coord status >/dev/null 2>&1 && return 0
  coord serve --insecure --listen 127.0.0.1:50051 --metrics-listen off --point-retries 0 --data-dir "$W/coord" 2>> "$W/coord.log" &
  for _ in $(seq 50); do coord status >/dev/null 2>&1 && return 0; sleep 0.1; done
}

if [ "$PHASE" = graphs ]; then
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,driver_version --format=csv > "$W/gpus.csv"
  python3 -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in ("vllm", "torch", "transformers")), sep=", ")' >> "$W/gpus.csv" 2>&1
  serve
  NGPU=$(nvidia-smi -L | wc -l)
  # One agent per GPU; on a one-GPU host both sweeps run on GPU 0, one after the other.
  G1=h200-gpu1
  agent --coordinator 127.0.0.1:50051 --name h200-gpu0 --gpus 0 --warm-drivers vllm --spool-dir "$W/spool0" 2> "$W/agent0.log" &
  if [ "$NGPU" -ge 2 ]; then
    agent --coordinator 127.0.0.1:50051 --name h200-gpu1 --gpus 1 --warm-drivers vllm --spool-dir "$W/spool1" 2> "$W/agent1.log" &
  else
    G1=h200-gpu0
  fi
  wait_agent h200-gpu0 && wait_agent $G1 || exit 1
  sleep 15
  sweep "eager decode sweep, 16 points, h200-gpu0 (GPU 0)" "$(spec examples/vllm-decode.toml vllm-decode h200-gpu0)" decode 420 &
  E=$!
  [ "$NGPU" -ge 2 ] || wait $E
  sweep "CUDA-graph decode sweep, 16 points, $G1" "$(spec examples/vllm-decode-graphs.toml vllm-decode-graphs $G1)" decode-graphs 420
  wait $E
  python3 tests/gpu/compare_graphs.py "$W/decode" "$W/decode-graphs" --markdown "$W/graphs_vs_eager.md" > "$W/compare_graphs.json" 2>&1
  log "compare_graphs: exit $?"
  python3 tests/gpu/check_vllm_results.py "$W/decode" --layers 16 > "$W/check-decode.json" 2>&1; log "step checks decode: exit $?"
  python3 tests/gpu/check_vllm_results.py "$W/decode-graphs" --layers 16 --graphs > "$W/check-decode-graphs.json" 2>&1
  log "step checks decode-graphs: exit $?"
  grep -h "engine ready\|point_failed\|failed\|graphs off\|Error" "$W"/agent*.log | head -40 > "$W/agent_notes.txt"
  tail -n 40 "$W"/agent*.log "$W"/coord.log > "$W/tails.txt" 2>&1
  cp "$W/tails.txt" "$OUTD/tails.txt"
  tar czf "$OUTD/graphs.tgz" -C "$W" --exclude='*.zst' decode decode-graphs decode.txt decode-graphs.txt timing.txt gpus.csv \
    compare_graphs.json graphs_vs_eager.md check-decode.json check-decode-graphs.json agent_notes.txt tails.txt 2>/dev/null
elif [ "$PHASE" = tp ]; then
  serve
  # Tensor-parallel jobs start their own driver (waiting drivers hold one GPU each).
  agent --coordinator 127.0.0.1:50051 --name h200-tp2 --no-warm-driver --spool-dir "$W/spool-tp" 2> "$W/agent-tp.log" &
  wait_agent h200-tp2 || exit 1
  sweep "tensor-parallel (2 GPUs) eager decode sweep, 7 points" "$(spec examples/vllm-decode-tp2.toml vllm-decode-tp2 h200-tp2)" decode-tp2 280
  sed 's/^cuda_graphs = false/cuda_graphs = true/' examples/vllm-decode-tp2.toml > "$W/tp2-graphs.toml"
  sweep "tensor-parallel (2 GPUs) CUDA-graph decode sweep, 7 points" "$(spec "$W/tp2-graphs.toml" vllm-decode-tp2-graphs h200-tp2)" decode-tp2-graphs 250
  for r in decode-tp2 decode-tp2-graphs; do
    python3 tests/gpu/tp_summary.py "$W/$r" --markdown "$W/$r.md" > "$W/tp-$r.json" 2>&1; log "tp summary $r: exit $?"
  done
  python3 tests/gpu/check_vllm_results.py "$W/decode-tp2" --layers 16 > "$W/check-decode-tp2.json" 2>&1; log "step checks decode-tp2: exit $?"
  python3 tests/gpu/check_vllm_results.py "$W/decode-tp2-graphs" --layers 16 --graphs > "$W/check-decode-tp2-graphs.json" 2>&1
  log "step checks decode-tp2-graphs: exit $?"
  grep -h "engine ready\|point_failed\|failed\|Error" "$W"/agent-tp.log | head -40 > "$W/agent_notes_tp.txt"
  tail -n 60 "$W"/agent-tp.log "$W"/coord.log > "$W/tails_tp.txt" 2>&1
  cp "$W/tails_tp.txt" "$OUTD/tails_tp.txt"
  # The stored traces of both ranks (zstd), for analysing them again elsewhere.
  (cd "$W/coord" && find traces -path '*/h200-tp2/*' -name '*.zst' | tar cf "$OUTD/traces-tp.tar" -T -)
  [ "$(stat -c %s "$OUTD/traces-tp.tar")" -lt 30000000 ] || { log "traces-tp.tar too large to bring back"; rm -f "$OUTD/traces-tp.tar"; }
  tar czf "$OUTD/tp.tgz" -C "$W" --exclude='*.zst' decode-tp2 decode-tp2-graphs decode-tp2.txt decode-tp2-graphs.txt \
    decode-tp2.md decode-tp2-graphs.md tp-decode-tp2.json tp-decode-tp2-graphs.json check-decode-tp2.json \
    check-decode-tp2-graphs.json agent_notes_tp.txt tails_tp.txt timing.txt 2>/dev/null
elif [ "$PHASE" = one ]; then
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,driver_version --format=csv > "$W/gpus.csv"
  python3 -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in ("vllm", "torch", "transformers")), sep=", ")' >> "$W/gpus.csv" 2>&1
  NGPU=$(nvidia-smi -L | wc -l)
  serve
  agent --coordinator 127.0.0.1:50051 --name h200-gpu0 --gpus 0 --warm-drivers vllm --spool-dir "$W/spool0" 2> "$W/agent0.log" &
  ORACLE_GPU=0
  if [ "$NGPU" -ge 2 ]; then ORACLE_GPU=1; fi
  TRACEFLEET_ORACLE_DIR="$W/oracles" agent --coordinator 127.0.0.1:50051 --name h200-gpu1 --gpus $ORACLE_GPU --warm-drivers vllm \
    --spool-dir "$W/spool1" 2> "$W/agent1.log" &
  wait_agent h200-gpu0 && wait_agent h200-gpu1 || exit 1
  timed() {
    # A daemon agent has its warm driver's imports done long before a sweep comes; give it that time.
    sleep 20
    sweep "eager decode sweep, 16 points, GPU 0 (timed; warm driver)" "$(spec examples/vllm-decode.toml vllm-decode-timed h200-gpu0)" decode-timed 400
    # Baseline: the same driver given one point, in a fresh process (import + engine + point), as the
    # original experiment restarts its server per batch size (without its 60-100 s sleeps).
    for bs in 1 256; do
      cat > "$W/one-$bs.json" <<JSON
{"model": "llama-3.2-1b", "dtype": "bfloat16", "out_dir": "$W/baseline/out-$bs", "warmup_steps": 5, "profile_steps": 3,
 "profiler": {"record_shapes": true}, "points": [{"point_id": "decode-bs$bs-in128", "mode": "decode", "batch_size": $bs, "input_len": 128, "output_len": 16}]}
JSON
      local t; t=$(now_ms)
      CUDA_VISIBLE_DEVICES=0 python3 agent/drivers/vllm_driver.py --job "$W/one-$bs.json" > "$W/baseline-$bs.out" 2> "$W/baseline-$bs.log"
      log "baseline: one fresh driver process for decode bs $bs: exit $? in $(( $(now_ms) - t )) ms"
    done
  }
  oracle() {
    sweep "eager decode sweep with printouts" "$(spec examples/vllm-decode.toml vllm-decode h200-gpu1)" decode 400
    sweep "prefill sweep with printouts" "$(spec examples/vllm-prefill.toml vllm-prefill h200-gpu1)" prefill 300
    sweep "CUDA-graph decode sweep with printouts" "$(spec examples/vllm-decode-graphs.toml vllm-decode-graphs h200-gpu1)" decode-graphs 400
  }
  if [ "$NGPU" -ge 2 ]; then timed & T=$!; oracle; wait $T; else timed; oracle; fi
  python3 tests/gpu/compare_vllm_printout.py --coord "$BIN/coord" --sweep "$W/coord/traces" "$W/oracles" h200-gpu1 > "$W/printout_compare.json" 2> "$W/compare.log"
  log "printout comparison: exit $?"
  for r in decode decode-timed prefill; do
    python3 tests/gpu/check_vllm_results.py "$W/$r" --layers 16 > "$W/check-$r.json" 2>&1; log "step checks $r: exit $?"
  done
  python3 tests/gpu/check_vllm_results.py "$W/decode-graphs" --layers 16 --graphs > "$W/check-decode-graphs.json" 2>&1
  log "step checks decode-graphs: exit $?"
  grep -h "imported in\|engine ready\|warm\|point_failed\|failed" "$W"/agent*.log | head -40 > "$W/agent_notes.txt"
  tail -n 30 "$W"/agent0.log "$W"/agent1.log "$W"/coord.log "$W"/baseline-*.log > "$W/tails.txt" 2>&1
  tar czf "$OUTD/one.tgz" -C "$W" --exclude='*.zst' decode decode-timed prefill decode-graphs timing.txt gpus.csv \
    printout_compare.json compare.log check-decode.json check-decode-timed.json check-prefill.json \
    check-decode-graphs.json agent_notes.txt tails.txt decode.txt decode-timed.txt prefill.txt decode-graphs.txt \
    oracles 2>/dev/null
  cp "$W/tails.txt" "$OUTD/tails.txt"
  # The stored traces of the printout-checked sweeps (zstd), for analysing them again elsewhere.
  (cd "$W/coord" && find traces -path '*/h200-gpu1/*' -name '*.zst' | tar cf "$OUTD/traces-gpu1.tar" -T -)
  [ "$(stat -c %s "$OUTD/traces-gpu1.tar")" -lt 16000000 ] || { log "traces-gpu1.tar too large to bring back"; rm -f "$OUTD/traces-gpu1.tar"; }
else
  serve
  # Both GPUs, both warm drivers (the agent's defaults).
  agent --coordinator 127.0.0.1:50051 --name h200-x2 --spool-dir "$W/spool2" 2> "$W/agent2.log" &
  AGENT=$!
  wait_agent h200-x2 || exit 1
  sleep 25
  sweep "eager decode sweep, 16 points sharded over 2 GPUs (timed; warm drivers)" "$(spec examples/vllm-decode.toml vllm-decode-2gpu h200-x2)" decode-2gpu 400
  # The torch driver reads the shared shapes file too: two of its decode points.
  sed 's/^batch_sizes = .*/batch_sizes = [1, 64]/' examples/gpu-decode.toml > "$W/torch-2.toml"
  sweep "torch decode sweep, 2 points" "$(spec "$W/torch-2.toml" torch-decode-2 h200-x2)" torch-decode 200
  kill $AGENT; wait $AGENT 2>/dev/null
  # The same sweep on one GPU of the same machine, in the same run, for the comparison.
  agent --coordinator 127.0.0.1:50051 --name h200-one --gpus 0 --spool-dir "$W/spool3" 2> "$W/agent3.log" &
  AGENT=$!
  wait_agent h200-one || exit 1
  sleep 25
  sweep "eager decode sweep, 16 points, 1 GPU (timed; warm driver)" "$(spec examples/vllm-decode.toml vllm-decode-1gpu h200-one)" decode-1gpu 400
  for r in decode-2gpu decode-1gpu; do
    python3 tests/gpu/check_vllm_results.py "$W/$r" --layers 16 > "$W/check-$r.json" 2>&1; log "step checks $r: exit $?"
  done
  tail -n 30 "$W"/agent2.log "$W"/agent3.log > "$W/tails2.txt"
  tar czf "$OUTD/two.tgz" -C "$W" decode-2gpu decode-2gpu.txt decode-1gpu decode-1gpu.txt torch-decode \
    torch-decode.txt check-decode-2gpu.json check-decode-1gpu.json timing.txt tails2.txt
fi
cat "$W/timing.txt"
