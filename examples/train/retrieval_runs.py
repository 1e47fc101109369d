"""Phase (c): the retrieval task (retrieval.py) trained in the three regimes of regimes.py, with
accuracy on a fixed evaluation set, overall and by the distance between the planted pair and its
query, for: dense from scratch, Lighthouse (at the switch, evaluated with Lighthouse and, with no
resume, dense), Lighthouse then dense (after the dense resume) and Lighthouse only.

All regimes start from one common model, pretrained densely on the same task at a short context
(`pretrain_len`) until it answers (`pretrain_target` accuracy) or its share of the phase is
spent. From scratch at N = 8192 a small model needs thousands of steps before attention finds the
planted token at all: at the start attention is spread evenly, so the pair's part of a query's
output, and with it the learning signal, is about 1/N of the whole (CPU trials: about 150 steps
at N = 256 before the loss left chance). Learnt at a short context, where that signal is strong,
the circuit then meets the long context in every regime alike, and what the regimes change is
whether attention keeps reaching the planted token: the question this phase asks. The
pretrained model's dense accuracy at N before any long training is reported too (the circuit's
length generalisation under the large rotary base).

The model is its own, smaller one, and so are the Lighthouse parameters: the context and topk
keep a comparable share of the tokens at full resolution as the language model at its longest
context. The number of steps is what fits the phase, from step times probed before the regimes.
"""
import statistics
import tempfile
import time
from dataclasses import replace

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


def pretrain_short(model_cfg, task, device, deadline, cfg, log):
    """Dense training at pretrain_len until the evaluation accuracy reaches pretrain_target (checked
    every pretrain_check steps) or the deadline passes; -> (model weights on the CPU, report)."""
    short = replace(task, seq_len=cfg["pretrain_len"])
    tc = TrainConfig(seed=cfg["seed"], steps=cfg["pretrain_max_steps"], batch=cfg["pretrain_batch"],
                     seq_len=short.seq_len, lr=cfg["lr"], warmup_steps=max(1, cfg["pretrain_max_steps"] // 50),
                     attention="dense")
    tr = Trainer(model_cfg, tc, RetrievalData(short), device)
    x, y, qpos, dist = retrieval.eval_set(cfg["seed"], cfg["eval_seqs"], short)
    evaluate = accuracy_eval_fn(x, y, qpos, dist, short.seq_len, cfg["n_buckets"])
    evals, acc = [], 0.0
    while tr.step < tc.steps and acc < cfg["pretrain_target"] and time.monotonic() < deadline:
        tr.run(min(tr.step + cfg["pretrain_check"], tc.steps), deadline=deadline)
        e = evaluate(tr, "dense")
        acc = e["accuracy"]
        evals.append({"step": tr.step, "tokens": tr.tokens, "train_seconds": tr.train_seconds,
                      "loss": e["loss"], "accuracy": acc})
    log(f"  pretraining at N={short.seq_len}: {tr.step} steps, {tr.train_seconds:.1f} s, accuracy {acc:.3f} "
        f"(target {cfg['pretrain_target']})")
    weights = {k: v.detach().cpu().clone() for k, v in tr.model.state_dict().items()}
    report = {"seq_len": short.seq_len, "batch": tc.batch, "steps": tr.step, "train_seconds": tr.train_seconds,
              "target": cfg["pretrain_target"], "reached": acc >= cfg["pretrain_target"], "evals": evals,
              "history": [{k: r[k] for k in ("step", "tokens", "loss", "train_seconds")} for r in tr.history]}
    del tr
    _free(device)
    return weights, report


def run_retrieval(model_cfg, task, device, start, deadline, cfg, log=print):
    """cfg: dict with batch, lr, warmup_frac, lh_frac, eval_seqs, n_buckets, min_steps,
    max_steps, seed, and the short pretraining's pretrain_len, pretrain_batch, pretrain_max_steps,
    pretrain_target, pretrain_check, pretrain_share (of the phase's time)."""
    model_cfg.check_seq_len(task.seq_len)
    task.validate()
    info = {"task": task.to_dict(), "model": model_cfg.to_dict(), "chance": 1.0 / task.n_values,
            "selection": selection_share(model_cfg, task.seq_len)}
    init, info["pretrain"] = pretrain_short(model_cfg, task, device,
                                            start + cfg["pretrain_share"] * (deadline - start), cfg, log)
    x, y, qpos, dist = retrieval.eval_set(cfg["seed"], cfg["eval_seqs"], task)
    eval_fn = accuracy_eval_fn(x, y, qpos, dist, task.seq_len, cfg["n_buckets"])
    probe = TrainConfig(seed=cfg["seed"], steps=1, batch=cfg["batch"], seq_len=task.seq_len)
    tr = Trainer(model_cfg, probe, RetrievalData(task), device)
    tr.model.load_state_dict(init)
    info["before_long_training"] = {mode: eval_fn(tr, mode) for mode in ("dense", "lighthouse")}
    del tr
    _free(device)
    log("  the pretrained model at N={}: accuracy {:.3f} (dense), {:.3f} (Lighthouse)".format(
        task.seq_len, *(info["before_long_training"][m]["accuracy"] for m in ("dense", "lighthouse"))))

    t_dense = probe_step_s(model_cfg, task, cfg["batch"], "dense", device, cfg["seed"])
    t_lh = probe_step_s(model_cfg, task, cfg["batch"], "lighthouse", device, cfg["seed"])
    info["probe_step_s"] = {"dense": t_dense, "lighthouse": t_lh}
    now = time.monotonic()
    steps, predicted = plan(deadline - now, t_dense, t_lh, cfg["lh_frac"], cfg["eval_seqs"], cfg["batch"],
                            cfg["min_steps"], cfg["max_steps"])
    log(f"  retrieval at N={task.seq_len}: dense {t_dense * 1e3:.1f} ms/step, Lighthouse "
        f"{t_lh * 1e3:.1f} ms/step -> {steps} steps")
    if not steps:
        return {"status": f"skipped: fewer than {cfg['min_steps']} steps fit {deadline - now:.0f} s", **info}
    lh_steps = max(1, int(round(cfg["lh_frac"] * steps)))
    tc = TrainConfig(seed=cfg["seed"], steps=steps, batch=cfg["batch"], seq_len=task.seq_len, lr=cfg["lr"],
                     warmup_steps=max(1, int(cfg["warmup_frac"] * steps)))
    eval_at = {int(round(f * steps)) for f in (0.25, 0.5)} - {0}
    log(f"  {steps} steps of {cfg['batch']} x {task.seq_len} tokens, Lighthouse for {lh_steps}; predicted " +
        ", ".join(f"{k} {predicted[k]:.0f} s" for k in RUNS))
    with tempfile.TemporaryDirectory(prefix="lh-retrieval-") as tmp:
        res = run_regimes(model_cfg, tc, RetrievalData(task), lh_steps, eval_fn, eval_at, device, tmp,
                          regime_deadlines(now, deadline, predicted), log=log, init_state=init)
    res.update(status="done", train_config=tc.to_dict(), predicted_seconds=predicted,
               eval_sequences=cfg["eval_seqs"], lh_frac=cfg["lh_frac"], **info)
    return res
