#!/usr/bin/env python3
"""Renders `lighthouse-bench --shape-table 1` JSON: Lighthouse over its floor (forward+backward
and forward) for every (shape, B, N) of the table, with the 1.15x line of the targets.

    python3 tools/bench/plot_shapes.py lighthouse-shapes.json docs/shapes.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(r):
    return f"{r['heads']}/{r['kv_heads']}/{r['dim']}" + (" fp16" if r["dtype"] == "fp16" else "")


def main():
    src, dst = sys.argv[1], sys.argv[2]
    data = json.load(open(src))
    rows = data["rows"]
    shapes = list(dict.fromkeys(label(r) for r in rows))
    series = sorted({(r["batch"], r["seq"]) for r in rows})
    width = 0.8 / max(1, len(series))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in [(axes[0], "fwdbwd_over_floor", "forward + backward / floor"),
                           (axes[1], "fwd_over_floor", "forward / floor")]:
        for j, (b, n) in enumerate(series):
            xs, ys = [], []
            for i, s in enumerate(shapes):
                for r in rows:
                    if label(r) == s and r["batch"] == b and r["seq"] == n and r.get(key) is not None:
                        xs.append(i + (j - (len(series) - 1) / 2) * width)
                        ys.append(r[key])
            ax.bar(xs, ys, width, label=f"B={b} N={n // 1024}K")
        ax.axhline(1.15, color="k", linestyle="--", linewidth=1, label="1.15x")
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(shapes, fontsize=8)
        ax.set_xlabel("H / Hkv / D")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0.9, max([1.5] + [r.get(key) or 0 for r in rows]) + 0.05)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("Lighthouse time / floor time")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{data['gpu']}: L={data['levels']} p={data['pooling']} topk={data['topk']}, "
                 "floor = cuDNN on S_sel tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print("wrote", dst)


if __name__ == "__main__":
    main()
