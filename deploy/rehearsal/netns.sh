#!/usr/bin/env bash
# A multi-host rehearsal without Kubernetes: the coordinator and three agents, each in its own network
# namespace (its own interfaces, addresses and routes, as separate hosts have), joined by veth pairs to a
# bridge that lives in a fifth namespace. Mutual TLS throughout (`coord certs init`): every agent dials
# https://10.77.0.1:50051 with its own certificate (CN = its name), the operator submits a replay sweep of
# the H200 fixtures with the operator certificate, and the script checks that the sweep completed with
# every point done on the three agents. Nothing is addressed or routed in the host's own namespace.
#
#   sudo deploy/rehearsal/netns.sh            # from the repository root; BIN=target/release for release builds
#
# Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2. Everything it makes is removed on exit:
# namespaces (tf-*), processes, the work folder.
set -euo pipefail
BIN=${BIN:-target/debug}
COORD=$PWD/$BIN/coord
AGENT=$PWD/$BIN/agent
W=$(mktemp -d /tmp/tracefleet-netns.XXXXXX)
NS_NET=tf-net
NODES=(tf-coord tf-agent-1 tf-agent-2 tf-agent-3)
ADDRS=(10.77.0.1 10.77.0.11 10.77.0.12 10.77.0.13)
NAMES=(coordinator node-1 node-2 node-3)
t0=$(date +%s%N)
say() { awk -v a="$t0" -v b="$(date +%s%N)" -v m="$*" 'BEGIN { printf "[%6.2fs] %s\n", (b - a) / 1e9, m }'; }

for b in "$COORD" "$AGENT"; do
  [ -x "$b" ] || { echo "missing $b: build it first (cargo build --bin coord --bin agent)" >&2; exit 2; }
done
command -v ip >/dev/null || { echo "needs iproute2 (ip)" >&2; exit 2; }
if [ "$(id -u)" != 0 ]; then echo "needs root (network namespaces)" >&2; exit 2; fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${NODES[@]}" "$NS_NET"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# The network: a bridge in its own namespace, one veth pair per node.
for ns in "${NODES[@]}" "$NS_NET"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; done
ip -n "$NS_NET" link add br0 type bridge
ip -n "$NS_NET" link set br0 up
ip -n "$NS_NET" link set lo up
for i in "${!NODES[@]}"; do
  ns=${NODES[$i]}
  ip link add "veth$i" netns "$ns" type veth peer name "port$i" netns "$NS_NET"
  ip -n "$NS_NET" link set "port$i" master br0 up
  ip -n "$ns" addr add "${ADDRS[$i]}/24" dev "veth$i"
  ip -n "$ns" link set "veth$i" up
  ip -n "$ns" link set lo up
done
say "network: ${NODES[*]} on 10.77.0.0/24 through a bridge in $NS_NET; the host's namespace has no address there"

# Certificates: the coordinator's for 10.77.0.1, one per agent (CN = its name), the operator's.
"$COORD" certs init "$W/pki" --coordinator-san 10.77.0.1 --agent node-1 --agent node-2 --agent node-3 >/dev/null
say "certificates: $(cd "$W/pki" && find . -name '*.pem' ! -name '*key*' | sort | tr '\n' ' ')"

ip netns exec tf-coord "$COORD" serve --listen 10.77.0.1:50051 --data-dir "$W/coord" --metrics-listen 10.77.0.1:9464 \
  --health-listen 10.77.0.1:50052 --tls-cert "$W/pki/coordinator.pem" --tls-key "$W/pki/coordinator-key.pem" \
  --client-ca "$W/pki/ca.pem" 2>"$W/coord.log" &
PIDS+=($!)
for n in 1 2 3; do
  ip netns exec "tf-agent-$n" "$AGENT" --coordinator https://10.77.0.1:50051 --name "node-$n" \
    --spool-dir "$W/spool-$n" --tls-ca "$W/pki/ca.pem" --tls-cert "$W/pki/agents/node-$n.pem" \
    --tls-key "$W/pki/agents/node-$n-key.pem" 2>"$W/agent-$n.log" &
  PIDS+=($!)
done
op=(--coordinator https://10.77.0.1:50051 --tls-ca "$W/pki/ca.pem" --tls-cert "$W/pki/operator.pem" --tls-key "$W/pki/operator-key.pem")
for _ in $(seq 100); do
  n=$(ip netns exec tf-coord "$COORD" status "${op[@]}" 2>/dev/null | grep -cE '^ +node-[123] +connected' || true)
  [ "$n" = 3 ] && break
  sleep 0.1
done
[ "$n" = 3 ] || { echo "only $n of 3 agents connected"; tail -5 "$W"/*.log; exit 1; }
say "3 agents connected over mutual TLS"
# Isolation: the coordinator's ports are reachable from the agents' namespaces, not from the host's.
reach() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
ip netns exec tf-agent-3 bash -c "$(declare -f reach); reach 10.77.0.1 50052" || { echo "tf-agent-3 cannot reach the coordinator" >&2; exit 1; }
if reach 10.77.0.1 50052; then echo "the host's namespace reaches 10.77.0.1: not isolated" >&2; exit 1; fi
say "tf-agent-3 reaches 10.77.0.1:50052; the host's own namespace does not"
ip netns exec tf-coord "$COORD" status "${op[@]}" | sed 's/^/    /'

# A client without a certificate is refused; the plain-text health port answers anyone.
if ip netns exec tf-agent-1 "$COORD" status --coordinator https://10.77.0.1:50051 --tls-ca "$W/pki/ca.pem" >/dev/null 2>&1; then
  echo "a client without a certificate was served" >&2; exit 1
fi
say "a client without a certificate is refused"

sed 's/^name = "h200-replay-decode"/name = "netns-rehearsal"/' examples/replay.toml > "$W/sweep.toml"
ip netns exec tf-coord "$COORD" sweep "$W/sweep.toml" "${op[@]}" --out "$W/results" > "$W/sweep.txt" 2>&1 || {
  cat "$W/sweep.txt"; tail -5 "$W"/*.log; exit 1; }
grep -vE '^ {2,}' "$W/sweep.txt" | sed 's/^/    /'
python3 - "$W/results/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
jobs = m["jobs"]
agents = sorted({j["agent"] for j in jobs})
states = sorted({p["state"] for p in m["point_status"]})
print(f"    manifest: {len(m['point_status'])} points {states}, jobs on {agents}, "
      f"{sum(p['traces'] for p in m['points'])} traces")
assert states == ["done"], states
assert agents == ["node-1", "node-2", "node-3"], agents
PY
for f in steps.csv ops.parquet roofline.csv models.json report.html; do
  [ -s "$W/results/$f" ] || { echo "missing $f"; exit 1; }
done
say "sweep completed on node-1, node-2 and node-3; results written (steps.csv, ops.parquet, roofline.csv, models.json, report.html)"
