#!/usr/bin/env bash
# Builds liblighthouse here (Release) and packs what a GPU machine needs into .pack/gpu (ignored
# by git): the stripped library (xz-compressed: it carries MLIR/LLVM), the GPU test programs (the
# Rust crate's among them), the demo, lighthouse-compile, the C example (examples/c) and the
# benchmarks (with bench_cp_scaling's libnccl_null.so). The golden vectors and the plot scripts travel with the
# repository (tests/golden, tools/bench). Then, on the GPU machine:
#   bash tests/gpu/run_gpu_tests.sh            (from the repository root; see docs/gpu-testing.md)
# With the device tool: run `bash tests/gpu/run_gpu_tests.sh` with carry [".pack"].
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DLH_BUILD_TESTS=ON >/dev/null
ninja -C build-release >/dev/null
dst=.pack/gpu
rm -rf "$dst" && mkdir -p "$dst"
strip --strip-unneeded -o "$dst/liblighthouse.so.0" build-release/liblighthouse.so.0
xz -T2 -6 -f "$dst/liblighthouse.so.0"
# the compiler's GPU checks (kernels launched directly, results to the bit): MLIR is linked in,
# about 11 MB compressed; LIGHTHOUSE_PACK_COMPILER_TEST=0 leaves it out (room for library variants
# under the 64 MiB a device call carries)
if [ "${LIGHTHOUSE_PACK_COMPILER_TEST:-1}" != 0 ]; then
  strip --strip-unneeded -o "$dst/test_compiler" build-release/tests/compiler/test_compiler
  xz -T2 -6 -f "$dst/test_compiler"
  # it is a Check program: Check's libsubunit is not on the GPU machine
  cp -L /lib/x86_64-linux-gnu/libsubunit.so.0 "$dst/"
fi
cp build-release/tests/gpu/test_* build-release/tests/gpu/bench_cuda_dense \
  build-release/tests/gpu/bench_cp_scaling build-release/tests/gpu/libnccl_null.so "$dst/"
# The Rust crate's GPU tests (bindings/rust/lighthouse/tests/cuda_*.rs), built against this
# library: stripped libtest programs named rust_<test> (about 1 MB each); its CPU tests run in the
# test suite here.
if command -v cargo >/dev/null 2>&1; then
  LIGHTHOUSE_LIB_DIR=$PWD/build-release CARGO_TARGET_DIR=$PWD/build-release/cargo-target \
    cargo test --manifest-path bindings/rust/Cargo.toml -p lighthouse --offline --locked \
    --release --no-run --message-format=json --test cuda_dense --test cuda_device |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' >"$dst/.rust-tests"
  while read -r exe; do
    name=$(basename "$exe")
    strip --strip-unneeded -o "$dst/rust_${name%-*}" "$exe"
  done <"$dst/.rust-tests"
  rm "$dst/.rust-tests"
else
  echo "gpu_pack: no cargo here: the Rust crate's GPU tests are not packed"
fi
cp build-release/tools/demo/lighthouse-demo build-release/tools/bench/lighthouse-bench \
  build-release/tools/compile/lighthouse-compile "$dst/"
cp build-release/examples/c/forward_backward "$dst/"
rm -f "$dst"/*.o
du -sh "$dst"
ls "$dst"
