#!/usr/bin/env python3
"""attention_overlap_probe.py - can the scatter-type stages hide beside cuDNN's attention?

Not a test and not part of the library: a measurement that decides whether the pipeline should
split the attention step into head groups and run each group's memory-bound stage (pool_grad
after the backward, scatter after the forward) on a second stream while the next group's
cuDNN kernel runs (docs/perf-log.md, "the f+b traffic bound"). A cuDNN kernel fills every SM
while it runs, so the other stream only gets the SMs its last wave leaves idle; whether that is
worth the split is what this measures.

It times, on the GPU machine's PyTorch and the packed library (LIGHTHOUSE_LIB), at the headline
shape (B=1 H=8 D=128 bf16, L=3 p=4 topk=2048):
  - lh_attention_backward (and _forward) on all heads, and on H/k heads k times in a row;
  - a copy with the bytes of pool_grad (reads dq/dk/dv_sel, writes dq/dk/dv) or of scatter
    (reads o_sel, writes out), the stand-in for the stage after the attention;
  - serial: attention on all heads, then the copy (what the pipeline does today);
  - piped k: group i's attention on the main stream, group i's copy on a second stream after
    it, so the copy of group i runs beside the attention of group i+1.
saved = serial - piped (ms): positive means the split pays.

  LIGHTHOUSE_LIB=.../liblighthouse.so.0 PYTHONPATH=bindings/python \
      python3 tests/gpu/attention_overlap_probe.py [N ...]
"""
import sys

import torch

import lighthouse as lh
from probe_timing import timed

H, D, L, P, TOPK, REPS = 8, 128, 3, 4, 2048, 21


class Group:
    """One plan over `heads` heads and the attention tensors of all H heads it works on."""

    def __init__(self, ctx, n, heads, t):
        self.plan = ctx.plan(batch=1, seq_len=n, heads=heads, kv_heads=heads, head_dim=D,
                             dtype="bfloat16", levels=L, pooling=P, topk=TOPK)
        info = self.plan.info
        self.heads, self.s = heads, info.subseq_len
        self.ws = torch.empty(max(info.attention_workspace_bytes, 1), device="cuda",
                              dtype=torch.uint8)
        self.t = t

    def _ptrs(self, g, names):
        off = g * self.heads * self.s
        return [self.t[nm].data_ptr() + (off * (D if nm != "lse" else 1)) * self.t[nm].element_size()
                for nm in names]

    def forward(self, g, stream):
        q, k, v, o, lse = self._ptrs(g, ("q", "k", "v", "o", "lse"))
        self.plan.attention_forward_raw(q, k, v, o, lse, self.ws.data_ptr(), stream.cuda_stream)

    def backward(self, g, stream):
        ptrs = self._ptrs(g, ("q", "k", "v", "o", "lse", "do", "dq", "dk", "dv"))
        self.plan.attention_backward_raw(*ptrs, self.ws.data_ptr(), stream.cuda_stream)


def main():
    seqs = [int(a) for a in sys.argv[1:]] or [131072, 524288]
    ctx = lh.Context("cuda")
    main_s, side_s = torch.cuda.Stream(), torch.cuda.Stream()
    print(f"attention_overlap_probe on {torch.cuda.get_device_name()}: B=1 H={H} D={D} bf16 "
          f"L={L} p={P} topk={TOPK}; ms, median of {REPS}")
    print(f"{'N':>8} {'step':>4} {'k':>2} {'attn':>8} {'attn/k*k':>8} {'copy':>7} {'serial':>8} "
          f"{'piped':>8} {'saved':>7}")
    for n in seqs:
        probe = ctx.plan(batch=1, seq_len=n, heads=H, kv_heads=H, head_dim=D,
                                         dtype="bfloat16", levels=L, pooling=P, topk=TOPK)
        s = probe.info.subseq_len
        probe.close()
        sel = (1, H, s, D)
        t = {nm: torch.randn(sel, device="cuda", dtype=torch.bfloat16) * 0.5
             for nm in ("q", "k", "v", "do")}
        for nm in ("o", "dq", "dk", "dv"):
            t[nm] = torch.empty(sel, device="cuda", dtype=torch.bfloat16)
        t["lse"] = torch.empty((1, 1, H, s), device="cuda", dtype=torch.float32)
        # The stage after each step, as bytes read + written: pool_grad reads three [S, H, D]
        # and writes three [N, H, D]; scatter reads one and writes one.
        full, part = n * H * D * 2, s * H * D * 2
        step_bytes = {"bwd": 3 * (full + part), "fwd": full + part}
        whole = Group(ctx, n, H, t)
        whole.forward(0, main_s)
        torch.cuda.synchronize()
        for step in ("fwd", "bwd"):
            nbytes = step_bytes[step] // 2
            src = torch.empty(nbytes, device="cuda", dtype=torch.uint8)
            dst = torch.empty_like(src)

            def run(group, g, stream):
                (group.forward if step == "fwd" else group.backward)(g, stream)

            t_attn = timed(lambda: run(whole, 0, main_s), main_s, REPS)
            t_copy = timed(lambda: dst.copy_(src), torch.cuda.current_stream(), REPS)

            def serial():
                run(whole, 0, main_s)
                with torch.cuda.stream(main_s):
                    dst.copy_(src)
            t_serial = timed(serial, main_s, REPS)
            for k in (2, 4, 8):
                group = Group(ctx, n, H // k, t)
                chunk = nbytes // k

                def pieces():
                    for g in range(k):
                        run(group, g, main_s)

                def piped():
                    for g in range(k):
                        run(group, g, main_s)
                        ev = torch.cuda.Event()
                        ev.record(main_s)
                        side_s.wait_event(ev)
                        with torch.cuda.stream(side_s):
                            dst[g * chunk:(g + 1) * chunk].copy_(src[g * chunk:(g + 1) * chunk])
                    done = torch.cuda.Event()
                    done.record(side_s)
                    main_s.wait_event(done)
                t_pieces = timed(pieces, main_s, REPS)
                t_piped = timed(piped, main_s, REPS)
                print(f"{n:>8} {step:>4} {k:>2} {t_attn:8.3f} {t_pieces:8.3f} {t_copy:7.3f} "
                      f"{t_serial:8.3f} {t_piped:8.3f} {t_serial - t_piped:7.3f}")
                group.plan.close()
        whole.plan.close()


if __name__ == "__main__":
    main()
