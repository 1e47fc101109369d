#!/usr/bin/env bash
# Installs what is missing, builds liblighthouse and runs the demo (GPU if one is usable,
# otherwise the CPU reference backend at a small size). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build lighthouse-demo >/dev/null
exec build/tools/demo/lighthouse-demo "$@"
