"""Phase (c): the retrieval task (retrieval.py) trained in the three regimes of regimes.py, with
accuracy on a fixed evaluation set, overall and by the distance between the planted pair and its
query, for: dense from scratch, Lighthouse (at the switch, evaluated with Lighthouse and, with no
resume, dense), Lighthouse then dense (after the dense resume) and Lighthouse only.

The model is its own, smaller one (the task needs an induction circuit, not a language model),
and so are the Lighthouse parameters: the context and topk are chosen so that a comparable share
of the tokens is kept at full resolution as in the language model at its longest context. The
number of steps is what fits the phase, from step times probed at the start of the phase.
"""
import statistics
import tempfile
import time

import retrieval
from regimes import RUNS, plan, regime_deadlines, run_regimes, _free
from trainer import RetrievalData, Trainer, TrainConfig


def probe_step_s(model_cfg, task, batch, mode, device, seed, steps=3):
    """Median seconds of a training step after the first (which creates the plans)."""
    tc = TrainConfig(seed=seed, steps=steps, batch=batch, seq_len=task.seq_len, warmup_steps=1, attention=mode)
    tr = Trainer(model_cfg, tc, RetrievalData(task), device)
    try:
        times = [tr.train_step()["step_seconds"] for _ in range(steps)]
    finally:
        del tr
        _free(device)
    return statistics.median(times[1:])


def accuracy_eval_fn(x, y, qpos, dist, seq_len, n_buckets):
    def fn(trainer, mode):
        loss, pred = trainer.evaluate(x, y, mode, predictions=True)
        acc = retrieval.accuracy_by_distance(pred, y, qpos, dist, seq_len, n_buckets)
        return {"loss": loss, "accuracy": acc["accuracy"], "by_distance": acc["by_distance"]}
    return fn


def selection_share(model_cfg, seq_len):
    """Entries Lighthouse keeps (docs/spec.md section 2) and tokens kept at full resolution."""
    c = model_cfg
    coarse = seq_len // c.pooling ** (c.levels - 1)
    s_sel = coarse + (c.levels - 1) * c.topk * c.pooling
    full = (c.topk // 128) * 128 * c.pooling
    return {"s_sel": s_sel, "s_sel_share": s_sel / seq_len, "full_resolution_tokens": full,
            "full_resolution_share": full / seq_len}


def run_retrieval(model_cfg, task, device, start, deadline, cfg, log=print):
    """cfg: dict with batch, lr, warmup_frac, lh_frac, eval_seqs, n_buckets, min_steps,
    max_steps, seed."""
    model_cfg.check_seq_len(task.seq_len)
    task.validate()
    t_dense = probe_step_s(model_cfg, task, cfg["batch"], "dense", device, cfg["seed"])
    t_lh = probe_step_s(model_cfg, task, cfg["batch"], "lighthouse", device, cfg["seed"])
    now = time.monotonic()
    steps, predicted = plan(deadline - now, t_dense, t_lh, cfg["lh_frac"], cfg["eval_seqs"], cfg["batch"],
                            cfg["min_steps"], cfg["max_steps"])
    info = {"task": task.to_dict(), "model": model_cfg.to_dict(), "chance": 1.0 / task.n_values,
            "probe_step_s": {"dense": t_dense, "lighthouse": t_lh},
            "selection": selection_share(model_cfg, task.seq_len)}
    log(f"  retrieval at N={task.seq_len}: dense {t_dense * 1e3:.1f} ms/step, Lighthouse "
        f"{t_lh * 1e3:.1f} ms/step -> {steps} steps")
    if not steps:
        return {"status": f"skipped: fewer than {cfg['min_steps']} steps fit {deadline - now:.0f} s", **info}
    lh_steps = max(1, int(round(cfg["lh_frac"] * steps)))
    tc = TrainConfig(seed=cfg["seed"], steps=steps, batch=cfg["batch"], seq_len=task.seq_len, lr=cfg["lr"],
                     warmup_steps=max(1, int(cfg["warmup_frac"] * steps)))
    x, y, qpos, dist = retrieval.eval_set(cfg["seed"], cfg["eval_seqs"], task)
    eval_fn = accuracy_eval_fn(x, y, qpos, dist, task.seq_len, cfg["n_buckets"])
    eval_at = {int(round(f * steps)) for f in (0.25, 0.5)} - {0}
    log(f"  {steps} steps of {cfg['batch']} x {task.seq_len} tokens, Lighthouse for {lh_steps}; predicted " +
        ", ".join(f"{k} {predicted[k]:.0f} s" for k in RUNS))
    with tempfile.TemporaryDirectory(prefix="lh-retrieval-") as tmp:
        res = run_regimes(model_cfg, tc, RetrievalData(task), lh_steps, eval_fn, eval_at, device, tmp,
                          regime_deadlines(now, deadline, predicted), log=log)
    res.update(status="done", train_config=tc.to_dict(), predicted_seconds=predicted,
               eval_sequences=cfg["eval_seqs"], lh_frac=cfg["lh_frac"], **info)
    return res
