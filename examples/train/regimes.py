"""The three training regimes compared at equal tokens, shared by the loss-curve and retrieval
phases:

- lighthouse_then_dense: Lighthouse for the first `lh_steps` steps, a checkpoint, then the
  checkpoint resumed with dense attention for the rest (the dense resume);
- dense: dense attention from scratch for all steps;
- lighthouse_only: the same checkpoint resumed with Lighthouse for the rest (what the dense
  resume adds), run last and only when the time left allows it.

All three share the seed (same initial weights), the batches (data are a function of the step)
and the learning-rate schedule (warmup and cosine over all steps). Each run has a deadline; a
run that reaches it stops, is marked `stopped_early`, and still gets its final evaluation. When
the first run stops early, the others stop at the same step, so the tokens stay equal.
"""
import gc
import os
import time
from dataclasses import replace

import torch

from trainer import Trainer

HISTORY_KEYS = ("step", "tokens", "loss", "lr", "mode", "train_seconds")
SAFETY = 1.15        # step times vary a little between configurations and runs
FIXED_S = 6.0        # per run: the first step's plan creation, a checkpoint save or load


def plan(seconds, t_dense, t_lh, lh_frac, n_eval_windows, batch, min_steps, max_steps):
    """Steps S (or 0) and the predicted seconds of each run for a phase of `seconds`."""
    t_dense, t_lh = SAFETY * t_dense, SAFETY * t_lh
    per_eval = n_eval_windows * t_dense / 3 / batch        # a forward pass is about 1/3 of a step
    n_evals = {"lighthouse_then_dense": 5, "dense": 4, "lighthouse_only": 2}
    rate = {"lighthouse_then_dense": lh_frac * t_lh + (1 - lh_frac) * t_dense,
            "dense": t_dense, "lighthouse_only": (1 - lh_frac) * t_lh}
    fixed = sum(FIXED_S + n * per_eval for n in n_evals.values())
    steps = int(max(0.0, seconds - fixed) / sum(rate.values()))
    steps = min(steps, max_steps)
    if steps < min_steps:
        return 0, {}
    predicted = {k: FIXED_S + n_evals[k] * per_eval + steps * rate[k] for k in rate}
    predicted["one_eval"] = per_eval
    return steps, predicted


RUNS = ("lighthouse_then_dense", "dense", "lighthouse_only")


def regime_deadlines(start, deadline, predicted):
    """Deadlines of the three runs. The first (Lighthouse, then the dense resume) may use the
    phase up to the time the dense run is predicted to need (with the plan's margin), so that
    slack anywhere in the plan goes to it; the dense run may use the phase up to its final
    evaluation; the optional Lighthouse-only branch starts only with its predicted time left
    (run_regimes checks `lighthouse_only_needs_s`)."""
    first = deadline - predicted["dense"] - predicted["one_eval"]
    return {"lighthouse_then_dense": max(first, start + predicted["lighthouse_then_dense"]),
            "dense": deadline - predicted["one_eval"],
            "lighthouse_only": deadline - predicted["one_eval"],
            "lighthouse_only_needs_s": predicted["lighthouse_only"]}


def _free(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _record(label, tr, evals, eval_fn, modes, log):
    for mode in modes:
        t0 = time.monotonic()
        metrics = eval_fn(tr, mode)
        evals.append({"step": tr.step, "tokens": tr.tokens, "train_seconds": tr.train_seconds,
                      "mode": mode, "eval_seconds": time.monotonic() - t0, **metrics})
        log(f"  {label}: step {tr.step}, {tr.tokens / 1e6:.2f} M tokens, train {tr.train_seconds:.1f} s, "
            f"held-out ({mode}) " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                              if isinstance(v, float)))


def _run(label, tr, until, eval_at, eval_modes, eval_fn, deadline, log, evals=None):
    """Trains `tr` to `until`, evaluating at the steps of `eval_at` in eval_modes(step)."""
    evals = [] if evals is None else evals
    stopped = False
    t0 = time.monotonic()
    for point in sorted(p for p in set(eval_at) | {until} if tr.step < p <= until):
        stopped = tr.run(point, deadline=deadline)
        if stopped or tr.step == until or point in eval_at:
            _record(label, tr, evals, eval_fn, eval_modes(tr.step), log)
        if stopped:
            break
    return {"label": label, "steps_planned": until, "steps_done": tr.step, "stopped_early": stopped,
            "wall_seconds": time.monotonic() - t0,
            "history": [{k: r[k] for k in HISTORY_KEYS} for r in tr.history], "evals": evals}


def run_regimes(model_cfg, train_cfg, data, lh_steps, eval_fn, eval_at, device, ckpt_dir,
                deadlines, log=print, init_state=None):
    """train_cfg: the schedule of all runs (steps, lr, seed, batch, seq_len); eval_fn(trainer,
    mode) -> metrics dict; eval_at: steps to evaluate at (the end and lh_steps always are);
    deadlines: dict run name -> time.monotonic() deadline (lighthouse_only: None to skip it; it
    starts only if `lighthouse_only_needs_s` seconds are left before its deadline); init_state:
    model weights every run starts from (else the seed's initialisation)."""
    steps = train_cfg.steps
    eval_at = set(eval_at) | {lh_steps, steps}
    out = {"steps": steps, "lh_steps": lh_steps, "eval_at": sorted(eval_at), "runs": {}}
    ckpt = os.path.join(ckpt_dir, "switch.pt")

    # Lighthouse up to the switch, then the checkpoint resumed dense.
    cfg_lh = replace(train_cfg, attention="lighthouse", dense_from_step=None)
    tr = Trainer(model_cfg, cfg_lh, data, device, log=log)
    if init_state is not None:
        tr.model.load_state_dict(init_state)
    evals = []
    first = _run("lighthouse", tr, lh_steps, eval_at,
                 lambda s: ["lighthouse", "dense"] if s == lh_steps else ["lighthouse"],
                 eval_fn, deadlines["lighthouse_then_dense"], log, evals)
    switched = not first["stopped_early"]
    if switched:
        tr.save(ckpt)
    del tr
    _free(device)
    if switched:
        cfg_resume = replace(train_cfg, attention="lighthouse", dense_from_step=lh_steps)
        tr = Trainer(model_cfg, cfg_resume, data, device, log=log)
        tr.load(ckpt)
        res = _run("lighthouse_then_dense", tr, steps, eval_at, lambda s: ["dense"], eval_fn,
                   deadlines["lighthouse_then_dense"], log, evals)
        del tr
        _free(device)
    else:
        res = dict(first, label="lighthouse_then_dense")
    res["steps_planned"] = steps
    out["runs"]["lighthouse_then_dense"] = res

    # A first run cut short by its deadline sets the length of the others: tokens stay equal.
    until = res["steps_done"]
    if until < steps:
        log(f"  the other runs stop at step {until} as well, for equal tokens")
    out["steps_done"] = until
    tr = Trainer(model_cfg, replace(train_cfg, attention="dense", dense_from_step=None), data, device, log=log)
    if init_state is not None:
        tr.model.load_state_dict(init_state)
    out["runs"]["dense"] = _run("dense", tr, until, eval_at, lambda s: ["dense"], eval_fn,
                                deadlines["dense"], log)
    del tr
    _free(device)

    lh_only = deadlines.get("lighthouse_only")
    needs = deadlines.get("lighthouse_only_needs_s", 0.0)
    if switched and lh_only is not None and lh_only - time.monotonic() >= needs:
        tr = Trainer(model_cfg, cfg_lh, data, device, log=log)
        tr.load(ckpt)
        evals = [e for e in out["runs"]["lighthouse_then_dense"]["evals"] if e["step"] <= lh_steps]
        out["runs"]["lighthouse_only"] = _run("lighthouse_only", tr, until, eval_at,
                                              lambda s: ["lighthouse", "dense"] if s == until else ["lighthouse"],
                                              eval_fn, lh_only, log, evals)
        del tr
        _free(device)
    elif switched:
        log(f"  lighthouse_only: skipped, fewer than {needs:.0f} s left")
    if os.path.exists(ckpt):
        os.remove(ckpt)
    return out
