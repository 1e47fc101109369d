#!/usr/bin/env bash
# profile_kernels.sh - per-kernel GPU time and DRAM traffic of one Lighthouse forward and one
# forward+backward (not a test: a measurement for docs/perf-log.md). Runs lighthouse-bench
# --lighthouse-only 2 (Lighthouse and its floor) under Nsight Compute (ncu, clocks left alone) and
# prints one line per kernel (time, bytes read and written in DRAM, the bandwidth that makes),
# then each run's total split into our kernels and cuDNN's.
#
#   tests/gpu/profile_kernels.sh [BIN_DIR] [N]      (default BIN_DIR .pack/gpu, N 524288)
#
# Writes $LIGHTHOUSE_GPU_LOG_DIR/profile-N.csv (raw ncu) and profile-N.txt (the table).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/.pack/gpu}" && pwd)
N=${2:-524288}
LOGS=${LIGHTHOUSE_GPU_LOG_DIR:-/tmp/lh-gpu-logs}
mkdir -p "$LOGS"
source "$ROOT/tests/gpu/gpu_env.sh"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -z "$NCU" ]; then echo "profile_kernels: ncu not found"; exit 77; fi
csv="$LOGS/profile-$N.csv"
# One warm-up-free forward and forward+backward; the bench's JIT and cuDNN plan building happen
# before the first kernel we care about.
"$NCU" --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
  "$BIN/lighthouse-bench" --lighthouse-only 2 --seqs "$N" --warmup 0 --repeats 1 --json /dev/null \
  >"$csv" 2>"$LOGS/profile-$N.err"
rc=$?
python3 - "$csv" <<'PY' | tee "$LOGS/profile-$N.txt"
import csv, sys
rows = {}
order = []
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    key = (int(r["ID"]), r["Kernel Name"])
    if key not in rows:
        rows[key] = {}
        order.append(key)
    v = float(r["Metric Value"].replace(",", ""))
    unit = r["Metric Unit"]
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3, "nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0,
             "second": 1e3, "byte": 1e-9, "Kbyte": 1e-6, "Mbyte": 1e-3, "Gbyte": 1.0}.get(unit, 1.0)
    rows[key][r["Metric Name"]] = v * scale
# The bench runs Lighthouse forward, floor forward, Lighthouse f+b, floor f+b. A Lighthouse run
# starts at lh_pyramid_scores and ends with its last lh_ kernel (scatter, or pool_grad after a
# backward); the kernels after that, up to the next Lighthouse run, are the floor's.
segments = []
last_lh = ""
print(f"{'id':>4} {'ms':>8} {'GB rd':>7} {'GB wr':>7} {'GB/s':>7}  kernel")
for key in order:
    m = rows[key]
    name = key[1]
    ms = m.get("gpu__time_duration.sum", 0.0)
    rd = m.get("dram__bytes_read.sum", 0.0)
    wr = m.get("dram__bytes_write.sum", 0.0)
    bw = (rd + wr) / (ms * 1e-3) if ms > 0 else 0.0
    lh = name.startswith("lh_")
    if name.startswith("lh_pyramid_scores") or not segments:
        segments.append({"kind": "lighthouse", "lh": 0.0, "other": 0.0})
    elif not lh and last_lh in ("lh_scatter", "lh_pool_grad") and segments[-1]["kind"] == "lighthouse":
        segments.append({"kind": "floor", "lh": 0.0, "other": 0.0})
    if lh:
        last_lh = name.split("(")[0]
    segments[-1]["lh" if lh else "other"] += ms
    print(f"{key[0]:>4} {ms:8.3f} {rd:7.3f} {wr:7.3f} {bw:7.0f}  {name[:90]}")
print("runs in order (ms): total = own lh_ kernels + cuDNN and other kernels")
for s in segments:
    print(f"  {s['kind']:>10}: {s['lh'] + s['other']:8.3f} = {s['lh']:7.3f} + {s['other']:7.3f}")
PY
[ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp "$LOGS/profile-$N.txt" "$LOGS/profile-$N.err" "$OUT"/ 2>/dev/null
exit $rc
