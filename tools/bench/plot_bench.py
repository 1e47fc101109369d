#!/usr/bin/env python3
"""Renders lighthouse-bench JSON as a log-log plot of forward+backward latency against N for
Lighthouse, dense cuDNN and the floor (cuDNN on a sequence of the selected length).

    python3 tools/bench/plot_bench.py lighthouse-bench.json docs/bench.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows, key):
    pts = [(r["seq"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    data = json.load(open(src))
    rows = data["rows"]
    c = data["config"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in [
        ("dense_fwdbwd_ms", "dense cuDNN", "s-"),
        ("lighthouse_fwdbwd_ms", "Lighthouse (liblighthouse)", "o-"),
        ("floor_fwdbwd_ms", "floor: cuDNN on S_sel tokens", "^--"),
    ]:
        x, y = series(rows, key)
        if x:
            ax.plot(x, y, style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("forward + backward (ms)")
    ax.set_title(f"{data['gpu']}: B={c['batch']} H={c['heads']} D={c['dim']} {c['dtype']}, "
                 f"L={c['levels']} p={c['pooling']} topk={c['topk']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print("wrote", dst)


if __name__ == "__main__":
    main()
