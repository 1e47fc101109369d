#!/usr/bin/env python3
"""A few-step smoke test of the training program, on the CPU (library's CPU backend, fp32) or on
a GPU (bf16 autocast):

    python3 examples/train/smoke.py [--device cpu|cuda] [--corpus-root DIR]

1. trains a small model for STEPS steps on a corpus built from DIR (default: the running
   interpreter's standard library), Lighthouse first and dense from SWITCH on, saving a
   checkpoint at step CKPT (before the switch);
2. a second process loads the checkpoint and trains the remaining steps: its held-out losses at
   step CKPT (Lighthouse and dense) must equal the first process's to the bit, and its training
   losses must equal the first process's (to the bit on the CPU; within 1e-3 relative on a GPU,
   where cuDNN's attention backward may sum with atomics);
3. the loss goes down: the held-out loss at the end is below the one at step 0, and the mean of
   the last three training losses below the mean of the first three.

Prints a PASS or FAIL line per check (tests/gpu/run_gpu_tests.sh counts them) and exits 0, 1, or
77 (skipped, with a SKIP line) where PyTorch, the binding or the requested device is missing.
"""
import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, SWITCH, CKPT = 16, 12, 8


def require_stack(device):
    try:
        import torch
    except ImportError as e:
        print(f"SKIP: {sys.executable} cannot import torch ({e}): the training program needs PyTorch")
        sys.exit(SKIP)
    try:
        import lighthouse.torch  # noqa: F401
    except Exception as e:
        print(f"SKIP: the PyTorch binding (bindings/python) cannot be loaded: {type(e).__name__}: {e}")
        sys.exit(SKIP)
    if device == "cuda" and not torch.cuda.is_available():
        print("SKIP: --device cuda but torch sees no GPU")
        sys.exit(SKIP)


def configs(device):
    from model import ModelConfig
    from trainer import TrainConfig
    if device == "cuda":
        # head_dim 64 and topk 256: N = 4096 is the shortest length these levels allow
        mc = ModelConfig(d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=704,
                         levels=3, pooling=4, topk=256)
        n = 4096
    else:
        mc = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=192,
                         levels=2, pooling=4, topk=128)
        n = 1024
    tc = TrainConfig(seed=0, steps=STEPS, batch=2, seq_len=n, lr=3e-3, warmup_steps=2,
                     attention="lighthouse", dense_from_step=SWITCH)
    return mc, tc


def setup(args):
    """The corpus, configurations and held-out windows both processes share."""
    from trainer import configure_determinism
    configure_determinism(0)
    import corpus
    c = corpus.build_corpus(args.corpus_root or sysconfig.get_paths()["stdlib"], max_bytes=4 << 20)
    mc, tc = configs(args.device)
    x, y = c.heldout_windows(2, tc.seq_len)
    return c, mc, tc, x, y


def evals(tr, x, y):
    return {mode: tr.evaluate(x, y, mode) for mode in ("lighthouse", "dense")}


def resume_process(args):
    """Second process: load the checkpoint, evaluate, train to the end; results as JSON."""
    from trainer import CorpusData, Trainer
    c, mc, tc, x, y = setup(args)
    tr = Trainer(mc, tc, CorpusData(c), args.device)
    tr.load(args.resume)
    at_ckpt = evals(tr, x, y)
    tr.run(tc.steps)
    with open(args.result, "w") as fh:
        json.dump({"evals_at_ckpt": at_ckpt, "losses": [r["loss"] for r in tr.history]}, fh)


def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--corpus-root", default=None)
    ap.add_argument("--resume", help=argparse.SUPPRESS)   # internal: the second process
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    require_stack(args.device)
    if args.resume:
        return resume_process(args)

    from trainer import CorpusData, Trainer
    c, mc, tc, x, y = setup(args)
    print(f"smoke: {args.device}, corpus {c.fingerprint[:16]} ({c.info['train_bytes']:,} bytes), "
          f"N={tc.seq_len}, {STEPS} steps, dense from step {SWITCH}, checkpoint at {CKPT}", flush=True)
    tr = Trainer(mc, tc, CorpusData(c), args.device)
    start = evals(tr, x, y)
    ok = True
    with tempfile.TemporaryDirectory(prefix="lh-smoke-") as tmp:
        ckpt, result = os.path.join(tmp, "ckpt.pt"), os.path.join(tmp, "resumed.json")
        tr.run(CKPT)
        tr.save(ckpt)
        at_ckpt = evals(tr, x, y)
        tr.run(tc.steps)
        end = evals(tr, x, y)
        losses = [r["loss"] for r in tr.history]
        for r in tr.history:
            print(f"  step {r['step']:>2} {r['mode']:>10}  loss {r['loss']:.6f}  lr {r['lr']:.2e}  "
                  f"{1e3 * r['step_seconds']:.0f} ms", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--device", args.device,
               "--resume", ckpt, "--result", result]
        if args.corpus_root:
            cmd += ["--corpus-root", args.corpus_root]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            check("resume", False, f"the resuming process failed with status {proc.returncode}")
            return 1
        with open(result) as fh:
            resumed = json.load(fh)

    ok &= check("loss_goes_down", end["dense"] < start["dense"] and
                sum(losses[-3:]) < sum(losses[:3]),
                f"held-out {start['dense']:.4f} -> {end['dense']:.4f} (dense), "
                f"{start['lighthouse']:.4f} -> {end['lighthouse']:.4f} (Lighthouse); training "
                f"{sum(losses[:3]) / 3:.4f} (first 3) -> {sum(losses[-3:]) / 3:.4f} (last 3)")
    ok &= check("resume_eval_identical", resumed["evals_at_ckpt"] == at_ckpt,
                f"held-out at step {CKPT}: {at_ckpt} vs resumed {resumed['evals_at_ckpt']}")
    after = losses[CKPT:]
    again = resumed["losses"][CKPT:]
    exact = after == again
    worst = max(abs(a - b) / abs(a) for a, b in zip(after, again)) if len(after) == len(again) else float("inf")
    tol = 0.0 if args.device == "cpu" else 1e-3
    ok &= check("resume_training_losses", len(after) == len(again) and worst <= tol,
                f"steps {CKPT + 1}..{STEPS} after the resume: "
                f"{'bit-identical' if exact else f'max rel diff {worst:.2e}'}"
                f" (limit {tol:g}; the history before the checkpoint is carried: "
                f"{resumed['losses'][:CKPT] == losses[:CKPT]})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
