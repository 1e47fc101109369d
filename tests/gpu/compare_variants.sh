#!/usr/bin/env bash
# compare_variants.sh - the packed library (.pack/gpu) and every variant packed by
# scripts/gpu_pack_variant.sh, one after the other in one run on one GPU: test_lighthouse_gpu
# --quick (a variant that fails is reported, not timed) and lighthouse-bench --lighthouse-only 2
# (Lighthouse and its floor in pairs).
#
#   tests/gpu/compare_variants.sh [BIN_DIR]     (LIGHTHOUSE_VARIANT_SEQS, default 32768,131072,524288)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/.pack/gpu}" && pwd)
source "$ROOT/tests/gpu/gpu_env.sh"
SEQS=${LIGHTHOUSE_VARIANT_SEQS:-32768,131072,524288}
LOGS=${LIGHTHOUSE_GPU_LOG_DIR:-/tmp/lh-gpu-logs}
mkdir -p "$LOGS"
base_path=$LD_LIBRARY_PATH
compare() {   # compare NAME LIBDIR ENVFILE
  local name=$1 dir=$2 envfile=${3:-}
  local -a envs=()
  [ -n "$envfile" ] && [ -s "$envfile" ] && mapfile -t envs <"$envfile"
  echo "== variant $name ${envs[*]:-}"
  env "${envs[@]}" LD_LIBRARY_PATH="$dir:$base_path" "$BIN/test_lighthouse_gpu" --quick \
    >"$LOGS/variant-$name-test.log" 2>&1
  grep -E "^(FAIL|SKIP|SUMMARY)" "$LOGS/variant-$name-test.log"
  env "${envs[@]}" LD_LIBRARY_PATH="$dir:$base_path" "$BIN/lighthouse-bench" --lighthouse-only 2 \
    --seqs "$SEQS" --repeats 7 --warmup 2 --json "$LOGS/variant-$name.json" 2>/dev/null | tail -n 4
}
compare packed "$LIBDIR"
# variants with their own library first, then the env-only ones (same_as names whose library)
for v in "$ROOT"/.pack/variants/*/; do
  [ -e "$v/liblighthouse.so.0.xz" ] || continue
  name=$(basename "$v")
  mkdir -p "/tmp/lh-variant/$name"
  xz -dc "$v/liblighthouse.so.0.xz" >"/tmp/lh-variant/$name/liblighthouse.so.0"
  compare "$name" "/tmp/lh-variant/$name" "$v/env"
done
for v in "$ROOT"/.pack/variants/*/; do
  [ -e "$v/same_as" ] || continue
  other=$(cat "$v/same_as")
  dir="/tmp/lh-variant/$other"
  [ "$other" = packed ] && dir=$LIBDIR
  compare "$(basename "$v")" "$dir" "$v/env"
done
[ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS"/variant-* "$OUT"/ 2>/dev/null
exit 0
