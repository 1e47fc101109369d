"""Phase (a): step time, tokens per second and peak memory of the same model, dense against
Lighthouse, at several context lengths; and the attention op alone at the same shapes, for the
share of the step spent in attention.

Every configuration is a fresh model (same seed) trained for `warmup` steps (the first creates
the library's plans: JIT-compiled kernels, cuDNN graphs) and then `steps` timed steps, each
bracketed by a device synchronisation. Peak memory is torch's allocator peak over the timed
steps (torch.cuda.max_memory_allocated, after a reset): the library takes its workspaces from the
caller, so they are in it. device_used_gib (total minus free device memory after the timed
steps) adds torch's cache, the CUDA context and what the library or cuDNN allocated themselves.
The attention op alone is timed as forward and forward + backward on random inputs of the
model's q, k, v shapes; n_layers times that over the step time is the share.

A configuration runs only if its predicted time (from the same mode at a shorter context: the
attention part scaled by N^2 in dense mode, everything else by N) fits what is left of the
phase; one that does not is recorded as skipped, one that runs out of memory as oom.
"""
import gc
import statistics
import time

import torch

from model import compute_dtype
from trainer import Trainer, TrainConfig

import lighthouse
import lighthouse.torch as lht


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_attention(model_cfg, seq_len, mode, device, reps):
    """Median forward and forward+backward ms of one attention call at the model's shapes."""
    c, dt = model_cfg, compute_dtype(device)
    g = torch.Generator(device="cpu").manual_seed(1)
    def rand(h):
        return torch.randn(1, seq_len, h, c.head_dim, generator=g).to(device=device, dtype=dt).requires_grad_()
    q, k, v = rand(c.n_heads), rand(c.n_kv_heads), rand(c.n_kv_heads)
    dout = torch.randn(1, seq_len, c.n_heads, c.head_dim, generator=g).to(device=device, dtype=dt)
    kw = dict(mode=mode, levels=c.levels, pooling=c.pooling, topk=c.topk, scorer=c.scorer, layout="bnhd")
    fwd, fb = [], []
    for i in range(reps + 1):  # the first call of each kind warms up
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            lht.attention(q, k, v, **kw)
        _sync(device)
        t1 = time.perf_counter()
        out = lht.attention(q, k, v, **kw)
        out.backward(dout)
        _sync(device)
        t2 = time.perf_counter()
        q.grad = k.grad = v.grad = None
        if i:
            fwd.append(t1 - t0)
            fb.append(t2 - t1)
    del q, k, v, dout, out
    return 1e3 * statistics.median(fwd), 1e3 * statistics.median(fb)


def predict_step_s(rows, mode, seq_len, n_layers):
    """Step time predicted from the longest measured context of the same mode, or None: the
    attention part (n_layers x the op alone) scaled by N^2 in dense mode, the rest by N."""
    done = [r for r in rows if r["mode"] == mode and r["status"] == "ok" and r["seq_len"] < seq_len]
    if not done:
        return None
    r = max(done, key=lambda r: r["seq_len"])
    ratio = seq_len / r["seq_len"]
    # without the op's own time, all of a dense step is taken as quadratic (over-predicts)
    attn = min(n_layers * r.get("attn_fwdbwd_ms", float("inf")), r["step_ms_median"])
    rest = r["step_ms_median"] - attn
    return (rest * ratio + attn * (ratio ** 2 if mode == "dense" else ratio)) / 1e3


def measure_one(model_cfg, corpus_data, seq_len, mode, device, warmup, steps, attn_reps, seed, log):
    row = {"seq_len": seq_len, "mode": mode, "batch": 1}
    tc = TrainConfig(seed=seed, steps=warmup + steps, batch=1, seq_len=seq_len, warmup_steps=1, attention=mode)
    tr = Trainer(model_cfg, tc, corpus_data, device)
    try:
        t0 = time.monotonic()
        for _ in range(warmup):
            tr.train_step()
        row["warmup_s"] = round(time.monotonic() - t0, 2)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = [tr.train_step()["step_seconds"] for _ in range(steps)]
        if device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
            free, total = torch.cuda.mem_get_info(device)  # also what was allocated outside torch
            row["device_used_gib"] = (total - free) / 2**30
        med = statistics.median(times)
        row.update(step_ms_median=1e3 * med, step_ms=[1e3 * t for t in times],
                   tokens_per_s=seq_len / med, final_loss=tr.history[-1]["loss"])
    finally:
        del tr
        _free(device)
    row["status"] = "ok"
    try:  # the step times stand even if the op alone cannot be timed
        fwd, fb = time_attention(model_cfg, seq_len, mode, device, attn_reps)
        row.update(attn_fwd_ms=fwd, attn_fwdbwd_ms=fb,
                   attn_share=model_cfg.n_layers * fb / row["step_ms_median"])
        attn = f"attention {fb:7.2f} ms/layer ({100 * row['attn_share']:4.1f}% of the step)"
    except Exception as e:
        row["attn_error"] = f"{type(e).__name__}: {e}"
        attn = f"attention op alone failed: {row['attn_error']}"
        _free(device)
    log(f"  N={seq_len:>6} {mode:>10}: step {row['step_ms_median']:8.1f} ms, "
        f"{row['tokens_per_s'] / 1e3:8.1f} Ktok/s, peak {row.get('peak_mem_gib', 0):5.1f} GiB, {attn}")
    return row


def run_throughput(model_cfg, corpus_data, contexts, device, deadline, warmup=2, steps=3,
                   attn_reps=3, seed=0, log=print):
    rows = []
    for n in contexts:
        for mode in ("lighthouse", "dense"):
            if mode == "lighthouse":
                try:
                    model_cfg.check_seq_len(n)
                except ValueError as e:
                    rows.append({"seq_len": n, "mode": mode, "status": f"skipped: {e}"})
                    continue
            est = predict_step_s(rows, mode, n, model_cfg.n_layers)
            left = deadline - time.monotonic()
            # warmup + timed steps + the attention op's calls, about 1/n_layers of a step each
            cost = None if est is None else est * (warmup + steps + 1)
            if left <= 0 or (cost is not None and cost > left):
                why = (f"skipped: predicted {cost:.0f} s, {max(left, 0):.0f} s left" if cost
                       else "skipped: no time left")
                rows.append({"seq_len": n, "mode": mode, "status": why})
                log(f"  N={n:>6} {mode:>10}: {why}")
                continue
            try:
                rows.append(measure_one(model_cfg, corpus_data, n, mode, device, warmup, steps,
                                        attn_reps, seed, log))
            except (torch.OutOfMemoryError, lighthouse.OutOfMemoryError) as e:
                rows.append({"seq_len": n, "mode": mode, "status": "oom", "error": str(e).splitlines()[0]})
                log(f"  N={n:>6} {mode:>10}: out of memory")
                _free(device)
            except Exception as e:  # a failed configuration must not cost the others
                rows.append({"seq_len": n, "mode": mode, "status": "error", "error": f"{type(e).__name__}: {e}"})
                log(f"  N={n:>6} {mode:>10}: error {type(e).__name__}: {e}")
                _free(device)
    return {"status": "done", "rows": rows, "speedup": speedups(rows), "warmup_steps": warmup, "timed_steps": steps,
            "attention_reps": attn_reps}


def speedups(rows):
    ok = {(r["seq_len"], r["mode"]): r for r in rows if r.get("status") == "ok"}
    out = []
    for n in sorted({r["seq_len"] for r in rows}):
        d, l = ok.get((n, "dense")), ok.get((n, "lighthouse"))
        if d and l:
            both = "attn_fwdbwd_ms" in d and "attn_fwdbwd_ms" in l
            out.append({"seq_len": n, "step_speedup": d["step_ms_median"] / l["step_ms_median"],
                        "attention_speedup": d["attn_fwdbwd_ms"] / l["attn_fwdbwd_ms"] if both else None})
    return out
