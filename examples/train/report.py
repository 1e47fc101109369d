#!/usr/bin/env python3
"""Writes summary.md (the tables) and the plots of a measure.py run from its results.json:

    python3 examples/train/report.py RESULTS_JSON [OUT_DIR]

Plots: loss_vs_tokens.png and loss_vs_time.png (training loss, smoothed, and held-out points of
each regime against tokens and against training wall-clock time), throughput.png (step time and
peak memory against context), retrieval.png (accuracy by distance, and the task's training loss).
Every number in summary.md is read from the JSON; nothing is typed by hand.
"""
import json
import os
import sys

REGIME_LABELS = {
    "dense": "dense from scratch",
    "lighthouse_then_dense": "Lighthouse, then dense resume",
    "lighthouse_only": "Lighthouse only",
}
# in the retrieval phase every regime starts from the common pretrained model
RETRIEVAL_LABELS = dict(REGIME_LABELS, dense="dense (from the common start)")
REGIME_STYLE = {"dense": ("tab:red", "-"), "lighthouse_then_dense": ("tab:blue", "-"),
                "lighthouse_only": ("tab:cyan", "--")}


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _final_eval(run, mode):
    hits = [e for e in run["evals"] if e["mode"] == mode and e["step"] == run["steps_done"]]
    return hits[-1] if hits else None


def _eval_at(run, step, mode):
    hits = [e for e in run["evals"] if e["mode"] == mode and e["step"] == step]
    return hits[-1] if hits else None


def _train_loss_tail(run, n=10):
    tail = [h["loss"] for h in run["history"][-n:]]
    return sum(tail) / len(tail) if tail else None


def throughput_table(th):
    lines = ["| N | attention | step (ms) | tokens/s | peak memory (GiB) | attention fwd+bwd (ms/layer) | "
             "attention share of step | status |", "|---|---|---|---|---|---|---|---|"]
    for r in th["rows"]:
        share = f"{100 * r['attn_share']:.1f}%" if "attn_share" in r else "-"
        lines.append(
            f"| {r['seq_len']} | {r['mode']} | {_fmt(r.get('step_ms_median'), '.1f')} | "
            f"{_fmt(r.get('tokens_per_s'), ',.0f')} | {_fmt(r.get('peak_mem_gib'), '.2f')} | "
            f"{_fmt(r.get('attn_fwdbwd_ms'), '.2f')} | {share} | {r.get('status')} |")
    if th.get("speedup"):
        lines += ["", "| N | step time dense / Lighthouse | attention dense / Lighthouse |", "|---|---|---|"]
        lines += [f"| {s['seq_len']} | {s['step_speedup']:.2f}x | {_fmt(s['attention_speedup'], '.2f')}x |"
                  for s in th["speedup"]]
    return lines


def regimes_table(res, metric, labels=REGIME_LABELS):
    """One row per regime: the metric at the switch (both modes) and at the end (both modes)."""
    runs, lh = res["runs"], res["lh_steps"]
    unit = "held-out loss (nats/byte)" if metric == "loss" else "accuracy"
    lines = [f"| regime | steps | tokens | train time (s) | {unit} at step {lh}: Lighthouse / dense | "
             f"at the end: Lighthouse / dense | final train loss (last 10 steps) |",
             "|---|---|---|---|---|---|---|"]
    for name in ("dense", "lighthouse_then_dense", "lighthouse_only"):
        run = runs.get(name)
        if not run:
            continue
        last = run["history"][-1] if run["history"] else {"tokens": 0, "train_seconds": 0.0}
        cells = []
        for step in (lh, run["steps_done"]):
            pair = [_eval_at(run, step, m) for m in ("lighthouse", "dense")]
            cells.append(" / ".join(_fmt(e[metric] if e else None, ".4f") for e in pair))
        early = " (stopped early)" if run.get("stopped_early") else ""
        lines.append(f"| {labels[name]}{early} | {run['steps_done']} | {last['tokens']:,} | "
                     f"{last['train_seconds']:.1f} | {cells[0]} | {cells[1]} | "
                     f"{_fmt(_train_loss_tail(run), '.4f')} |")
    d, l = runs.get("dense"), runs.get("lighthouse_then_dense")
    if d and l and d["history"] and l["history"]:
        lines += ["", f"Training time, dense from scratch / Lighthouse then dense: "
                  f"{d['history'][-1]['train_seconds'] / l['history'][-1]['train_seconds']:.2f}x "
                  f"(at {l['history'][-1]['tokens']:,} and {d['history'][-1]['tokens']:,} tokens)."]
    return lines


def retrieval_table(res):
    lines = []
    variants = [("dense", "dense", RETRIEVAL_LABELS["dense"]),
                ("lighthouse_then_dense", "lighthouse", "Lighthouse (at the switch)", res["lh_steps"]),
                ("lighthouse_then_dense", "dense", "Lighthouse weights, dense, no resume", res["lh_steps"]),
                ("lighthouse_then_dense", "dense", "Lighthouse, then dense resume"),
                ("lighthouse_only", "lighthouse", "Lighthouse only")]
    header = None
    for v in variants:
        run = res["runs"].get(v[0])
        if not run:
            continue
        e = _eval_at(run, v[3], v[1]) if len(v) > 3 else _final_eval(run, v[1])
        if not e:
            continue
        if header is None:
            header = [f"{b['lo']}-{b['hi']}" for b in e["by_distance"]]
            lines = ["| model (evaluated with) | step | accuracy | " + " | ".join(header) + " |",
                     "|---|---|---|" + "---|" * len(header)]
        cells = " | ".join(_fmt(b["accuracy"], ".3f") for b in e["by_distance"])
        lines.append(f"| {v[2]} ({v[1]}) | {e['step']} | {e['accuracy']:.3f} | {cells} |")
    return lines


def summary_markdown(results):
    env, out = results["environment"], []
    out += [f"# Training measurement ({results['preset']})", "",
            f"- device: {env.get('gpu') or env['device']}; torch {env['torch']}; "
            f"library {env.get('library_path') or env.get('LIGHTHOUSE_LIB')}",
            f"- corpus: sha256 {results['corpus']['fingerprint'][:16]}, {results['corpus']['train_bytes']:,} "
            f"train + {results['corpus']['heldout_bytes']:,} held-out bytes "
            f"({results['corpus']['train_files']} + {results['corpus']['heldout_files']} files) from "
            f"{results['corpus']['root']}",
            f"- model: {results['model']['num_params']:,} parameters, d_model {results['model']['d_model']}, "
            f"{results['model']['n_layers']} layers, {results['model']['n_heads']} heads / "
            f"{results['model']['n_kv_heads']} kv heads; Lighthouse L={results['model']['levels']} "
            f"p={results['model']['pooling']} topk={results['model']['topk']}",
            f"- time: {results.get('elapsed_s', '-')} s of a {results['time_budget_s']:.0f} s budget; phases: " +
            "; ".join(f"{k} {v.get('used_s', '-')} of {v.get('budget_s')} s ({v.get('status')})"
                      for k, v in results["phases"].items()), ""]
    th = results.get("throughput")
    if th and "rows" in th:
        out += ["## Throughput (batch 1)", ""] + throughput_table(th) + [""]
    lc = results.get("loss")
    if lc and lc.get("status") == "done":
        out += [f"## Loss at N = {lc['seq_len']} ({lc['steps']} steps, Lighthouse for {lc['lh_steps']}; "
                f"held-out: {lc['heldout']['windows']} windows, {lc['heldout']['tokens']:,} tokens)", ""]
        out += regimes_table(lc, "loss") + [""]
    elif lc:
        out += ["## Loss curves", "", f"{lc.get('status')}", ""]
    rt = results.get("retrieval")
    if rt and rt.get("status") == "done":
        t, sel = rt["task"], rt["selection"]
        out += [f"## Retrieval at N = {t['seq_len']} ({t['n_pairs']} pairs, {t['n_queries']} queries; "
                f"{rt['steps']} steps, Lighthouse for {rt['lh_steps']}; {rt['eval_sequences']} evaluation "
                f"sequences; Lighthouse keeps {sel['s_sel']} entries, {sel['full_resolution_tokens']} tokens "
                f"at full resolution)", "", "Accuracy by distance (tokens from the planted pair to its query); "
                f"chance is {rt.get('chance', 0):.4f}.", ""]
        pre, before = rt.get("pretrain"), rt.get("before_long_training")
        if pre:
            last = pre["evals"][-1] if pre["evals"] else {"accuracy": None}
            out += [f"Common start: dense pretraining at N = {pre['seq_len']} (batch {pre['batch']}), "
                    f"{pre['steps']} steps in {pre['train_seconds']:.1f} s, accuracy there "
                    f"{_fmt(last['accuracy'], '.3f')} (target {pre['target']}); at N = {t['seq_len']} before "
                    f"long training: {_fmt(before['dense']['accuracy'], '.3f')} dense, "
                    f"{_fmt(before['lighthouse']['accuracy'], '.3f')} Lighthouse.", ""]
        out += retrieval_table(rt) + [""] + regimes_table(rt, "accuracy", RETRIEVAL_LABELS) + [""]
    elif rt:
        out += ["## Retrieval", "", f"{rt.get('status')}", ""]
    return "\n".join(out)


def _smooth(ys, window):
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _figure(ncols, size):
    """A figure with ncols axes, drawn off-screen (matplotlib is imported only to plot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(1, ncols, figsize=size)


def _save(fig, path, title=None):
    import matplotlib.pyplot as plt
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_loss(res, x_key, xlabel, path, title):
    fig, ax = _figure(1, (7.5, 4.5))
    window = max(1, res["steps"] // 25)
    for name, run in res["runs"].items():
        color, style = REGIME_STYLE[name]
        xs = [h[x_key] / (1e6 if x_key == "tokens" else 1) for h in run["history"]]
        ax.plot(xs, _smooth([h["loss"] for h in run["history"]], window), style, color=color, lw=1.2,
                label=f"{REGIME_LABELS[name]} (train, mean of {window})")
        for mode, marker in (("dense", "o"), ("lighthouse", "^")):
            pts = [e for e in run["evals"] if e["mode"] == mode and "loss" in e]
            ax.plot([e[x_key] / (1e6 if x_key == "tokens" else 1) for e in pts], [e["loss"] for e in pts],
                    marker, color=color, ms=5, mfc="none" if mode == "lighthouse" else color,
                    label=f"{REGIME_LABELS[name]} held-out ({mode})" if pts else None)
    switch = [h for h in res["runs"].get("lighthouse_then_dense", {}).get("history", [])
              if h["step"] == res["lh_steps"]]
    if switch:
        ax.axvline(switch[0][x_key] / (1e6 if x_key == "tokens" else 1), color="gray", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats per byte)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_throughput(th, path, title):
    fig, (a1, a2) = _figure(2, (10, 4))
    for mode, color in (("dense", "tab:red"), ("lighthouse", "tab:blue")):
        rows = [r for r in th["rows"] if r["mode"] == mode and r.get("status") == "ok"]
        ns = [r["seq_len"] / 1024 for r in rows]
        a1.plot(ns, [r["step_ms_median"] for r in rows], "o-", color=color, label=f"{mode}: step")
        timed = [r for r in rows if "attn_share" in r]
        a1.plot([r["seq_len"] / 1024 for r in timed], [r["attn_share"] * r["step_ms_median"] for r in timed], "s--",
                color=color, mfc="none", label=f"{mode}: attention op alone x layers")
        a2.plot(ns, [r.get("peak_mem_gib") for r in rows], "o-", color=color, label=mode)
    if not any(r.get("peak_mem_gib") for r in th["rows"]):
        a2.text(0.5, 0.5, "no device memory to show (CPU run)", ha="center", va="center",
                transform=a2.transAxes)
    a1.set_yscale("log")
    a1.set_xlabel("context (K tokens)")
    a1.set_ylabel("ms per training step (batch 1)")
    a2.set_xlabel("context (K tokens)")
    a2.set_ylabel("peak allocated memory (GiB)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    _save(fig, path, title)


def plot_retrieval(rt, path, title):
    fig, (a1, a2) = _figure(2, (11, 4))
    lh = rt["lh_steps"]
    variants = [("dense", "dense", None, RETRIEVAL_LABELS["dense"], "tab:red", "o-"),
                ("lighthouse_then_dense", "lighthouse", lh, "Lighthouse (at the switch)", "tab:blue", "^--"),
                ("lighthouse_then_dense", "dense", lh, "Lighthouse weights, dense, no resume", "tab:purple", "v:"),
                ("lighthouse_then_dense", "dense", None, "Lighthouse, then dense resume", "tab:blue", "o-"),
                ("lighthouse_only", "lighthouse", None, "Lighthouse only", "tab:cyan", "^--")]
    for run_name, mode, step, label, color, style in variants:
        run = rt["runs"].get(run_name)
        e = run and (_eval_at(run, step, mode) if step is not None else _final_eval(run, mode))
        if not e:
            continue
        xs = [(b["lo"] + b["hi"]) / 2 / 1024 for b in e["by_distance"]]
        a1.plot(xs, [b["accuracy"] for b in e["by_distance"]], style, color=color,
                label=f"{label}: {e['accuracy']:.2f}")
    before = rt.get("before_long_training", {})
    for mode, style in (("dense", "o:"), ("lighthouse", "^:")):
        if mode in before:
            e = before[mode]
            a1.plot([(b["lo"] + b["hi"]) / 2 / 1024 for b in e["by_distance"]],
                    [b["accuracy"] for b in e["by_distance"]], style, color="gray",
                    label=f"common start, {mode}: {e['accuracy']:.2f}")
    a1.axhline(rt.get("chance", 0), color="gray", ls=":", lw=1)
    a1.set_ylim(-0.02, 1.02)
    a1.set_xlabel("distance from planted pair to query (K tokens)")
    a1.set_ylabel("accuracy")
    a1.legend(fontsize=7)
    window = max(1, rt["steps"] // 25)
    for name, run in rt["runs"].items():
        color, style = REGIME_STYLE[name]
        a2.plot([h["step"] for h in run["history"]], _smooth([h["loss"] for h in run["history"]], window), style,
                color=color, label=RETRIEVAL_LABELS[name])
    a2.axvline(lh, color="gray", ls=":", lw=1)
    a2.set_xlabel("step")
    a2.set_ylabel(f"answer loss (nats, mean of {window} steps)")
    a2.legend(fontsize=7)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    _save(fig, path, title)


def write_all(results, out_dir, log=print):
    with open(os.path.join(out_dir, "summary.md"), "w") as fh:
        fh.write(summary_markdown(results))
    env = results["environment"]
    dev = env.get("gpu") or env["device"]
    m = results["model"]
    what = f"{dev}, {m['num_params'] / 1e6:.1f}M params, d={m['d_model']} x{m['n_layers']}"
    made = []
    th = results.get("throughput")
    if th and th.get("rows"):
        plot_throughput(th, os.path.join(out_dir, "throughput.png"), f"{what}: training step, batch 1")
        made.append("throughput.png")
    lc = results.get("loss")
    if lc and lc.get("status") == "done":
        t = f"{what}, N={lc['seq_len']}: Lighthouse for {lc['lh_steps']} of {lc['steps']} steps, then dense"
        plot_loss(lc, "tokens", "tokens (millions)", os.path.join(out_dir, "loss_vs_tokens.png"), t)
        plot_loss(lc, "train_seconds", "training time (s, evaluations excluded)",
                  os.path.join(out_dir, "loss_vs_time.png"), t)
        made += ["loss_vs_tokens.png", "loss_vs_time.png"]
    rt = results.get("retrieval")
    if rt and rt.get("status") == "done":
        plot_retrieval(rt, os.path.join(out_dir, "retrieval.png"),
                       f"{dev}: retrieval at N={rt['task']['seq_len']}, {rt['steps']} steps "
                       f"(Lighthouse for {rt['lh_steps']})")
        made.append("retrieval.png")
    log(f"wrote summary.md and {', '.join(made) or 'no plots'} in {out_dir}")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(os.path.abspath(src))
    with open(src) as fh:
        results = json.load(fh)
    os.makedirs(out, exist_ok=True)
    write_all(results, out)


if __name__ == "__main__":
    main()
