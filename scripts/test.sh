#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite, as CI does:
#   1. the optimised build and every ctest test (GPU tests skip themselves without a GPU);
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the tests of rings and attention hooks, of the kernel cache's threads and of the read-ahead
#      of cuDNN's libraries, built with ThreadSanitizer (without the MLIR compiler: the cache's
#      tests plant their kernels);
#   4. the fuzz target of the C ABI for LIGHTHOUSE_FUZZ_SECONDS (default 45) under ASan + UBSan: with
#      libFuzzer where clang can build it, else the seeded driver of the ASan build.
# The first run includes the tests labelled `valgrind` (CPU conformance under valgrind memcheck).
# A test that cannot run here (no GPU, no Julia, a missing tool) exits 77 and counts as skipped;
# each run lists its skipped tests with the reason they printed. The last line counts every test
# of all runs (the fuzzing run counts as one).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
jobs=$(nproc)
passed=0 failed=0 skipped=0

# run_ctest BUILD_DIR LABEL [ctest args...]: adds the run's counts to the totals.
run_ctest() {
  local dir=$1 label=$2; shift 2
  local log=$dir/ctest-$label.log
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@" 2>&1 | tee "$log"
  local line; line=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$log" | tail -1)
  local total; total=$(echo "$line" | sed -E 's/.* out of ([0-9]+).*/\1/')
  local bad; bad=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/')
  if [ -z "$line" ]; then failed=$((failed + 1)); echo "ctest ($label) did not finish"; return; fi
  # ctest counts skipped tests as passed; list them apart, each with the reason it printed (its
  # SKIP: line, else its first line that speaks of skipping).
  local skips; skips=$(sed -nE 's/^[[:space:]]+[0-9]+ - (.*) \(Skipped\)$/\1/p' "$log")
  local n=0 name why
  for name in $skips; do
    n=$((n + 1))
    why=$(awk -v t="$name" '$2 == "Test:" { cur = $3 } cur != t { next }
      /^SKIP: / { print; found = 1; exit }
      alt == "" && tolower($0) ~ /skip/ && $2 != "Test:" && !/^Command:/ { alt = $0 }
      END { if (!found && alt != "") print alt }' "$dir/Testing/Temporary/LastTest.log")
    echo "skipped ($label): $name: ${why#SKIP: }"
  done
  passed=$((passed + total - bad - n)); failed=$((failed + bad)); skipped=$((skipped + n))
}

echo "== build (release) and test"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && ninja -C build || exit 1
run_ctest build release

echo "== build with ASan + UBSan and test"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLH_SANITIZE=ON >/dev/null && ninja -C build-asan || exit 1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest build-asan asan -LE 'no-sanitizer'

echo "== build with ThreadSanitizer: rings, hooks, the kernel cache and the read-ahead"
tsan_tests='^(test_cp|test_ring_safety|test_hostile|test_compiler|test_cudnn_prefetch)$'
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLH_TSAN=ON -DLH_WITH_COMPILER=OFF >/dev/null &&
  ninja -C build-tsan test_cp test_ring_safety test_hostile test_compiler test_cudnn_prefetch || exit 1
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 LIGHTHOUSE_TEST_CP_SMALL=1 \
  run_ctest build-tsan tsan -R "$tsan_tests"

echo "== fuzz the C ABI (ASan + UBSan) for ${LIGHTHOUSE_FUZZ_SECONDS:-45} s"
fuzz_log=build-asan/fuzz.log
fuzz_corpus=$(mktemp -d)   # new inputs found by libFuzzer; the repository's corpus stays as is
if printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' |
     clang -x c -fsanitize=fuzzer -o "$fuzz_corpus/probe" - >/dev/null 2>&1; then
  CC=clang cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLH_SANITIZE=ON -DLH_FUZZ=ON \
    -DLH_WITH_COMPILER=OFF >/dev/null && ninja -C build-fuzz fuzz_abi || exit 1
  fuzz_bin=build-fuzz/tests/fuzz/fuzz_abi
else
  echo "clang cannot build libFuzzer programs here: the seeded driver of the ASan build fuzzes"
  fuzz_bin=build-asan/tests/fuzz/fuzz_abi
fi
rm -f "$fuzz_corpus/probe"
if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1 \
   "$fuzz_bin" -max_total_time="${LIGHTHOUSE_FUZZ_SECONDS:-45}" -max_len=1024 -print_final_stats=1 \
     -artifact_prefix=build-asan/fuzz- "$fuzz_corpus" tests/fuzz/corpus >"$fuzz_log" 2>&1; then
  passed=$((passed + 1))
  grep -E '^(Done|fuzz_abi: [0-9]+ runs)' "$fuzz_log"
else
  failed=$((failed + 1))
  tail -40 "$fuzz_log"
  echo "fuzzing failed: the input that failed is in build-asan/ (fuzz-* or ./crash-*)"
fi
rm -rf "$fuzz_corpus"

echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
