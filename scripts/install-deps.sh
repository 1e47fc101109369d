#!/usr/bin/env bash
# Installs (with apt, as root) whatever the build and the tests need and is not yet installed:
# compilers and CMake, Check, valgrind, numpy (the model of the specification), Debian's MLIR/LLVM
# 22 for the kernel compiler, and clang with its runtimes for the libFuzzer build of the fuzz
# target.
# The CUDA toolkit (headers of the driver API, cuDNN and NCCL) is expected in /usr/local/cuda.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config check libsubunit-dev valgrind python3 python3-numpy
          mlir-22-tools libmlir-22-dev llvm-22-dev lld libzstd-dev zlib1g-dev libxml2-dev libncurses-dev xz-utils
          clang libclang-rt-14-dev)
command -v cargo >/dev/null 2>&1 || packages+=(cargo)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
