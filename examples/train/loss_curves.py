"""Phase (b): loss curves at one context, dense from scratch against Lighthouse for most steps
then a dense resume, at equal tokens, with held-out losses (regimes.py runs the regimes).

The context is the longest of the candidates whose runs fit the phase's time with at least
`min_steps` steps, and the number of steps is what fits: both come from the step times phase (a)
measured for the same model (or predicted from a shorter context), times a safety factor, plus
the evaluations and a fixed allowance per run for plan creation and the checkpoint.
"""
import tempfile

import numpy as np

from bench_throughput import predict_step_s
from regimes import RUNS, plan, regime_deadlines, run_regimes
from trainer import TrainConfig


def step_times(throughput_rows, seq_len, n_layers):
    """(dense, lighthouse) step seconds at seq_len: measured, else predicted, else None."""
    out = []
    for mode in ("dense", "lighthouse"):
        hit = [r for r in throughput_rows
               if r["seq_len"] == seq_len and r["mode"] == mode and r["status"] == "ok"]
        out.append(hit[0]["step_ms_median"] / 1e3 if hit
                   else predict_step_s(throughput_rows, mode, seq_len, n_layers))
    return out


def heldout_eval_fn(x, y):
    def fn(trainer, mode):
        return {"loss": trainer.evaluate(x, y, mode)}
    return fn


def run_loss_curves(model_cfg, corpus, corpus_data, throughput_rows, candidates, device, start,
                    deadline, cfg, log=print):
    """cfg: dict with lr, warmup_frac, lh_frac, eval_windows, min_steps, max_steps, seed, batch."""
    seconds = deadline - start
    chosen = None
    for n in sorted(candidates, reverse=True):
        t_dense, t_lh = step_times(throughput_rows, n, model_cfg.n_layers)
        if t_dense is None or t_lh is None:
            log(f"  N={n}: no step time measured or predictable, not a candidate")
            continue
        steps, predicted = plan(seconds, t_dense, t_lh, cfg["lh_frac"], cfg["eval_windows"], cfg["batch"],
                                cfg["min_steps"], cfg["max_steps"])
        log(f"  N={n}: dense {t_dense * 1e3:.0f} ms/step, Lighthouse {t_lh * 1e3:.0f} ms/step -> "
            f"{steps} steps fit {seconds:.0f} s" + ("" if steps else f" (fewer than {cfg['min_steps']})"))
        if steps:
            chosen = (n, steps, predicted, t_dense, t_lh)
            break
    if chosen is None:
        return {"status": "skipped: no context fits the time left", "seconds": seconds}
    n, steps, predicted, t_dense, t_lh = chosen
    lh_steps = max(1, int(round(cfg["lh_frac"] * steps)))
    tc = TrainConfig(seed=cfg["seed"], steps=steps, batch=cfg["batch"], seq_len=n, lr=cfg["lr"],
                     warmup_steps=max(1, int(cfg["warmup_frac"] * steps)))
    x, y = corpus.heldout_windows(cfg["eval_windows"], n)
    eval_at = {int(round(f * steps)) for f in (0.25, 0.5)} - {0}
    deadlines = regime_deadlines(start, deadline, predicted)
    log(f"  loss curves at N={n}: {steps} steps ({steps * n * cfg['batch'] / 1e6:.1f} M tokens per run), "
        f"Lighthouse for {lh_steps}, then dense; predicted " +
        ", ".join(f"{k} {predicted[k]:.0f} s" for k in RUNS))
    with tempfile.TemporaryDirectory(prefix="lh-train-") as tmp:
        res = run_regimes(model_cfg, tc, corpus_data, lh_steps, heldout_eval_fn(x, y), eval_at, device,
                          tmp, deadlines, log=log)
    res.update(status="done", seq_len=n, batch=cfg["batch"], train_config=tc.to_dict(),
               predicted_seconds=predicted, planned_from_step_s={"dense": t_dense, "lighthouse": t_lh},
               heldout={"windows": cfg["eval_windows"], "tokens": int(np.prod(y.shape))},
               lh_frac=cfg["lh_frac"])
    return res
