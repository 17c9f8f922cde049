#!/usr/bin/env bash
# Telemetry of a tensor-parallel job on a host with two GPUs: each rank's trace must carry the readings of
# the GPU that rank ran on. A stand-in for the vLLM driver (as in tests/tests/tensor_parallel.rs) writes the
# two ranks' traces of the repository's two-H200 fixture, holding each trace's window open for a second,
# while GPU 1 is kept busy by a bf16 matmul loop and GPU 0 stays idle: rank 1's readings must show the busy
# GPU (power and SM clock up, no `gpu_idle` reason), rank 0's the idle one. Before the fix both ranks carried
# GPU 0's readings.
# Run from the repository root on a two-GPU host with release binaries (coord, agent, and a zstd CLI) in
# $BIN; results land in $OUT (or /tmp/tp-out). Clocks are never changed.
set -u
BIN=${BIN:-target/h200bin}
OUTD=${OUT:-/tmp/tp-out}
W=/tmp/tracefleet-tp
rm -rf "$W"; mkdir -p "$W" "$OUTD"
export PATH="$PWD/$BIN:$PATH"
trap 'kill $(jobs -p) 2>/dev/null' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$OUTD/log.txt"; }
nvidia-smi --query-gpu=index,name,pci.bus_id,power.draw,clocks.sm --format=csv > "$OUTD/gpus.csv" 2>&1
log "GPUs: $(tail -n +2 "$OUTD/gpus.csv" | tr '\n' ';')"

FIX="$PWD/fixtures/h200-vllm-0.25/tp2-decode-eager/logs_32"
cat > "$W/fake_driver.py" <<PY
import json, os, subprocess, sys, time
job = json.load(open(sys.argv[sys.argv.index("--job") + 1]))
def emit(**kw):
    print(json.dumps(kw), flush=True)
for p in job["points"]:
    emit(event="point_started", point=p["point_id"])
    folder = os.path.join(job["out_dir"], p["point_id"], p["mode"], f"logs_{p['batch_size']}")
    os.makedirs(folder, exist_ok=True)
    for f in sorted(os.listdir("$FIX")):
        path = os.path.join(folder, f[:-len(".zst")])
        start = time.time()
        subprocess.run(["zstd", "-dqf", os.path.join("$FIX", f), "-o", path], check=True)
        time.sleep(1.0)
        emit(event="trace", point=p["point_id"], path=path, step=0, start=start, end=time.time())
PY
printf '#!/bin/sh\nexec python3 %s "$@"\n' "$W/fake_driver.py" > "$W/python"
chmod +x "$W/python"
cat > "$W/tp.toml" <<TOML
name = "tp-telemetry"
mode = "decode"
backend = "vllm"
model = "llama-3.2-1b"
batch_sizes = [32]
input_len = 256
output_len = 16
warmup_steps = 1
profile_steps = 3

[vllm]
tensor_parallel = 2
python = "$W/python"
TOML

# GPU 1 busy (NVML and CUDA both numbering by PCI bus), GPU 0 idle.
CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=1 python3 -c '
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
t = time.time()
while time.time() - t < 90:
    for _ in range(20):
        b = a @ a
    torch.cuda.synchronize()
' > "$W/burn.log" 2>&1 &
sleep 8
nvidia-smi --query-gpu=index,power.draw,clocks.sm,utilization.gpu --format=csv >> "$OUTD/gpus.csv" 2>&1

coord serve --insecure --listen 127.0.0.1:50051 --metrics-listen off --data-dir "$W/coord" 2> "$W/coord.log" &
sleep 0.5
agent --coordinator 127.0.0.1:50051 --name two-h200 --spool-dir "$W/spool" --allow-python "$W/python" \
  2> "$W/agent.log" &
sleep 3
timeout 120 coord sweep "$W/tp.toml" --coordinator 127.0.0.1:50051 --out "$W/out" > "$W/sweep.txt" 2>&1
log "sweep: exit $?"
cp "$W/sweep.txt" "$W/agent.log" "$W/burn.log" "$OUTD/" 2>/dev/null
cp "$W/out/steps.csv" "$OUTD/steps.csv" 2>/dev/null
python3 - "$W/out/steps.csv" <<'PY' | tee -a "$OUTD/log.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cols = ["rank", "step", "sm_clock_mhz_min", "sm_clock_mhz_max", "power_w_mean", "throttle_reasons", "telemetry_samples"]
print(" ".join(cols))
for r in rows:
    print(" ".join(r.get(c, "?") or "-" for c in cols))
def power(rank):
    v = [float(r["power_w_mean"]) for r in rows if r["rank"] == rank and r["power_w_mean"]]
    return sum(v) / len(v) if v else None
p0, p1 = power("0"), power("1")
print(f"mean power: rank 0 {p0} W, rank 1 {p1} W")
ok = p0 is not None and p1 is not None and p1 > p0 + 100
print("PASS: each rank carries its own GPU's readings" if ok else "FAIL: rank 1 does not show the busy GPU")
sys.exit(0 if ok else 1)
PY
