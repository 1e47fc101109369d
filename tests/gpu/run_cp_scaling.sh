#!/usr/bin/env bash
# run_cp_scaling.sh - context parallelism on one machine, in one call: the NCCL ring test with one
# process per GPU (test_cp_nccl, every GPU; skipped on one GPU), then the scaling benchmark
# (bench_cp_scaling) for each configuration named, then the plot. Not a test suite: the summary
# says whether the test passed and prints each benchmark's table.
#
#   tests/gpu/run_cp_scaling.sh [BIN_DIR]      (default .pack/gpu, as run_gpu_tests.sh)
#
# LIGHTHOUSE_CP_RUNS: the benchmark configurations, space-separated, from
#   lh1m lh2m      Lighthouse (L = 3, p = 4, topk = 2048), N = 1M / 2M, 5 timed runs
#   dense1m        dense, N = 1M, 2 timed runs (about 15 s per forward+backward on one H100)
#   dense2m        dense, N = 2M, 1 timed run (one GPU is refused: 2^31 elements; W = 2 takes
#                  about 30 s per run): alone it fills most of a 600 s call
#   local1m        Lighthouse, N = 1M, W = 2, 4, 8 ranks as threads on GPU 0 (a functional check
#                  of the in-process ring at full size; not a scaling time)
#   default "lh1m lh2m dense1m" (about 5 minutes on eight H100s). On one GPU the rings run
#   their computation alone (rank 0), which is the scaling ceiling without communication.
# LIGHTHOUSE_CP_WORLDS: ring sizes (default 1,2,4,8: rings larger than the machine run their
#   computation alone, rank 0 on GPU 0). LIGHTHOUSE_CP_TEST=0 skips the test.
# Everything lands in $LIGHTHOUSE_GPU_LOG_DIR (default /tmp/lh-cp-logs) and, under the device tool,
# in $OUT: test_cp_nccl.log, cp-<run>.json/.log, cp-scaling.png.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/.pack/gpu}
BIN=$(cd "$BIN" && pwd)
LOGS=${LIGHTHOUSE_GPU_LOG_DIR:-/tmp/lh-cp-logs}
mkdir -p "$LOGS"
source "$ROOT/tests/gpu/gpu_env.sh"
RUNS=${LIGHTHOUSE_CP_RUNS:-lh1m lh2m dense1m}
WORLDS=${LIGHTHOUSE_CP_WORLDS:-1,2,4,8}
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "== GPUs: $ngpu x $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
nvidia-smi topo -m 2>/dev/null | head -12 >"$LOGS/topology.txt"
cat "$LOGS/topology.txt"

test_status="not run"
if [ "${LIGHTHOUSE_CP_TEST:-1}" != 0 ]; then
  echo "== test_cp_nccl (W = $ngpu)"
  timeout 420 "$BIN/test_cp_nccl" >"$LOGS/test_cp_nccl.log" 2>&1
  rc=$?
  cat "$LOGS/test_cp_nccl.log"
  case $rc in 0) test_status=PASS ;; 77) test_status=SKIP ;; 124) test_status="FAIL (timeout)" ;;
    *) test_status="FAIL (rc $rc)" ;; esac
  # copied at once (as each run's JSON below): a call cut off later still returns them
  [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS"/test_cp_nccl.log "$LOGS"/topology.txt "$OUT"/
fi

for run in $RUNS; do
  case $run in
    lh1m) args=(--n=1048576 --iters=5); limit=300 ;;
    lh2m) args=(--n=2097152 --iters=5); limit=300 ;;
    dense1m) args=(--dense --n=1048576 --iters=2); limit=480 ;;
    dense2m) args=(--dense --n=2097152 --iters=1); limit=560 ;;
    local1m) args=(--mode=local --n=1048576 --iters=2 --no-compute --worlds=2,4,8); limit=300 ;;
    *) echo "== unknown run '$run' (lh1m lh2m dense1m dense2m local1m)"; continue ;;
  esac
  [ "$run" = local1m ] || args+=(--worlds="$WORLDS")
  echo "== bench_cp_scaling $run: ${args[*]}"
  timeout "$limit" "$BIN/bench_cp_scaling" "${args[@]}" --json="$LOGS/cp-$run.json" \
    >"$LOGS/cp-$run.log" 2>&1
  rc=$?
  [ $rc = 124 ] && echo "   cut off at ${limit}s: the JSON holds the rows measured until then"
  [ $rc != 0 ] && [ $rc != 124 ] && echo "   exit $rc"
  [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS/cp-$run".* "$OUT"/ 2>/dev/null
done

jsons=$(ls "$LOGS"/cp-*.json 2>/dev/null | grep -v local)   # in-process rings are not scaling times
if [ -n "$jsons" ]; then
  # shellcheck disable=SC2086
  python3 "$ROOT/tools/bench/plot_cp_scaling.py" "$LOGS/cp-scaling.png" $jsons 2>&1 | tail -1
fi

echo
echo "== summary"
echo "test_cp_nccl: $test_status"
for run in $RUNS; do
  [ -e "$LOGS/cp-$run.log" ] || continue
  # the benchmark's own lines: header, table, notes (not the library's or NCCL's)
  grep -E '^(bench_cp_scaling|note|wrote| W |[ 0-9][0-9] |    (ring|compute|per rank):)' \
    "$LOGS/cp-$run.log" || tail -3 "$LOGS/cp-$run.log"
done
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$LOGS"/cp-scaling.png "$LOGS"/test_cp_nccl.log "$LOGS"/topology.txt "$OUT"/ 2>/dev/null
  cp "$LOGS"/cp-*.json "$LOGS"/cp-*.log "$OUT"/ 2>/dev/null
fi
case $test_status in FAIL*) exit 1 ;; esac
exit 0
