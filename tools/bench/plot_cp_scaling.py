#!/usr/bin/env python3
"""Renders bench_cp_scaling JSON (one file per attention mode and N) as three panels against the
ring size W:

  1. throughput against one GPU, T1 / T_W (solid), and the ceiling without communication,
     T1 / T_compute (dashed), with the ideal W;
  2. scaling efficiency T1 / (W T_W) (solid) and compute efficiency T1 / (W T_compute)
     (dashed), with the 0.85 target;
  3. each rank's time against the ideal T1 / W, split into its computation alone and the exposed
     communication T_W - T_compute (one bar group per W, one bar per file).

    python3 tools/bench/plot_cp_scaling.py OUT.png lighthouse-1m.json dense-1m.json ...

Where a file has no W = 1 time (the library refuses T1 at that size), its numbers are relative to
the smallest W it measured, as the JSON says (baseline_world); the legend says so.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(data):
    c = data["config"]
    n = c["seq"]
    size = f"{n // (1 << 20)}M" if n % (1 << 20) == 0 else f"{n // 1024}K"
    text = f"{c['mode']} {size}"
    if data.get("baseline_world") not in (None, 1):
        text += f" (vs W={data['baseline_world']})"
    return text


def points(rows, key):
    pts = [(r["world"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    dst, srcs = sys.argv[1], sys.argv[2:]
    files = [json.load(open(s)) for s in srcs]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.6))
    worlds = sorted({r["world"] for d in files for r in d["rows"]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    for i, data in enumerate(files):
        rows, color, name = data["rows"], colors[i % len(colors)], label(data)
        base = data.get("baseline_world") or 1
        x, y = points(rows, "speedup")
        if x:
            ax1.plot(x, [v * base for v in y], "o-", color=color, label=f"{name}: ring")
        x, y = points(rows, "compute_efficiency")
        if x:
            ax1.plot(x, [v * w for v, w in zip(y, x)], "^--", color=color, alpha=0.7,
                     label=f"{name}: computation alone")
        x, y = points(rows, "efficiency")
        if x:
            ax2.plot(x, y, "o-", color=color, label=f"{name}: ring")
        x, y = points(rows, "compute_efficiency")
        if x:
            ax2.plot(x, y, "^--", color=color, alpha=0.7, label=f"{name}: computation alone")

    ax1.plot(worlds, worlds, ":", color="gray", label="ideal (W)")
    ax1.set_ylabel("throughput against one GPU")
    ax2.axhline(0.85, linestyle=":", color="gray", label="target 0.85")
    ax2.set_ylabel("efficiency T1 / (W T_W)")
    ax2.set_ylim(0, 1.15)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(worlds)
        ax.set_xticklabels([str(w) for w in worlds])
        ax.set_xlabel("ranks W (one GPU each)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)

    # Panel 3: per-rank time / ideal, stacked computation + exposed communication.
    ring_worlds = [w for w in worlds if w > 1]
    width = 0.8 / max(len(files), 1)
    for i, data in enumerate(files):
        rows = {r["world"]: r for r in data["rows"]}
        base = rows.get(data.get("baseline_world") or 1)
        if not base or base.get("ring_ms") is None:
            continue
        t_base = base["ring_ms"] * base["world"]
        comp, expo, pos = [], [], []
        for j, w in enumerate(ring_worlds):
            r = rows.get(w)
            if not r or r.get("compute_ms") is None:
                continue
            ideal = t_base / w
            pos.append(j + (i - (len(files) - 1) / 2) * width)
            comp.append(r["compute_ms"] / ideal)
            expo.append(max(r["exposed_ms"], 0) / ideal if r.get("exposed_ms") is not None else 0)
        if not pos:
            continue
        color = colors[i % len(colors)]
        ax3.bar(pos, comp, width, color=color, alpha=0.55, label=f"{label(data)}: computation")
        ax3.bar(pos, expo, width, bottom=comp, color=color, hatch="//", edgecolor="black",
                linewidth=0.3, label=f"{label(data)}: exposed communication")
    ax3.axhline(1.0, linestyle=":", color="gray")
    ax3.set_xticks(range(len(ring_worlds)))
    ax3.set_xticklabels([f"W={w}" for w in ring_worlds])
    ax3.set_ylabel("per-rank time / (T1 / W)")
    ax3.grid(True, axis="y", alpha=0.3)
    ax3.legend(fontsize=7)

    first = files[0]
    c = first["config"]
    title = (f"context parallelism, {first['gpu']} x{first['gpus']} ({first['transport']}): one "
             f"sequence, forward+backward, B={c['batch']} H={c['heads']} Hkv={c['kv_heads']} "
             f"D={c['dim']} {c['dtype']}")
    lh = [d["config"] for d in files if d["config"]["mode"] == "lighthouse"]
    if lh:
        title += f"; Lighthouse L={lh[0]['levels']} p={lh[0]['pooling']} topk={lh[0]['topk']}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print("wrote", dst)


if __name__ == "__main__":
    main()
