#!/usr/bin/env bash
# rust_lint.sh fmt|clippy - the Rust bindings' style and lint gates, run by ctest from
# bindings/rust: `cargo fmt --check` (rustfmt's layout) or `cargo clippy` over every target with
# every warning an error. Where the cargo component is not installed it prints why and exits 77,
# which ctest reports as skipped.
set -u
case ${1:-} in
  fmt) component=rustfmt; command=(cargo fmt --all --check) ;;
  clippy) component=clippy
          command=(cargo clippy --offline --locked --all-targets -- -D warnings) ;;
  *) echo "usage: $0 fmt|clippy" >&2; exit 2 ;;
esac
if ! cargo "$1" --version >/dev/null 2>&1; then
  echo "SKIP: cargo $1 is not installed (rustup component add $component)"
  exit 77
fi
exec "${command[@]}"
