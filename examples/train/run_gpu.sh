#!/usr/bin/env bash
# Runs the training program on a GPU machine, from the repository root of a checkout that holds
# the pack of scripts/gpu_pack.sh (.pack/gpu) or a build:
#
#   bash examples/train/run_gpu.sh smoke                  # the few-step smoke test (smoke.py)
#   bash examples/train/run_gpu.sh measure [ARGS...]      # measure.py --out $OUT/train ARGS
#
# The library: LIGHTHOUSE_LIB if set, else the packed one in LIGHTHOUSE_GPU_BIN (default .pack/gpu,
# unpacked by tests/gpu/gpu_env.sh), else build/liblighthouse.so.0. cuDNN comes from the NVIDIA
# wheels of /opt/torch/.venv (gpu_env.sh), the binding from bindings/python, the interpreter from
# LIGHTHOUSE_TRAIN_PYTHON (default python3). measure writes into $OUT/train when $OUT is set (the
# device tool brings $OUT back), else /tmp/lh-train; ARGS go to measure.py (--time-budget 540).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${LIGHTHOUSE_GPU_BIN:-$ROOT/.pack/gpu}
source "$ROOT/tests/gpu/gpu_env.sh"
if [ -z "${LIGHTHOUSE_LIB:-}" ]; then
  if [ -e "$LIBDIR/liblighthouse.so.0" ]; then LIGHTHOUSE_LIB=$LIBDIR/liblighthouse.so.0
  else LIGHTHOUSE_LIB=$ROOT/build/liblighthouse.so.0; fi
fi
export LIGHTHOUSE_LIB
export PYTHONPATH=$ROOT/bindings/python${PYTHONPATH:+:$PYTHONPATH}
PY=${LIGHTHOUSE_TRAIN_PYTHON:-python3}
echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
echo "== library: $LIGHTHOUSE_LIB"
what=${1:-}
shift || true
case $what in
  smoke) exec "$PY" "$ROOT/examples/train/smoke.py" --device cuda "$@" ;;
  measure)
    out=${OUT:+$OUT/train}
    out=${out:-/tmp/lh-train}
    mkdir -p "$out"
    exec "$PY" "$ROOT/examples/train/measure.py" --out "$out" "$@" ;;
  *) echo "usage: $0 smoke | measure [measure.py arguments]" >&2; exit 2 ;;
esac
