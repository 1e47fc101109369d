#!/usr/bin/env bash
# Installs (with apt, as root) whatever the build and the tests need and is not yet installed:
# compilers and CMake, Check, valgrind, numpy (the model of the specification), Debian's MLIR/LLVM
# 22 for the kernel compiler, and clang with its runtimes for the libFuzzer build of the fuzz
# target; and, where python3's setuptools cannot build wheels alone, the `wheel` package.
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
# The Python package's wheel test builds wheels offline with the python3 the build finds first;
# setuptools before 70.1 needs the `wheel` package for that. pip installs it where python3 is
# not the system's (a pyenv or a venv); the system's python3 gets Debian's.
if python3 -m pip --version >/dev/null 2>&1 && ! python3 - <<'PY' 2>/dev/null
import importlib.util, sys
from importlib.metadata import version
v = tuple(int(p) for p in version("setuptools").split(".")[:2] if p.isdigit())
sys.exit(0 if v >= (70, 1) or importlib.util.find_spec("wheel") else 1)
PY
then
  echo "installing: wheel (for $(command -v python3))"
  # Not fatal: without it, only the wheel test is skipped (it says why).
  python3 -m pip install --quiet --disable-pip-version-check wheel 2>/dev/null ||
    { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-wheel \
        >/dev/null; } || echo "could not install the wheel package: bindings_python_wheel will be skipped"
fi
