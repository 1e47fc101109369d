#!/usr/bin/env bash
# ptx_identity.sh - the PTX of every kernel over a matrix of configurations, compared with a
# stored list or with another git revision. For refactors of kernels_mlir/ and the template
# engine that must not change what the GPU runs.
#
#   ptx_identity.sh [--build DIR] --check FILE   compare with a stored list (exit 77: the list
#                                                was made with another LLVM, skipped)
#   ptx_identity.sh [--build DIR] --write FILE   write the list for this build
#   ptx_identity.sh [--build DIR] --ref REV      build REV's compiler (git archive into a
#                                                temporary directory) and compare each
#                                                configuration's PTX, with diffs of the first
#                                                differences (--show N, default 3)
#   --keep DIR                                   keep the PTX files (DIR/new, DIR/ref) and the
#                                                per-configuration lists (DIR/*.list)
#
# Matrix: chips sm_90 and sm_100a x POOLING {2, 4, 8, 64} x LEVELS {2, 3, 4, 6} x HEAD_DIM
# {8 .. 256} x {bf16, f16}, the kv group cycling through {1, 2, 0, 4}: 384 configurations, each
# with the kernels of its plan and the attention step's, compiled by `test_compiler ptx`
# (DIR/tests/compiler/test_compiler, default DIR = build; a revision older than that mode is
# compiled with its lighthouse-compile --ptx-out, which left out the attention step's kernel).
# A kernel is named by its entry points (not its file), so renaming a template keeps its lines.
# The stored list holds one line per chip and kernel: how many configurations and the sha256 of
# their per-configuration lines, so it stays small; --ref shows which configuration differs and
# how.
set -euo pipefail
export LC_ALL=C

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build mode="" file="" ref="" keep="" show=3
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --check|--write) mode=${1#--}; file=$2; shift 2 ;;
    --ref) mode=ref; ref=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --show) show=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[ -n "$mode" ] || { usage >&2; exit 2; }

harness=$build/tests/compiler/test_compiler
[ -x "$harness" ] || { echo "ptx_identity: no $harness (build it: ninja -C $build test_compiler)" >&2; exit 2; }
llvm_root=$(sed -n 's/^LH_LLVM_ROOT:PATH=//p' "$build/CMakeCache.txt")
llvm="LLVM $("$llvm_root/bin/llvm-config" --version)"

if [ -n "$keep" ]; then
  mkdir -p "$keep" && work=$(cd "$keep" && pwd)
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/lh-ptx-XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

# The configurations, one line each: chip pooling levels head_dim dtype kv_group.
matrix() {
  local i=0 groups=(1 2 0 4)
  for chip in sm_90 sm_100a; do
    for p in 2 4 8 64; do
      for l in 2 3 4 6; do
        for d in 8 16 32 64 128 256; do
          for t in bf16 f16; do
            echo "$chip $p $l $d $t ${groups[i % 4]}"
            i=$((i + 1))
          done
        done
      done
    done
  done
}

# compile KIND PROGRAM OUT: every configuration's PTX into OUT/<chip>-p<P>-L<L>-D<D>-<dtype>-g<G>/;
# KIND "harness" (test_compiler ptx, all at once) or "tool" (lighthouse-compile --ptx-out, one
# process per configuration: revisions before the harness).
compile() {
  local kind=$1 program=$2 out=$3
  mkdir -p "$out"
  matrix | while read -r chip p l d t g; do
    local dir=$out/$chip-p$p-L$l-D$d-$t-g$g
    mkdir -p "$dir"
    echo "$dir $chip $p $l $d $t $g"
  done >"$out.jobs"
  if [ "$kind" = harness ]; then
    "$program" ptx <"$out.jobs" >"$out.log" 2>&1 || { cat "$out.log" >&2; return 1; }
  else
    mkdir -p "$out/.cache"
    # sh -c: $0 the tool, $1 the cache, then the job line: $2 dir, $3 chip, $4 .. $8 p L D dtype g
    # shellcheck disable=SC2016
    xargs -P "$(nproc)" -L 1 sh -c '"$0" --chip "$3" --pooling "$4" --levels "$5" --head-dim "$6" \
      --dtype "$7" --kv-group "$8" --cache-dir "$1" --ptx-out "$2" >"$2.log" 2>&1 || { cat "$2.log"; exit 255; }' \
      "$program" "$out/.cache" <"$out.jobs" >&2 || return 1
  fi
}

# ptx_of KIND PROGRAM OUT: runs the matrix, then lists "config entries sha256 file" per kernel.
ptx_of() {
  compile "$@" || exit 1
  for dir in "$3"/*/; do
    local config; config=$(basename "$dir")
    for ptx in "$dir"*.ptx; do
      local entries; entries=$(grep -o '^\.visible \.entry [A-Za-z0-9_]*' "$ptx" | sed 's/.* //' | paste -sd, -)
      echo "$config $entries $(sha256sum <"$ptx" | cut -c1-64) $ptx"
    done
  done | sort
}

# Per chip and kernel: the number of configurations and the sha256 of their lines.
summary() {
  awk '{ split($1, c, "-"); print c[1], $2 }' "$1" | sort -u | while read -r chip entries; do
    local lines; lines=$(awk -v c="$chip-" -v e="$entries" 'index($1, c) == 1 && $2 == e { print $1, $3 }' "$1")
    echo "$chip $entries $(echo "$lines" | wc -l) $(echo "$lines" | sha256sum | cut -c1-64)"
  done
}

echo "ptx_identity: $(matrix | wc -l) configurations, $llvm, $harness"
ptx_of harness "$harness" "$work/new" >"$work/new.list"
summary "$work/new.list" >"$work/new.summary"

case $mode in
  write)
    { echo "# PTX of every kernel over the matrix of tests/compiler/ptx_identity.sh."
      echo "# Regenerate (only where a change of PTX is meant): tests/compiler/ptx_identity.sh --write FILE"
      echo "# $llvm"
      echo "# chip kernel-entry-points configurations sha256"
      cat "$work/new.summary"; } >"$file"
    echo "ptx_identity: wrote $(wc -l <"$work/new.summary") kernels to $file"
    ;;
  check)
    stored_llvm=$(sed -n 's/^# \(LLVM .*\)/\1/p' "$file")
    if [ "$stored_llvm" != "$llvm" ]; then
      echo "ptx_identity: $file was made with $stored_llvm, this build uses $llvm: skipped"
      exit 77
    fi
    if diff <(grep -v '^#' "$file") "$work/new.summary" >"$work/summary.diff"; then
      echo "ptx_identity: PTX identical to $file ($(wc -l <"$work/new.list") PTX files)"
    else
      echo "ptx_identity: PTX differs from $file (< stored, > this build):"
      cat "$work/summary.diff"
      echo "To see which configurations and how: tests/compiler/ptx_identity.sh --ref <a revision with the stored PTX>"
      exit 1
    fi
    ;;
  ref)
    src=$work/ref-src
    mkdir -p "$src"
    git -C "$root" archive "$ref" | tar -x -C "$src"
    if git -C "$root" grep -q 'run_ptx' "$ref" -- tests/compiler; then
      kind=harness target=test_compiler program=$src/build/tests/compiler/test_compiler
    elif git -C "$root" grep -q -e '--ptx-out' "$ref" -- tools/compile; then
      kind=tool target=lighthouse-compile program=$src/build/tools/compile/lighthouse-compile
    else
      echo "ptx_identity: $ref has neither test_compiler ptx nor lighthouse-compile --ptx-out" >&2
      exit 2
    fi
    echo "ptx_identity: building $target at $ref ($(git -C "$root" rev-parse --short "$ref"))"
    cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DLH_LLVM_ROOT="$llvm_root" >"$work/ref-build.log" 2>&1 &&
      ninja -C "$src/build" "$target" >>"$work/ref-build.log" 2>&1 ||
      { cat "$work/ref-build.log" >&2; exit 1; }
    ptx_of "$kind" "$program" "$work/ref" >"$work/ref.list"
    keyed() { awk '{ print $1 "|" $2, $3, $4 }' "$1" | sort; }
    keyed "$work/new.list" >"$work/new.keyed"
    keyed "$work/ref.list" >"$work/ref.keyed"
    join "$work/new.keyed" "$work/ref.keyed" >"$work/both"
    same=$(awk '$2 == $4' "$work/both" | wc -l)
    awk '$2 != $4' "$work/both" >"$work/differ"
    only_new=$(join -v1 "$work/new.keyed" "$work/ref.keyed" | wc -l)
    only_ref=$(join -v2 "$work/new.keyed" "$work/ref.keyed" | wc -l)
    echo "ptx_identity: $same identical, $(wc -l <"$work/differ") different, $only_new only in this build, $only_ref only in $ref"
    awk '{ split($1, k, "|"); print k[2] }' "$work/differ" | sort | uniq -c | sed 's/^/  differ: /'
    head -n "$show" "$work/differ" | while read -r key _ new _ old; do
      echo "== $key"
      diff -u "$old" "$new" | head -n 60 || true
    done
    [ ! -s "$work/differ" ]
    ;;
esac
