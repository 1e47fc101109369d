#!/usr/bin/env python3
"""Writes the shape table of `lighthouse-bench --shape-table 1` JSON as Markdown: the start-up
breakdown and one row per (shape, B, N), ready for docs/perf-log.md; --compact gives the fewer
columns of the README's table.

    python3 tools/bench/shape_table.py lighthouse-shapes.json [--compact] > table.md
"""
import json
import sys


def ms(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def kib(n):
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def startup_table(data):
    s = data.get("startup")
    if not s:
        return []
    out = [f"Plan start-up at H=8 Hkv=8 D=128 bf16 B=1 N={kib(data['startup_seq'])} (ms; "
           "cold = the process's first plan on an empty kernel cache, disk = a new context with "
           "the kernels cached, memory = a second plan of the same context):", "",
           "| case | total | kernels | cuDNN open + handle | cuDNN graphs | heuristics | "
           "execution plans | other | cuDNN plans reused |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    phases = ["kernels", "cudnn_handle", "cudnn_graph", "cudnn_heuristics", "cudnn_plan"]
    for case in ("cold", "disk", "memory"):
        c = s.get(case) or {}
        total = c.get("total_ms")
        parts = [c.get(p + "_ms") for p in phases]
        other = None if total is None else total - sum(p for p in parts if p is not None)
        cells = [ms(total, 1)] + [ms(p, 1) for p in parts] + [ms(other, 1), str(c.get("cudnn_reused", "-"))]
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    return out + [""]


def shape_rows(data, compact):
    if compact:
        out = ["| H / Hkv / D | dtype | B | N | LH f+b | floor f+b | f+b / floor | fwd / floor | dense / LH |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    else:
        out = ["| H | Hkv | D | dtype | B | N | S_sel | LH fwd | floor fwd | fwd/floor | LH f+b | "
               "floor f+b | f+b/floor | dense fwd | dense f+b | dense/LH |",
               "| " + " | ".join(["---"] * 16) + " |"]
    for r in data["rows"]:
        lh, dense = r.get("lighthouse_fwdbwd_ms"), r.get("dense_fwdbwd_ms")
        ratio = "-" if not (lh and dense) else f"{dense / lh:.1f}"
        fb = r.get("fwdbwd_over_floor")
        fb = "-" if fb is None else f"**{fb:.3f}**" if fb <= 1.15 else f"{fb:.3f}"
        fw = ms(r.get("fwd_over_floor"), 3)
        if compact:
            cells = [f"{r['heads']} / {r['kv_heads']} / {r['dim']}", r["dtype"], str(r["batch"]),
                     kib(r["seq"]), ms(lh), ms(r.get("floor_fwdbwd_ms")), fb, fw, ratio]
        else:
            cells = [str(r["heads"]), str(r["kv_heads"]), str(r["dim"]), r["dtype"], str(r["batch"]),
                     kib(r["seq"]), str(r.get("s_sel", "-")), ms(r.get("lighthouse_fwd_ms")),
                     ms(r.get("floor_fwd_ms")), fw, ms(lh), ms(r.get("floor_fwdbwd_ms")), fb,
                     ms(r.get("dense_fwd_ms")), ms(dense), ratio]
        out.append("| " + " | ".join(cells) + " |")
        if r.get("error"):
            out.append(f"| not run: {r['error']} |" + " |" * (len(cells) - 1))
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    compact = "--compact" in sys.argv
    if len(args) != 1:
        sys.exit(__doc__)
    data = json.load(open(args[0]))
    lines = [f"{data['gpu']}, L={data['levels']} p={data['pooling']} topk={data['topk']}, ms, "
             f"median of {data['repeats']} (dense: of 3); copy {data['copy_bandwidth_gbs']:.0f} GB/s; "
             "bold: f+b within 1.15x of the floor.", ""]
    if not compact:
        lines += startup_table(data)
    lines += shape_rows(data, compact)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
