#!/usr/bin/env bash
# cold_start_probe.sh - a machine's first Lighthouse plan, several times on one machine: before
# each process the kernel's page cache is dropped (root only: /proc/sys/vm/drop_caches) and the
# CUDA driver's JIT cache (~/.nv/ComputeCache) removed, so each starts as a fresh machine's first
# process would: libraries from disk, nothing compiled. Cases alternate, so before/after compare
# on one machine.
#
#   bash tests/gpu/cold_start_probe.sh [BIN] [SEQ] [ROUNDS]     BIN: the packed programs
#
# Cases (LIGHTHOUSE_COLD_CASES, default all four): "empty" (an empty cache), "empty-jit" (the same
# with CUDNN_LIB_CONFIG=GRAPH_JIT_ONLY: cuDNN loads only its graph and run-time compiled engine
# libraries), and, with LIGHTHOUSE_AOT_CACHE=DIR (a cache filled ahead of time, e.g. by
# lighthouse-compile --device), "aot" and "aot-jit" from a fresh copy of it. A case ending in
# "-off" runs with LIGHTHOUSE_PREFETCH_LIBRARIES=0 (no read-ahead of cuDNN's libraries), e.g.
# "empty-off", "empty-jit-off". LIGHTHOUSE_COLD_GAP_MS=M makes each first plan M ms after its
# context (lighthouse-bench --startup-gap-ms), as a training script builds its model in between.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/.pack/gpu}" && pwd)
SEQ=${2:-32768}
ROUNDS=${3:-2}
source "$ROOT/tests/gpu/gpu_env.sh"
echo "== GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
CASES=${LIGHTHOUSE_COLD_CASES:-empty empty-jit${LIGHTHOUSE_AOT_CACHE:+ aot aot-jit}}

coldify() {
  sync
  if ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    echo "   (the page cache could not be dropped: libraries may come from memory)"
  fi
  rm -rf "$HOME/.nv/ComputeCache"
}

one() {
  local name=$1 cache=() env=()
  case $name in *-jit|*-jit-*) env+=(CUDNN_LIB_CONFIG=GRAPH_JIT_ONLY) ;; esac
  case $name in *-off) env+=(LIGHTHOUSE_PREFETCH_LIBRARIES=0) ;; esac
  if [[ $name == aot* ]]; then
    local dir=$(mktemp -d /tmp/lh-cold-XXXXXX)
    cp "$LIGHTHOUSE_AOT_CACHE"/* "$dir"/ && chmod 600 "$dir"/*
    cache=(--startup-cache "$dir")
  fi
  coldify
  local t0=$(date +%s.%N)
  local row=$(env "${env[@]}" "$BIN/lighthouse-bench" --startup-only 1 --seqs "$SEQ" "${cache[@]}" \
    --startup-gap-ms "${LIGHTHOUSE_COLD_GAP_MS:-0}" \
    2>&1 | grep -E "^ +$SEQ cold")
  printf '%-14s %s   (process %.2f s)\n' "$name" "$row" \
    "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')"
}

echo "case            N case     total ms   kernels  cudnn h.     graph  heurist.     plans     other  reused"
for round in $(seq "$ROUNDS"); do
  for c in $CASES; do one "$c"; done
done
