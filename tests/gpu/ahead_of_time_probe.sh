#!/usr/bin/env bash
# ahead_of_time_probe.sh - a machine's first Lighthouse plan when its cuDNN plans were built ahead
# of time, without the GPU (lh_plan_precompile_device, lighthouse-compile --device). Run it first
# on a fresh machine: its first plan is then the machine's first, with the CUDA driver's JIT cache
# (~/.nv/ComputeCache) empty, which is where a plan built from nothing spends 1.7-3.2 s.
#
#   bash tests/gpu/ahead_of_time_probe.sh [BIN] [SEQS]     BIN: the packed programs (.pack/gpu)
#
# LIGHTHOUSE_AOT_CACHE=DIR: a cache directory filled elsewhere (on the build machine, from a
# description this script wrote earlier; carried in the pack): timed as it is. Without it, the
# script describes this GPU (lighthouse-compile --save-device into LIGHTHOUSE_AOT_DEVICE, default
# $OUT/gpu.dev or /tmp), then builds the plans for that description in a new directory with no GPU
# visible to the process (CUDA_VISIBLE_DEVICES=), and times that. Then, for comparison, the same
# start-up table from an empty cache (a later process: the driver's cache is no longer empty).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/.pack/gpu}" && pwd)
SEQS=${2:-32768}
source "$ROOT/tests/gpu/gpu_env.sh"
export LIGHTHOUSE_CUDA_VERBOSE=1
echo "== GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
echo "== driver cache: $(du -sh ~/.nv/ComputeCache 2>/dev/null | cut -f1 || echo none)"
seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }
table() { grep -E 'liblighthouse: \[[0-9.]+ ms\] (cuDNN|plan start-up|our kernels)|^ +[0-9]+ (cold|disk|memory)|^ +N +case|lighthouse-bench:'; }

CACHE=
if [ -n "${LIGHTHOUSE_AOT_CACHE:-}" ]; then
  # a copy this user owns and nobody else can write: the cache's rule for using a directory
  CACHE=$(mktemp -d /tmp/lh-aot-XXXXXX)
  cp "$LIGHTHOUSE_AOT_CACHE"/* "$CACHE"/ && chmod 600 "$CACHE"/*
else
  DEV=${LIGHTHOUSE_AOT_DEVICE:-${OUT:-/tmp}/gpu.dev}
  "$BIN/lighthouse-compile" --save-device "$DEV" || exit 1
  head -4 "$DEV"
  CACHE=$(mktemp -d /tmp/lh-aot-XXXXXX)
  for n in ${SEQS//,/ }; do
    t0=$(date +%s.%N)
    CUDA_VISIBLE_DEVICES= "$BIN/lighthouse-compile" --device "$DEV" --seq-len "$n" --heads 8 \
      --head-dim 128 --topk 2048 --cache-dir "$CACHE" 2>&1 | grep -v '^kernel cache'
    echo "   (built for N = $n without a visible GPU in $(seconds_since "$t0") s)"
  done
fi
echo "== the first plan from $CACHE ($(ls "$CACHE" | wc -l) files)"
t0=$(date +%s.%N)
"$BIN/lighthouse-bench" --startup-only 1 --seqs "$SEQS" --startup-cache "$CACHE" 2>&1 | table
echo "   (process: $(seconds_since "$t0") s)"
echo "== for comparison, a later process from an empty cache"
t0=$(date +%s.%N)
"$BIN/lighthouse-bench" --startup-only 1 --seqs "$SEQS" 2>&1 | table
echo "   (process: $(seconds_since "$t0") s)"
