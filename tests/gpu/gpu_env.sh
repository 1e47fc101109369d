# gpu_env.sh - sourced by the GPU scripts: unpacks the library that scripts/gpu_pack.sh ships
# xz-compressed (it carries MLIR/LLVM), points the loader at it and at cuDNN/NCCL from the Python
# wheels (override with LIGHTHOUSE_NVIDIA_WHEELS), and keeps NVLink multicast off. Expects $BIN (the
# directory of the packed programs); sets LIBDIR and LIGHTHOUSE_GOLDEN_DIR.
LIBDIR=$BIN
if [ ! -e "$BIN/liblighthouse.so.0" ] && [ -e "$BIN/liblighthouse.so.0.xz" ]; then
  LIBDIR=/tmp/lh-lib && mkdir -p "$LIBDIR"
  xz -dc "$BIN/liblighthouse.so.0.xz" >"$LIBDIR/liblighthouse.so.0"
fi
# the golden vectors of the repository (run from its root), unless the caller names others
export LIGHTHOUSE_GOLDEN_DIR=${LIGHTHOUSE_GOLDEN_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../golden" && pwd)}

WHEELS=${LIGHTHOUSE_NVIDIA_WHEELS:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia}
libpath=$LIBDIR:$BIN   # $BIN: libraries packed beside the programs (Check's libsubunit)
for d in "$WHEELS"/*/lib; do [ -d "$d" ] && libpath="$libpath:$d"; done
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0          # never NVLink multicast (shared machines)
export LIGHTHOUSE_CUDA_VERBOSE=1           # the library names the cuDNN engines it picked
