#!/usr/bin/env bash
# run_gpu_tests.sh - runs the GPU test programs on a machine with an NVIDIA GPU and prints a
# summary table last.
#
#   tests/gpu/run_gpu_tests.sh [BIN_DIR]
#
# LIGHTHOUSE_GPU_BENCH=1 keeps the benchmark in a quick or LIGHTHOUSE_GPU_ONLY run; LIGHTHOUSE_BENCH_ARGS are passed to it.
# BIN_DIR holds liblighthouse.so.0 and the programs of tests/gpu (default: $LIGHTHOUSE_GPU_BIN, else
# .pack/gpu at the repository root, else build/tests/gpu). cuDNN and NCCL are taken from the
# Python wheels under /opt/torch/.venv (override with LIGHTHOUSE_NVIDIA_WHEELS). Logs go to
# $LIGHTHOUSE_GPU_LOG_DIR (default /tmp/lh-gpu-logs). LIGHTHOUSE_GPU_QUICK=1 skips the N >= 16K dense cases and
# the timing program. LIGHTHOUSE_GPU_ONLY=REGEX runs only the programs whose names match (e.g.
# 'lighthouse|demo'; LIGHTHOUSE_GPU_ONLY=torch runs only the PyTorch layer's tests).
# LIGHTHOUSE_GPU_PROFILE=1 adds tests/gpu/profile_kernels.sh (per-kernel times). LIGHTHOUSE_GPU_SHAPES=1 adds
# the shape table (lighthouse-bench --shape-table 1; LIGHTHOUSE_SHAPES_ARGS are passed to it).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-${LIGHTHOUSE_GPU_BIN:-}}
if [ -z "$BIN" ]; then
  if [ -x "$ROOT/.pack/gpu/test_cuda_dense" ]; then BIN=$ROOT/.pack/gpu; else BIN=$ROOT/build/tests/gpu; fi
fi
BIN=$(cd "$BIN" && pwd)
LOGS=${LIGHTHOUSE_GPU_LOG_DIR:-/tmp/lh-gpu-logs}
mkdir -p "$LOGS"
source "$ROOT/tests/gpu/gpu_env.sh"

echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
echo "== binaries: $BIN"
ls "$WHEELS"/cudnn/lib/libcudnn.so.* 2>/dev/null | head -1 | sed 's/^/== cuDNN: /'

names=(); statuses=(); times=(); counts=()

# run NAME TIMEOUT COMMAND... : runs one program, keeps its log, records the outcome.
run() {
  local name=$1 limit=$2; shift 2
  # LIGHTHOUSE_GPU_ONLY (a regular expression) narrows a run to the programs it names.
  if [ -n "${LIGHTHOUSE_GPU_ONLY:-}" ] && ! [[ $name =~ $LIGHTHOUSE_GPU_ONLY ]]; then return; fi
  local log="$LOGS/$name.log"
  echo "== $name: $*"
  local t0=$(date +%s.%N)
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local t1=$(date +%s.%N)
  cat "$log"
  local status
  case $rc in
    0) status=PASS ;;
    77) status=SKIP ;;
    124) status="FAIL (timeout ${limit}s)" ;;
    *) status="FAIL (rc $rc)" ;;
  esac
  names+=("$name"); statuses+=("$status")
  times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')")
  # Check-free programs print PASS; the compiler's GPU test prints ok; Rust's libtest programs
  # end with "test result: ... N passed; M failed".
  local ok bad
  ok=$(grep -c -E '^(PASS|ok ) ' "$log"); bad=$(grep -c '^FAIL' "$log")
  if grep -q '^test result: ' "$log"; then
    read -r ok bad < <(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$log" |
      awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }')
  fi
  counts+=("$ok/$bad")
}

run module 60 "$BIN/test_cuda_module"
# The JIT-compiled kernels launched one by one against host arithmetic (bit-exact where the
# kernel promises it): the packed program is xz-compressed, it carries MLIR.
if [ -e "$BIN/test_compiler.xz" ]; then
  xz -dc "$BIN/test_compiler.xz" >/tmp/lh-test_compiler && chmod +x /tmp/lh-test_compiler
  run compiler_gpu 300 /tmp/lh-test_compiler gpu
fi
run errors 120 "$BIN/test_cuda_errors"
# Long sequences use the backward graph with the fp32 dQ accumulator (the deterministic graph's
# workspace grows as N^2); run it on a short grouped-query case too.
LIGHTHOUSE_CUDNN_SDPA_BWD=accum run dense_accum_gqa 120 "$BIN/test_cuda_dense" --case bf16_bhnd_b1_n1024_h8_kv2_d128
if [ "${LIGHTHOUSE_GPU_QUICK:-0}" = 1 ]; then
  for c in bf16_bnhd_b2_n128_h4_d64 fp16_bhnd_b2_n256_h4_kv2_d128 bf16_bhnd_b1_n1024_h8_kv2_d128; do
    run "dense_$c" 120 "$BIN/test_cuda_dense" --case "$c"
  done
else
  run dense 360 "$BIN/test_cuda_dense"
fi
run graph 120 "$BIN/test_cuda_graph"
LIGHTHOUSE_CUDNN_SDPA_BWD=accum run graph_accum 120 "$BIN/test_cuda_graph"
if [ "${LIGHTHOUSE_GPU_QUICK:-0}" = 1 ]; then
  run lighthouse 300 "$BIN/test_lighthouse_gpu" --quick
else
  run lighthouse 600 "$BIN/test_lighthouse_gpu"
fi
# The same with our kernels loaded from the cubins a kernel cache keeps (runtime/cuda/
# cuda_cubin_store.c, LIGHTHOUSE_KERNEL_CUBIN_STORE=1): the first run into an empty cache
# directory links and writes them, the second restores them (the verbose lines say how many).
cubin_cache=$(mktemp -d)
rm -f "$LOGS/lighthouse_cubins_restored.log"
LIGHTHOUSE_KERNEL_CUBIN_STORE=1 LIGHTHOUSE_CACHE_DIR=$cubin_cache \
  run lighthouse_cubins_written 300 "$BIN/test_lighthouse_gpu" --quick
LIGHTHOUSE_KERNEL_CUBIN_STORE=1 LIGHTHOUSE_CACHE_DIR=$cubin_cache \
  run lighthouse_cubins_restored 300 "$BIN/test_lighthouse_gpu" --quick
if [ -e "$LOGS/lighthouse_cubins_restored.log" ]; then
  echo "== cubin records: $(find "$cubin_cache" -name 'cubin-*.lhk' | wc -l); plans of the second run:" \
    "$(grep -oE '[0-9]+ from cubins of the kernel cache, [0-9]+ cubins written' \
         "$LOGS/lighthouse_cubins_restored.log" | sort | uniq -c | tr -s ' \n' ' ')"
fi
rm -rf "$cubin_cache"
# The scorers: the dilated scorer (cuDNN on the strided view) against tests/golden-dilated and
# the CPU on fresh inputs, external scores equal to the norm scorer's bit for bit.
if [ -x "$BIN/test_scorers_gpu" ]; then
  if [ "${LIGHTHOUSE_GPU_QUICK:-0}" = 1 ]; then run scorers 300 "$BIN/test_scorers_gpu" --quick
  else run scorers 600 "$BIN/test_scorers_gpu"; fi
fi
# Hostile sizes and numbers: 32-bit and grid limits at finalize, NaN/Inf scores and inputs, large
# logits, against the CPU backend.
[ -x "$BIN/test_hostile_gpu" ] && run hostile 300 "$BIN/test_hostile_gpu"
# Plans sharing their context's cuDNN handle and attention plans (also from two threads at once)
# against plans that built their own.
[ -x "$BIN/test_plan_cache_gpu" ] && run plan_cache 300 "$BIN/test_plan_cache_gpu"
# Tensors past 2^31 elements (2.2M tokens, H = 8, D = 128: 4.5 GB per tensor): dense [B,N,H,D]
# refused at finalize, dense [B,H,N,D] in pieces of 4 heads against fp64 rows, Lighthouse against
# one head alone. About 3 minutes; left out of quick runs unless named.
if [ "${LIGHTHOUSE_GPU_QUICK:-0}" != 1 ] || [ -n "${LIGHTHOUSE_GPU_ONLY:-}" ]; then
  [ -x "$BIN/test_large_gpu" ] && run large 600 "$BIN/test_large_gpu"
fi
# Context parallelism: W = 2, 4 and 8 ranks of an in-process ring on this GPU against the CPU
# ring; with two or more GPUs also one process per GPU over NCCL (W = every GPU), and the 1M-token
# scaling timing (not a test; tests/gpu/run_cp_scaling.sh runs the whole set).
# A rank that never arrives fails its peers after 30 s instead of the default 120.
[ -x "$BIN/test_cp_gpu" ] && LIGHTHOUSE_RING_TIMEOUT_S=30 run context_parallel 420 "$BIN/test_cp_gpu"
# Rings that fail mid-way (saved and out left as they were), CUDA-graph capture of a ring (an
# in-process ring refuses it; a one-rank NCCL ring refuses its first call, then replays equal to
# direct calls).
[ -x "$BIN/test_ring_safety_gpu" ] && LIGHTHOUSE_RING_TIMEOUT_S=30 run ring_safety 300 "$BIN/test_ring_safety_gpu"
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ -x "$BIN/test_cp_nccl" ] && [ "$ngpu" -ge 2 ]; then
  run cp_nccl 420 "$BIN/test_cp_nccl"
  if [ "${LIGHTHOUSE_GPU_QUICK:-0}" != 1 ] && [ -z "${LIGHTHOUSE_GPU_ONLY:-}" ] &&
    [ -x "$BIN/bench_cp_scaling" ]; then
    timeout 300 "$BIN/bench_cp_scaling" --json="$LOGS/cp-lh1m.json" 2>&1 | tee "$LOGS/cp-lh1m.log"
    [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS"/cp-lh1m.json "$OUT"/ 2>/dev/null
  fi
fi
# The Rust crate (bindings/rust): DeviceMemory entry points and AttentionOp against direct C calls
# on the same device buffers (Lighthouse bf16 bit-identical, dense fp16 forward bit-identical),
# and dense fp16 through the raw entry points against the CPU backend. On this machine a test
# that finds no GPU fails instead of skipping.
for t in "$BIN"/rust_*; do
  [ -x "$t" ] && LIGHTHOUSE_TEST_REQUIRE_GPU=1 run "$(basename "$t")" 300 "$t" --test-threads=1 --nocapture
done
[ -x "$BIN/lighthouse-demo" ] && run demo 120 "$BIN/lighthouse-demo"
# The README's C example (examples/c): on a GPU it must pick bf16 and run on device memory.
[ -x "$BIN/forward_backward" ] && run example_c 120 "$BIN/forward_backward"
# The PyTorch layer (bindings/python, lighthouse.torch) on the packed library: forward and
# gradients against plain PyTorch and the library's C path (bf16, fp16, GQA, both layouts), dense
# mode against SDPA, torch.compile(fullgraph=True), CUDA-graph capture and replay, a W = 2 ring in
# this process, NCCL rings through torch.distributed. SKIP (77) where python3 has no PyTorch.
LIGHTHOUSE_LIB=$LIBDIR/liblighthouse.so.0 LIGHTHOUSE_RING_TIMEOUT_S=60 PYTHONDONTWRITEBYTECODE=1 \
  run torch 540 python3 "$ROOT/bindings/python/tests/test_torch_gpu.py"
# The training example (examples/train/smoke.py): a small byte-level model trained a few steps
# with Lighthouse then dense attention through lighthouse.torch; the loss goes down and a
# checkpoint resumed in a new process gives the same losses. SKIP (77) where python3 has no PyTorch.
LIGHTHOUSE_LIB=$LIBDIR/liblighthouse.so.0 PYTHONPATH=$ROOT/bindings/python PYTHONDONTWRITEBYTECODE=1 \
  run train_smoke 300 python3 "$ROOT/examples/train/smoke.py" --device cuda
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
  # a small case with the library's default graphs, then grouped-query heads with the fp32 dQ
  # accumulator (its workspace buffers are where an overrun would show)
  run memcheck 300 bash -c "'$SAN' --tool memcheck --error-exitcode 3 '$BIN/test_cuda_dense' --small &&
    LIGHTHOUSE_CUDNN_SDPA_BWD=accum '$SAN' --tool memcheck --error-exitcode 3 '$BIN/test_cuda_dense' \
      --case fp16_bhnd_b2_n256_h4_kv2_d128"
  run lighthouse_memcheck 300 "$SAN" --tool memcheck --error-exitcode 3 "$BIN/test_lighthouse_gpu" --tiny
  # lh_backward on a saved that no forward wrote: nothing read or written outside the buffers
  run hostile_memcheck 300 "$SAN" --tool memcheck --error-exitcode 3 "$BIN/test_hostile_gpu" --foreign-saved
  # racecheck on the library's own kernels (entry points lh_*); cuDNN's generated wgmma kernels
  # report hazards racecheck cannot model and are not ours to fix.
  [ -x "$BIN/test_scorers_gpu" ] &&
    run scorers_memcheck 300 "$SAN" --tool memcheck --error-exitcode 3 "$BIN/test_scorers_gpu" --tiny
  run lighthouse_racecheck 300 "$SAN" --tool racecheck --kernel-name kns=lh_ --error-exitcode 3 \
    "$BIN/test_lighthouse_gpu" --tiny
  # synccheck on the same kernels: barriers and warp shuffles reached by every thread they name
  # (the selection's block scans sit inside loops and branches that must stay uniform)
  run lighthouse_synccheck 300 "$SAN" --tool synccheck --kernel-name kns=lh_ --error-exitcode 3 \
    "$BIN/test_lighthouse_gpu" --tiny
else
  echo "== memcheck: compute-sanitizer not found"; names+=(memcheck); statuses+=("SKIP (no compute-sanitizer)"); times+=(0); counts+=(-)
fi
# The benchmark runs in full runs that name no programs, or wherever LIGHTHOUSE_GPU_BENCH=1 (LIGHTHOUSE_BENCH_ARGS
# narrows it): a run narrowed with LIGHTHOUSE_GPU_ONLY (variants, a profile) does not pay for it unasked.
if { [ "${LIGHTHOUSE_GPU_BENCH:-0}" = 1 ] || { [ "${LIGHTHOUSE_GPU_QUICK:-0}" != 1 ] && [ -z "${LIGHTHOUSE_GPU_ONLY:-}" ]; }; } &&
  [ -x "$BIN/lighthouse-bench" ]; then
  # The benchmark (not a test): Lighthouse vs dense vs the S_sel floor; JSON and PNG next to the logs.
  echo "== timing (not a test): lighthouse-bench ${LIGHTHOUSE_BENCH_ARGS:-}"
  timeout 420 "$BIN/lighthouse-bench" --json "$LOGS/bench.json" ${LIGHTHOUSE_BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench.log"
  python3 "$ROOT/tools/bench/plot_bench.py" "$LOGS/bench.json" "$LOGS/bench.png" 2>&1 | tail -1
  # copied at once, so that a run cut off later (variants, profile) still returns them
  [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS"/bench.json "$LOGS"/bench.png "$OUT"/ 2>/dev/null
fi

# The shape table (not a test), with LIGHTHOUSE_GPU_SHAPES=1: the shapes real models train with, B = 1
# and 2, N = 64K and 256K, plan start-up first (LIGHTHOUSE_SHAPES_ARGS are passed on); JSON, plot and
# the Markdown table next to the logs and in $OUT.
if [ "${LIGHTHOUSE_GPU_SHAPES:-0}" = 1 ] && [ -x "$BIN/lighthouse-bench" ]; then
  echo "== timing (not a test): lighthouse-bench --shape-table 1 ${LIGHTHOUSE_SHAPES_ARGS:-}"
  timeout 420 "$BIN/lighthouse-bench" --shape-table 1 --json "$LOGS/shapes.json" ${LIGHTHOUSE_SHAPES_ARGS:-} 2>&1 |
    tee "$LOGS/shapes.log"
  python3 "$ROOT/tools/bench/plot_shapes.py" "$LOGS/shapes.json" "$LOGS/shapes.png" 2>&1 | tail -1
  python3 "$ROOT/tools/bench/shape_table.py" "$LOGS/shapes.json" >"$LOGS/shapes.md" 2>&1 && cat "$LOGS/shapes.md"
  [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS"/shapes.json "$LOGS"/shapes.png "$LOGS"/shapes.md "$OUT"/ 2>/dev/null
fi

# Other builds of the library against the packed one (scripts/gpu_pack_variant.sh), with
# LIGHTHOUSE_GPU_VARIANTS=1: their tests and timings in the same run (not a test of the packed library).
if [ "${LIGHTHOUSE_GPU_VARIANTS:-0}" = 1 ]; then bash "$ROOT/tests/gpu/compare_variants.sh" "$BIN"; fi
# Per-kernel times under ncu (not a test), with LIGHTHOUSE_GPU_PROFILE=1; LIGHTHOUSE_PROFILE_SEQS lists the N.
if [ "${LIGHTHOUSE_GPU_PROFILE:-0}" = 1 ]; then
  for n in ${LIGHTHOUSE_PROFILE_SEQS:-524288}; do bash "$ROOT/tests/gpu/profile_kernels.sh" "$BIN" "$n"; done
fi

echo
echo "== summary (checks passed/failed per program)"
printf '%-28s %-22s %8s %10s\n' program result seconds checks
fails=0
for i in "${!names[@]}"; do
  printf '%-28s %-22s %8s %10s\n' "${names[$i]}" "${statuses[$i]}" "${times[$i]}" "${counts[$i]}"
  case ${statuses[$i]} in FAIL*) fails=$((fails + 1)) ;; esac
done
# Under the device tool, $OUT comes back: the benchmark's JSON and plot, and all logs packed.
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$LOGS"/bench.json "$LOGS"/bench.png "$LOGS"/profile-*.txt "$OUT"/ 2>/dev/null
  tar czf "$OUT/gpu-logs.tgz" -C "$LOGS" .
fi
exit $((fails > 0))
