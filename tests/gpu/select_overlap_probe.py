#!/usr/bin/env python3
"""select_overlap_probe.py - can the forward's pooling of v hide beside the select stage?

Not a test and not part of the library: a measurement that decides whether the forward should
pool v's coarsest level on a second stream while lh_select runs (docs/perf-log.md, 2026-12-07,
"the f+b traffic bound"). The select stage is one block per (tile, head): 128 blocks at the
headline shape, latency-bound, so most of each SM is idle while it runs; the gather stage reads
all of v to average the coarsest level, which does not depend on the selection.

It times, on the GPU machine's PyTorch and the packed library (LIGHTHOUSE_LIB):
  - lh_select on the scores of random q, k (the plan's stage entry point, its inv clear included);
  - two stand-ins for the pooling of v: the mean of every F = P^(L-1) tokens of v in bf16 (reads
    v, writes N/F rows: the pooling's bytes) and a copy of the same number of bytes;
  - each stand-in and select at once, on two streams, in both launch orders.
hidden = (t_select + t_other - t_both) / t_other: 1 means the other work was free.

  LIGHTHOUSE_LIB=.../liblighthouse.so.0 PYTHONPATH=bindings/python \
      python3 tests/gpu/select_overlap_probe.py [N ...]
"""
import sys

import torch

import lighthouse as lh
from probe_timing import timed

H, D, L, P, TOPK, REPS = 8, 128, 3, 4, 2048, 21


def main():
    seqs = [int(a) for a in sys.argv[1:]] or [131072, 524288]
    ctx = lh.Context("cuda")
    main_s, side_s = torch.cuda.Stream(), torch.cuda.Stream()
    print(f"select_overlap_probe on {torch.cuda.get_device_name()}: B=1 H={H} D={D} bf16 L={L} "
          f"p={P} topk={TOPK}; ms, median of {REPS}")
    print(f"{'N':>8} {'other':>6} {'select':>8} {'other':>8} {'GB/s':>6} {'both, other 1st':>16} "
          f"{'hidden':>7} {'both, select 1st':>17} {'hidden':>7}")
    for n in seqs:
        plan = ctx.plan(batch=1, seq_len=n, heads=H, kv_heads=H, head_dim=D, dtype="bfloat16",
                        levels=L, pooling=P, topk=TOPK)
        info = plan.info
        dev = torch.device("cuda")
        q = torch.randn(info.q_shape, device=dev, dtype=torch.bfloat16)
        k = torch.randn(info.kv_shape, device=dev, dtype=torch.bfloat16)
        v = torch.randn(info.kv_shape, device=dev, dtype=torch.bfloat16)
        sq = torch.empty(info.scores_q_shape, device=dev, dtype=torch.float32)
        sk = torch.empty(info.scores_k_shape, device=dev, dtype=torch.float32)
        idx = torch.empty(info.indices_shape, device=dev, dtype=torch.int32)
        ws = torch.empty(max(info.stage_workspace_bytes, 1), device=dev, dtype=torch.uint8)
        f = P ** (L - 1)
        pooled = torch.empty((1, n // f, H, D), device=dev, dtype=torch.bfloat16)
        pool_bytes = v.numel() * 2 + pooled.numel() * 2
        src = torch.empty(pool_bytes // 2, device=dev, dtype=torch.uint8)
        dst = torch.empty_like(src)
        torch.cuda.synchronize()
        plan.scores_raw(q.data_ptr(), k.data_ptr(), sq.data_ptr(), sk.data_ptr(), ws.data_ptr(),
                        main_s.cuda_stream)

        def select():
            plan.select_raw(sq.data_ptr(), sk.data_ptr(), idx.data_ptr(), ws.data_ptr(),
                            main_s.cuda_stream)

        def pool():
            with torch.cuda.stream(side_s):
                torch.mean(v.view(1, n // f, f, H, D), dim=2, out=pooled)

        def copy():
            with torch.cuda.stream(side_s):
                dst.copy_(src)   # reads and writes pool_bytes / 2 each: the pooling's traffic

        def both(other, other_first):
            start, done = torch.cuda.Event(), torch.cuda.Event()
            start.record(main_s)
            side_s.wait_event(start)
            if other_first:
                other()
                select()
            else:
                select()
                other()
            done.record(side_s)
            main_s.wait_event(done)

        t_sel = timed(select, main_s, REPS)
        for name, other in (("pool", pool), ("copy", copy)):
            def alone():
                start, done = torch.cuda.Event(), torch.cuda.Event()
                start.record(main_s)
                side_s.wait_event(start)
                other()
                done.record(side_s)
                main_s.wait_event(done)
            t_other = timed(alone, main_s, REPS)
            row = [f"{n:>8} {name:>6} {t_sel:8.3f} {t_other:8.3f} {pool_bytes / t_other / 1e6:6.0f}"]
            for first in (True, False):
                t_both = timed(lambda: both(other, first), main_s, REPS)
                row.append(f"{t_both:16.3f} {(t_sel + t_other - t_both) / t_other:7.2f}")
            print(" ".join(row))
        plan.close()


if __name__ == "__main__":
    main()
