#!/usr/bin/env bash
# Soak: a coordinator under mutual TLS and 4 real agents run replay sweeps back to back for MINUTES
# (default 30) while one agent is killed (SIGKILL) and restarted every KILL_EVERY seconds (default 60).
# Every 30 s the coordinator's RSS and open file descriptors are sampled into $W/samples.csv; at the end
# every sweep must have completed with all its traces, and the first and last samples are printed (RSS and
# fds should stay flat). Not run in CI (it takes half an hour); its last result is in docs/reliability.md.
#
#   cargo build --release && tests/soak/soak.sh [MINUTES]      # BIN=target/release by default
set -euo pipefail
cd "$(dirname "$0")/../.."
MINUTES="${1:-30}"
KILL_EVERY="${KILL_EVERY:-60}"
BIN="${BIN:-target/release}"
W="${W:-$(mktemp -d /tmp/tracefleet-soak.XXXX)}"
PORT="${PORT:-50571}"
PATH="$PWD/$BIN:$PATH"
echo "soak: ${MINUTES} min, an agent killed every ${KILL_EVERY} s, work dir $W"

coord certs init "$W/pki" --coordinator-san localhost --agents 4 > /dev/null
coord serve --listen "127.0.0.1:$PORT" --metrics-listen off --data-dir "$W/coord" --reassign-after-ms 5000 \
  --tls-cert "$W/pki/coordinator.pem" --tls-key "$W/pki/coordinator-key.pem" --client-ca "$W/pki/ca.pem" \
  2> "$W/coord.log" &
COORD=$!
URL="https://localhost:$PORT"
export TRACEFLEET_COORDINATOR="$URL" TRACEFLEET_TLS_CA="$W/pki/ca.pem"
declare -a AGENTS
start_agent() {
  agent --coordinator "$URL" --name "agent-$1" --spool-dir "$W/spool-$1" \
    --tls-cert "$W/pki/agents/agent-$1.pem" --tls-key "$W/pki/agents/agent-$1-key.pem" 2>> "$W/agent-$1.log" &
  AGENTS[$1]=$!
}
cleanup() { kill -9 "${AGENTS[@]}" "$COORD" 2> /dev/null || true; }
trap cleanup EXIT
for i in 0 1 2 3; do start_agent "$i"; done

# The replay source: the H200 decode fixture (4 batch sizes x 3 traces).
mkdir -p "$W/replay"
cp -r fixtures/h200-llama-1b/decode "$W/replay/"
cat > "$W/sweep.toml" <<EOF
name = "soak"
mode = "decode"
backend = "replay"
batch_sizes = [1, 8, 32, 128]
input_len = 128
profile_steps = 3
[replay]
dir = "$W/replay"
delay_ms = 200
EOF

sample() {
  local rss fds
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$COORD/status")
  fds=$(ls "/proc/$COORD/fd" | wc -l)
  echo "$(( $(date +%s) - T0 )),$rss,$fds" >> "$W/samples.csv"
}
echo "seconds,rss_kb,fds" > "$W/samples.csv"
T0=$(date +%s)
END=$(( T0 + MINUTES * 60 ))
sleep 2
sample
SWEEPS=0; FAILED=0; NEXT_KILL=$(( T0 + KILL_EVERY )); NEXT_SAMPLE=$(( T0 + 30 ))
while [ "$(date +%s)" -lt "$END" ]; do
  # One sweep at a time, in the background, so that kills happen while it runs.
  coord sweep "$W/sweep.toml" --tls-cert "$W/pki/operator.pem" --tls-key "$W/pki/operator-key.pem" \
    --out "$W/out" > "$W/last-sweep.txt" 2>> "$W/sweeps.log" &
  SWEEP=$!
  while kill -0 "$SWEEP" 2> /dev/null; do
    now=$(date +%s)
    if [ "$now" -ge "$NEXT_KILL" ]; then
      victim=$(( RANDOM % 4 ))
      kill -9 "${AGENTS[$victim]}" 2> /dev/null || true
      wait "${AGENTS[$victim]}" 2> /dev/null || true
      start_agent "$victim"
      echo "$(( now - T0 )) s: killed and restarted agent-$victim" >> "$W/kills.log"
      NEXT_KILL=$(( now + KILL_EVERY ))
    fi
    if [ "$now" -ge "$NEXT_SAMPLE" ]; then sample; NEXT_SAMPLE=$(( now + 30 )); fi
    sleep 1
  done
  if wait "$SWEEP" && grep -q "traces 12 uploaded, 12 read" "$W/last-sweep.txt"; then
    SWEEPS=$(( SWEEPS + 1 ))
  else
    FAILED=$(( FAILED + 1 )); cp "$W/last-sweep.txt" "$W/failed-sweep-$FAILED.txt"
  fi
done
sample
echo "sweeps completed with all 12 traces: $SWEEPS; other outcomes: $FAILED; kills: $(wc -l < "$W/kills.log")"
echo "first sample: $(sed -n 2p "$W/samples.csv")  last sample: $(tail -1 "$W/samples.csv")  (seconds,rss_kb,fds)"
awk -F, 'NR > 2 { if ($2 > maxr) maxr = $2; if ($3 > maxf) maxf = $3 } END { print "max rss_kb " maxr ", max fds " maxf }' "$W/samples.csv"
[ "$FAILED" -eq 0 ]
