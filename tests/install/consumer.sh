#!/usr/bin/env bash
# consumer.sh - liblighthouse installed, then used by other projects the three usual ways.
#
#   consumer.sh install   BUILD_DIR WORK_DIR   cmake --install into WORK_DIR/staging, then moved
#                                              to WORK_DIR/prefix (nothing may record where it
#                                              was installed); prints the files and their size,
#                                              runs the installed lighthouse-compile
#   consumer.sh cmake     WORK_DIR SOURCE_DIR  examples/c built with find_package(lighthouse)
#   consumer.sh pkgconfig WORK_DIR SOURCE_DIR  examples/c/forward_backward.c built with pkg-config
#   consumer.sh rust      WORK_DIR SOURCE_DIR  tests/install/rust_consumer (lighthouse-sys) with
#                                              only PKG_CONFIG_PATH set: cargo run and cargo test
#
# Each consumer runs one forward and backward on the CPU backend and must load the library of
# WORK_DIR/prefix; LD_LIBRARY_PATH and LIGHTHOUSE_LIB_DIR are cleared so nothing else can help.
# CC, CMAKE and CMAKE_GENERATOR name the tools (defaults: cc, cmake, Ninja).
set -euo pipefail
mode=${1:-} from=${2:-} work=${3:-}   # from: the build directory (install) or the source tree
[ "$mode" = install ] || { work=${2:-} from=${3:-}; }
[ -n "$work" ] && [ -n "$from" ] ||
  { echo "usage: consumer.sh install BUILD_DIR WORK_DIR | cmake|pkgconfig|rust WORK_DIR SOURCE_DIR" >&2; exit 2; }
prefix=$work/prefix
unset LD_LIBRARY_PATH LIGHTHOUSE_LIB_DIR PKG_CONFIG_PATH
cmake=${CMAKE:-cmake}

# expect_loaded PROGRAM: the program resolves liblighthouse.so.0 to the prefix's copy.
expect_loaded() {
  local resolved
  resolved=$(ldd "$1" | awk '/liblighthouse\.so/ {print $3}')
  echo "$1 loads $resolved"
  [ "$(readlink -f "$resolved")" = "$(readlink -f "$prefix/lib/liblighthouse.so.0")" ] ||
    { echo "FAIL: not the installed library of $prefix"; exit 1; }
}

case $mode in
install)
  rm -rf "$work/staging" "$prefix" "$work/kernel-cache"
  "$cmake" --install "$from" --prefix "$work/staging"
  mv "$work/staging" "$prefix"
  (cd "$prefix" && find . -type f -o -type l | sort)
  du -sh "$prefix"
  # the installed programs find the installed library (RUNPATH $ORIGIN/../lib) and the
  # pre-compiler works through it alone
  expect_loaded "$prefix/bin/lighthouse-bench"
  expect_loaded "$prefix/bin/lighthouse-compile"
  "$prefix/bin/lighthouse-compile" --head-dim 64 --cache-dir "$work/kernel-cache"
  ;;
cmake)
  rm -rf "$work/cmake-consumer"
  "$cmake" -S "$from/examples/c" -B "$work/cmake-consumer" -G "${CMAKE_GENERATOR:-Ninja}" \
    -DCMAKE_C_COMPILER="${CC:-cc}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  "$cmake" --build "$work/cmake-consumer"
  expect_loaded "$work/cmake-consumer/forward_backward"
  "$work/cmake-consumer/forward_backward"
  ;;
pkgconfig)
  export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
  echo "pkg-config --cflags --libs lighthouse: $(pkg-config --cflags --libs lighthouse)"
  mkdir -p "$work/pkgconfig-consumer"
  # shellcheck disable=SC2046  # the flags are meant to split
  "${CC:-cc}" -O2 -o "$work/pkgconfig-consumer/forward_backward" "$from/examples/c/forward_backward.c" \
    $(pkg-config --cflags --libs lighthouse) -Wl,-rpath,"$(pkg-config --variable=libdir lighthouse)" -ldl -lm
  expect_loaded "$work/pkgconfig-consumer/forward_backward"
  "$work/pkgconfig-consumer/forward_backward"
  ;;
rust)
  export PKG_CONFIG_PATH=$prefix/lib/pkgconfig CARGO_TARGET_DIR=$work/cargo-target CARGO_TERM_COLOR=never
  cd "$from/tests/install/rust_consumer"
  cargo run --offline --locked | tee "$work/rust-run.log"
  grep -q "^loaded $(readlink -f "$prefix/lib")/liblighthouse.so" "$work/rust-run.log" ||
    { echo "FAIL: cargo run did not load the installed library of $prefix"; exit 1; }
  cargo test --offline --locked
  ;;
*)
  echo "usage: consumer.sh install BUILD_DIR WORK_DIR | cmake|pkgconfig|rust WORK_DIR SOURCE_DIR" >&2
  exit 2
  ;;
esac
