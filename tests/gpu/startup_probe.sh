#!/usr/bin/env bash
# startup_probe.sh - what a machine's first Lighthouse plan costs (issue 24, item 4), in separate
# processes: the machine's first (run it first on a fresh machine: the CUDA driver's JIT cache,
# ~/.nv/ComputeCache, is then empty), a later one (that cache warm), and later ones with
# CUDA_CACHE_DISABLE=1 (a fresh machine's compilation again, on any machine). Each process
# prints lighthouse-bench's start-up table and, with LIGHTHOUSE_CUDA_VERBOSE=1, every cuDNN engine
# the heuristics offer, how long finalizing it took, and each plan's start-up timeline (when our
# kernels were compiled and loaded, when cuDNN's side was open and done, when the plan was ready).
#
#   bash tests/gpu/startup_probe.sh [BIN] [SEQS]      BIN: the packed programs (.pack/gpu)
#
# Extra cases, each in every round of LIGHTHOUSE_STARTUP_ROUNDS (default 2) with
# CUDA_CACHE_DISABLE=1: LIGHTHOUSE_STARTUP_ENVS="NAME=VALUE ..." one process with those variables
# set (e.g. LIGHTHOUSE_CUDNN_PARALLEL_BUILD=0); LIGHTHOUSE_STARTUP_BASELINE=DIR one process with
# the liblighthouse.so.0 in DIR first on the loader's path (another build, for before/after).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/.pack/gpu}" && pwd)
SEQS=${2:-32768}
source "$ROOT/tests/gpu/gpu_env.sh"
export LIGHTHOUSE_CUDA_VERBOSE=1
echo "== GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
echo "== driver cache: $(du -sh ~/.nv/ComputeCache 2>/dev/null | cut -f1 || echo none)"

probe() {
  local label=$1; shift
  echo "== $label: $* lighthouse-bench --startup-only 1 --seqs $SEQS"
  local t0=$(date +%s.%N)
  env "$@" "$BIN/lighthouse-bench" --startup-only 1 --seqs "$SEQS" 2>&1 |
    grep -E 'liblighthouse: \[[0-9.]+ ms\] (cuDNN|Lighthouse|plan start-up|our kernels)|^ +[0-9]+ (cold|disk|memory)|^ +N +case|lighthouse-bench:'
  echo "   (process: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s)"
}

probe "the machine's first process" LIGHTHOUSE_PROBE=first
probe "a later process" LIGHTHOUSE_PROBE=later
for round in $(seq "${LIGHTHOUSE_STARTUP_ROUNDS:-2}"); do
  if [ -n "${LIGHTHOUSE_STARTUP_BASELINE:-}" ]; then
    probe "round $round, baseline library, driver cache disabled" CUDA_CACHE_DISABLE=1 \
      LD_LIBRARY_PATH="$LIGHTHOUSE_STARTUP_BASELINE:$LD_LIBRARY_PATH"
  fi
  probe "round $round, driver cache disabled" CUDA_CACHE_DISABLE=1
  if [ -n "${LIGHTHOUSE_STARTUP_ENVS:-}" ]; then
    # shellcheck disable=SC2086 # the variable is a list of NAME=VALUE words
    probe "round $round, driver cache disabled, $LIGHTHOUSE_STARTUP_ENVS" CUDA_CACHE_DISABLE=1 \
      $LIGHTHOUSE_STARTUP_ENVS
  fi
done
echo "== driver cache after: $(du -sh ~/.nv/ComputeCache 2>/dev/null | cut -f1 || echo none)"
