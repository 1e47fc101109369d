#!/usr/bin/env python3
"""Measures training with Lighthouse against dense attention in one run of bounded time:

  (a) throughput: step time, tokens/s, peak memory and the attention share, dense vs Lighthouse,
      at each context of the preset (bench_throughput.py);
  (b) loss curves at the longest context that fits: Lighthouse then a dense resume vs dense from
      scratch (and Lighthouse only), equal tokens, held-out losses (loss_curves.py);
  (c) the long-range retrieval task in the same regimes, accuracy by distance (retrieval_runs.py).

    python3 examples/train/measure.py --out DIR [--time-budget SECONDS] [--preset h100|cpu-tiny]

The budget counts from the start of the process; each phase gets its share of what is left
(budget.py) and stops on time. DIR receives results.json (rewritten after every phase, so a run
cut short still leaves what it measured), summary.md (the tables), log.txt and the plots
(plot_results.py). docs/training.md describes the run and how to read it.
"""
import budget  # first: the time budget counts from here  # noqa: I001

import argparse
import json
import os
import platform
import sys
import time
import traceback


def parse_args(argv):
    from presets import PRESETS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for results.json, summary.md, log.txt, plots")
    ap.add_argument("--preset", default="h100", choices=sorted(PRESETS))
    ap.add_argument("--time-budget", type=float, help="seconds for the whole run (default: the preset's)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--corpus-root", default=None, help="directory of the corpus's text files "
                    "(default: the running interpreter's site-packages)")
    ap.add_argument("--corpus-max-mb", type=float, default=None)
    ap.add_argument("--phases", default="throughput,loss,retrieval",
                    help="comma-separated subset of throughput,loss,retrieval")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every phase finished and every file was written (a test)")
    return ap.parse_args(argv)


def require_stack():
    """Exits 77 (skipped) with a SKIP line where PyTorch or the binding cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {sys.executable} cannot import torch ({e}): the training program needs PyTorch")
        sys.exit(77)
    try:
        import lighthouse.torch  # noqa: F401
    except Exception as e:
        print(f"SKIP: the PyTorch binding (bindings/python) cannot be loaded: {type(e).__name__}: {e}")
        sys.exit(77)


EXPECTED_FILES = {"throughput": ["throughput.png"], "loss": ["loss_vs_tokens.png", "loss_vs_time.png"],
                  "retrieval": ["retrieval.png"]}


def check_complete(results, phases, out_dir, log):
    """--check: every phase done, every configuration measured, every file there; -> problems."""
    problems = [f"phase {p}: {results.get(p, {}).get('status', 'missing')}" for p in phases
                if results.get(p, {}).get("status") != "done"]
    problems += [f"throughput N={r['seq_len']} {r['mode']}: {r.get('status')} {r.get('error', '')}"
                 for r in results.get("throughput", {}).get("rows", []) if r.get("status") != "ok"]
    files = ["results.json", "summary.md", "log.txt"] + [f for p in phases for f in EXPECTED_FILES[p]]
    problems += [f"{f} was not written" for f in files if not os.path.exists(os.path.join(out_dir, f))]
    for line in problems:
        log(f"check: {line}")
    return problems


class Logger:
    """Prints a line with the seconds since the process started, and appends it to log.txt."""

    def __init__(self, path):
        self.fh = open(path, "a", buffering=1)

    def __call__(self, msg):
        line = f"[{time.monotonic() - budget.PROCESS_START:7.1f}s] {msg}"
        print(line, flush=True)
        self.fh.write(line + "\n")


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, default=float)
    os.replace(tmp, path)


def environment(torch, device, lib_info):
    env = {"python": platform.python_version(), "torch": torch.__version__, "host": platform.node(),
           "device": str(device), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), **lib_info}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn_torch=torch.backends.cudnn.version())
    else:
        env.update(gpu=None, cpu_threads=torch.get_num_threads())
    return env


def library_info():
    """Which liblighthouse the binding loaded, and its version."""
    import lighthouse
    path, how = lighthouse.library_path()
    return {"library_path": path, "library_found_by": how, "library_version": lighthouse.version_string(),
            "binding_version": lighthouse.__version__}


def run_phase(name, results, bud, log, out_json, fn):
    """Runs one phase under the budget; an exception is recorded, never fatal to the others."""
    deadline = bud.begin(name)
    start = time.monotonic()
    log(f"== phase {name}: {bud.report[name]['budget_s']:.0f} s")
    status = "done"
    try:
        results[name] = fn(start, deadline)
    except Exception as e:
        status = f"error: {type(e).__name__}: {e}"
        results[name] = {"status": status, "traceback": traceback.format_exc()}
        log(f"  phase {name} failed: {type(e).__name__}: {e}")
    bud.end(name, results[name].get("status", status) if isinstance(results[name], dict) else status)
    write_json(out_json, results)


def main(argv=None):
    require_stack()  # before the arguments: the presets are model configurations
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    log = Logger(os.path.join(args.out, "log.txt"))
    from presets import PRESETS
    preset = PRESETS[args.preset]
    phases = [p for p in args.phases.split(",") if p]
    shares = {p: preset["shares"][p] for p in ("throughput", "loss", "retrieval") if p in phases}
    bud = budget.Budget(args.time_budget or preset["time_budget"], shares)

    import torch
    from trainer import configure_determinism, CorpusData
    configure_determinism(args.seed)
    import corpus as corpus_mod
    from model import param_count

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_json = os.path.join(args.out, "results.json")
    results = {"format": "lighthouse-train-measure/1", "preset": args.preset, "seed": args.seed,
               "time_budget_s": bud.total_s, "phases": bud.report,
               "environment": environment(torch, device, library_info())}
    log(f"device {results['environment'].get('gpu') or device}, torch {torch.__version__}, "
        f"budget {bud.total_s:.0f} s, preset {args.preset}")
    max_mb = args.corpus_max_mb or preset["corpus_max_mb"]
    corpus = corpus_mod.build_corpus(args.corpus_root, max_bytes=int(max_mb * 2**20), log=log)
    data = CorpusData(corpus)
    mcfg = preset["model"]
    results.update(corpus=corpus.info, model={**mcfg.to_dict(), "num_params": param_count(mcfg)})
    write_json(out_json, results)

    if "throughput" in phases:
        from bench_throughput import run_throughput
        run_phase("throughput", results, bud, log, out_json, lambda start, deadline: run_throughput(
            mcfg, data, preset["contexts"], device, deadline, seed=args.seed, log=log, **preset["throughput"]))
    if "loss" in phases:
        from loss_curves import run_loss_curves
        rows = results.get("throughput", {}).get("rows", [])
        run_phase("loss", results, bud, log, out_json, lambda start, deadline: run_loss_curves(
            mcfg, corpus, data, rows, preset["loss_contexts"], device, start, deadline,
            dict(preset["loss"], seed=args.seed), log=log))
    if "retrieval" in phases:
        from retrieval_runs import run_retrieval
        rcfg = preset["retrieval_model"]
        run_phase("retrieval", results, bud, log, out_json, lambda start, deadline: dict(run_retrieval(
            rcfg, preset["retrieval_task"], device, start, deadline, dict(preset["retrieval"], seed=args.seed),
            log=log), num_params=param_count(rcfg)))

    results["elapsed_s"] = round(bud.elapsed(), 1)
    write_json(out_json, results)
    try:
        import report
        report.write_all(results, args.out, log=log)
    except Exception as e:  # the JSON is written; report.py can redo them
        log(f"report/plots failed: {type(e).__name__}: {e}")
        traceback.print_exc()
    log(f"done in {bud.elapsed():.0f} s of {bud.total_s:.0f}: {args.out}")
    failed = [p for p in phases if str(bud.report.get(p, {}).get("status", "")).startswith("error")]
    if args.check:
        failed += check_complete(results, phases, args.out, log)
        log("check: " + ("FAIL" if failed else "PASS: every phase done, every file written"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
