#!/usr/bin/env bash
# The trace engine on the GPU host (16 cores): a trace of another model shape recorded there by the torch
# backend (Qwen2.5-1.5B shape, random weights), a 2 GB trace built from it, and that trace read with
# `coord analyze --jobs J` for J = 1..16, plus `bench-engine` (engine against `zstd -d` and a memchr scan).
# Run from the repository root with release binaries (coord, agent, make-large-trace, bench-engine, and a
# zstd CLI) in $BIN; with `coord-base` there too (an earlier build), both are also run alternated at 1 and
# 16 jobs ($ROUNDS rounds, default 3; ROUNDS_ONLY=1 runs only that comparison after building the trace).
# Results land in $OUT (or /tmp/engine-out). Clocks are never changed. QWEN=FILE.json.zst skips recording the
# trace and builds the 2 GB trace from that file instead (e.g. the repository's fixture of the same shape).
set -u
BIN=${BIN:-target/h200bin}
OUTD=${OUT:-/tmp/engine-out}
W=/tmp/tracefleet-engine
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$PWD/$BIN:$PATH"
trap 'kill $(jobs -p) 2>/dev/null' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$OUTD/log.txt"; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket"; free -g | head -2; zstd --version; } > "$OUTD/machine.txt" 2>&1
log "machine: $(nproc) cores"

if [ -n "${QWEN:-}" ]; then
  zstd -d -q -c "$QWEN" > "$W/qwen.json" || log "zstd -d $QWEN failed"
  log "qwen trace: $QWEN, $(stat -c %s "$W/qwen.json") bytes of JSON"
else
# 1. A decode trace of the Qwen2.5-1.5B shape from the torch backend: one point, many profiled steps.
cat > "$W/qwen.toml" <<TOML
name = "qwen-decode"
mode = "decode"
backend = "torch"
model = "qwen2.5-1.5b"
batch_sizes = [64]
input_len = 128
warmup_steps = 3
profile_steps = 24

[torch]
dtype = "bfloat16"
TOML
coord serve --insecure --listen 127.0.0.1:50051 --metrics-listen off --data-dir "$W/coord" 2> "$W/coord.log" &
sleep 0.5
agent --coordinator 127.0.0.1:50051 --name h200 --gpus 0 --spool-dir "$W/spool" 2> "$W/agent.log" &
sleep 2
timeout 300 coord sweep "$W/qwen.toml" --coordinator 127.0.0.1:50051 --out "$W/qwen-out" > "$W/qwen.txt" 2>&1
log "qwen sweep: exit $?"
Q=$(find "$W/coord" -type f -name '*.zst' -size +100k -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
log "qwen trace: $Q ($(stat -c %s "$Q" 2>/dev/null) bytes compressed)"
cp "$Q" "$OUTD/qwen2.5-1.5b-decode-bs64.pt.trace.json.zst"
zstd -d -q -c "$Q" > "$W/qwen.json" || log "zstd -d failed"
S=$(stat -c %s "$W/qwen.json")
log "qwen trace: $S bytes of JSON"
cp "$W/qwen.txt" "$W/coord.log" "$W/agent.log" "$OUTD/" 2>/dev/null
fi

# 2. A 2 GB trace: copies of the Qwen trace with shifted times and ids (written compact: one copy is
#    measured first, since it is smaller than the recorded file).
make-large-trace --copies 1 --input "$W/qwen.json" "$W/one.json" > /dev/null 2>&1
ONE=$(stat -c %s "$W/one.json")
COPIES=$(( (2050000000 + ONE - 1) / ONE ))
T0=$(date +%s)
make-large-trace --copies "$COPIES" --input "$W/qwen.json" "$W/big.json" > "$W/make.txt" 2>&1
log "2 GB trace: $(stat -c %s "$W/big.json") bytes, $COPIES copies, built in $(( $(date +%s) - T0 )) s"

# 3. One trace on 1..16 threads, alternated, 3 rounds.
for r in $([ "${ROUNDS_ONLY:-0}" = 1 ] || echo 1 2 3); do
  for j in 1 16 8 4 2; do
    echo -n "jobs=$j round=$r " >> "$OUTD/scaling.txt"
    coord analyze --json --stats --jobs "$j" "$W/big.json" 2>> "$OUTD/scaling.txt" > "$W/out-$j.json"
  done
done
[ "${ROUNDS_ONLY:-0}" = 1 ] || { cmp -s "$W/out-1.json" "$W/out-16.json" && log "jobs 1 and 16: identical output" || log "jobs 1 and 16 DIFFER"; }
log "scaling done"
# Where the time of 16 jobs goes: planning the pieces, reading them, joining them (debug log).
RUST_LOG=tracefleet_common=debug coord analyze --json --stats --jobs 16 "$W/big.json" 2> "$OUTD/pieces-debug.txt" > /dev/null

# 3b. The earlier build against this one, alternated, at 1 and 16 jobs.
if [ -x "$BIN/coord-base" ]; then
  for r in $(seq "${ROUNDS:-3}"); do
    for j in 1 16; do
      for b in coord-base coord; do
        echo -n "build=$b jobs=$j round=$r " >> "$OUTD/scaling-base.txt"
        "$BIN/$b" analyze --json --stats --jobs "$j" "$W/big.json" 2>> "$OUTD/scaling-base.txt" > "$W/out-$b.json"
      done
    done
  done
  cmp -s "$W/out-coord-base.json" "$W/out-coord.json" && log "base and new: identical output" || log "base and new DIFFER"
  log "base comparison done"
fi

[ "${ROUNDS_ONLY:-0}" = 1 ] && { log "done"; exit 0; }
# 4. bench-engine: the engine against zstd -d and a memchr scan on the same files, in one run.
timeout 240 bench-engine --runs 3 --no-python --coord "$BIN/coord" --jobs 1,2,4,8,16 "$W/big.json" > "$OUTD/bench-engine-big.md" 2>&1
log "bench-engine (2 GB): exit $?"
timeout 120 bench-engine --runs 5 --no-python --coord "$BIN/coord" --jobs 1,16 "$W/qwen.json" > "$OUTD/bench-engine-qwen.md" 2>&1
log "bench-engine (qwen): exit $?"
log "done"
