#!/usr/bin/env bash
# Packs another build of the library next to .pack/gpu, to compare it with the packed one on the
# GPU machine in the same run (tests/gpu/compare_variants.sh).
#
#   scripts/gpu_pack_variant.sh NAME [GIT_REF] [ENV...]
#
# Builds liblighthouse (Release) from GIT_REF (a branch or commit, checked out in a temporary
# worktree; default: this checkout as it is) and writes .pack/variants/NAME/liblighthouse.so.0.xz.
# ENV assignments (e.g. LH_OVERLAP=0) are stored beside it and set when the variant runs. The
# programs in .pack/gpu (scripts/gpu_pack.sh) are shared: a variant must keep the ABI.
# GIT_REF of the form variant:OTHER builds nothing: the variant runs OTHER's library with its own
# ENV (an env-only variant costs no carry space; OTHER must be packed first; variant:packed is the
# library of .pack/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/gpu_pack_variant.sh NAME [GIT_REF] [ENV...]}
ref=${2:-}
shift $(( $# >= 2 ? 2 : 1 ))
dst=.pack/variants/$name
if [ "${ref#variant:}" != "$ref" ]; then
  other=${ref#variant:}
  lib=.pack/variants/$other/liblighthouse.so.0.xz
  [ "$other" = packed ] && lib=.pack/gpu/liblighthouse.so.0.xz
  [ -e "$lib" ] || { echo "variant $other is not packed" >&2; exit 1; }
  rm -rf "$dst" && mkdir -p "$dst"
  echo "$other" >"$dst/same_as"
  what="library of $other,"
else
  src=$PWD
  if [ -n "$ref" ]; then
    src=$(mktemp -d /tmp/lh-variant-XXXXXX)
    git worktree add -q --detach "$src" "$ref"
    trap 'git worktree remove --force "$src"' EXIT
  fi
  build="$PWD/build-variant-$name"
  # a build directory remembers its source directory, and a GIT_REF's worktree is a new
  # temporary one every time: start that build afresh
  [ -n "$ref" ] && rm -rf "$build"
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLH_BUILD_TESTS=OFF >/dev/null
  ninja -C "$build" lighthouse >/dev/null
  rm -rf "$dst" && mkdir -p "$dst"
  strip --strip-unneeded -o "$dst/liblighthouse.so.0" "$build/liblighthouse.so.0"
  xz -T2 -6 -f "$dst/liblighthouse.so.0"
  what=$(git rev-parse --short "${ref:-HEAD}")
fi
: >"$dst/env"
for kv in "$@"; do echo "$kv" >>"$dst/env"; done
echo "$name: $what $(tr '\n' ' ' <"$dst/env")" | tee "$dst/what"
du -sh .pack
