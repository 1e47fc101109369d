"""The checks of lighthouse.torch, shared by the CPU tests (test_torch.py: float32 on the CPU
backend) and the GPU tests (test_torch_gpu.py: bfloat16 / float16 on CUDA), so that every path the
GPU run takes has already run here on the CPU.

A subclass sets `device`, `dtypes` and the bounds; inputs are fresh random tensors every run (the
seed is printed). Errors are max|got - want| / max|want| (torch_reference.rel_max)."""
import math
import os
import threading
import zlib

import torch
import torch.nn.functional as F

import lighthouse
import lighthouse.torch as lt
import torch_reference as ref

SEED = int(os.environ.get("LIGHTHOUSE_TEST_SEED") or torch.seed() % 2**31)
print(f"torch_checks: seed {SEED} (LIGHTHOUSE_TEST_SEED={SEED} repeats this run)", flush=True)

# Lighthouse configurations: (levels, pooling, topk), and the shapes they are run at.
SMALL = dict(levels=2, pooling=4, topk=128)
DEEP = dict(levels=3, pooling=4, topk=256)


class AttentionChecks:
    """Mixed into a unittest.TestCase. Subclasses set:
    device: torch.device; dtypes: the dtypes to run; bound[dtype]: the error bound of out and
    gradients against the plain-PyTorch float32 reference; seq: N of the main cases."""

    device = torch.device("cpu")
    dtypes = (torch.float32,)
    bound = {torch.float32: 2e-5}
    seq = 2048
    head_dim = 32
    config = SMALL

    def setUp(self):
        self.gen = torch.Generator(device="cpu").manual_seed(SEED + zlib.crc32(self.id().encode()) % 1000)

    def randn(self, *shape, dtype=torch.float32, grad=False):
        x = torch.randn(*shape, generator=self.gen).to(device=self.device, dtype=dtype)
        return x.requires_grad_(grad)

    def qkv(self, b, n, h, hkv, d, dtype, layout="bnhd", grad=True):
        shape = (lambda heads: (b, n, heads, d)) if layout == "bnhd" else (lambda heads: (b, heads, n, d))
        return (self.randn(*shape(h), dtype=dtype, grad=grad), self.randn(*shape(hkv), dtype=dtype, grad=grad),
                self.randn(*shape(hkv), dtype=dtype, grad=grad))

    def assertClose(self, got, want, bound, what):
        err = ref.rel_max(got, want)
        self.assertTrue(math.isfinite(err) and err <= bound, f"{what}: error {err:.3e} > {bound:.1e}")
        return err

    def assertSame(self, got, want, what):
        """Bit-identical, as the same kernels on the same inputs give; should a backend ever
        accumulate in a run-dependent order, within 1e-3 (a NOTE says so)."""
        if torch.equal(got, want):
            return
        err = ref.rel_max(got, want)
        print(f"  NOTE: {what}: not bit-identical (error {err:.1e})", flush=True)
        self.assertTrue(err <= 1e-3, f"{what}: error {err:.3e} > 1e-3")

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---- forward and gradients against plain PyTorch ----

    def run_lighthouse_case(self, dtype, layout, b, h, hkv, recompute=False, softmax_scale=None, config=None,
                            seq=None):
        config = config or self.config
        n, d = seq or self.seq, self.head_dim
        q, k, v = self.qkv(b, n, h, hkv, d, dtype, layout)
        dout = self.randn(*q.shape, dtype=dtype)
        out = lt.attention(q, k, v, layout=layout, recompute=recompute, softmax_scale=softmax_scale, **config)
        self.assertEqual((out.shape, out.dtype, out.device), (q.shape, q.dtype, q.device))
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)

        bnhd = [ref.to_bnhd(x.detach(), layout) for x in (q, k, v)]
        indices = lt.selection(*bnhd[:2], levels=config["levels"], pooling=config["pooling"], topk=config["topk"])
        leaves = [x.float().requires_grad_() for x in bnhd]
        want = ref.lighthouse(*leaves, indices, config["levels"], config["pooling"], softmax_scale)
        want_grads = torch.autograd.grad(want, leaves, ref.to_bnhd(dout, layout).float())
        tag = f"{dtype} {layout} B={b} H={h} Hkv={hkv} {config} recompute={recompute}"
        errs = [self.assertClose(ref.to_bnhd(out, layout), want, self.bound[dtype], f"{tag}: out")]
        for name, got, w in zip(("dq", "dk", "dv"), (dq, dk, dv), want_grads):
            errs.append(self.assertClose(ref.to_bnhd(got, layout), w, self.bound[dtype], f"{tag}: {name}"))
        print(f"  {tag}: out/dq/dk/dv errors " + " ".join(f"{e:.1e}" for e in errs), flush=True)
        return q, k, v, dout, out, (dq, dk, dv)

    def test_lighthouse_against_reference(self):
        for dtype in self.dtypes:
            for layout in ("bnhd", "bhnd"):
                self.run_lighthouse_case(dtype, layout, b=2, h=2, hkv=2)
                self.run_lighthouse_case(dtype, layout, b=1, h=4, hkv=2)  # grouped-query heads

    def test_recompute_and_deeper_pyramid(self):
        for dtype in self.dtypes:
            self.run_lighthouse_case(dtype, "bnhd", b=1, h=4, hkv=1, recompute=True)
            self.run_lighthouse_case(dtype, "bhnd", b=1, h=2, hkv=2, config=DEEP, seq=2 * self.seq,
                                     softmax_scale=0.3)

    def test_selection_matches_cpu_backend(self):
        """The device's selection equals the CPU reference backend's on the same (rounded) inputs."""
        for dtype in self.dtypes:
            q, k, _ = self.qkv(1, self.seq, 4, 2, self.head_dim, dtype, grad=False)
            got = lt.selection(q, k, **self.config)
            want = lt.selection(q.float().cpu(), k.float().cpu(), **self.config)
            self.assertEqual(got.dtype, torch.int32)
            self.assertTrue(torch.equal(got.cpu(), want), f"{dtype}: selection differs from the CPU backend's")

    # ---- against the library's own C path ----

    def test_op_equals_c_path(self):
        """The custom op and its backward give what the plan's raw entry points give."""
        for dtype in self.dtypes:
            for mode in ("lighthouse", "dense"):
                q, k, v = self.qkv(1, self.seq, 4, 2, self.head_dim, dtype)
                dout = self.randn(*q.shape, dtype=dtype)
                out = lt.attention(q, k, v, mode=mode, **self.config)
                grads = torch.autograd.grad(out, (q, k, v), dout)

                plan = lt.get_plan(q, k, v, mode=mode, **self.config)
                info = plan.info
                q, k, v = (x.detach() for x in (q, k, v))
                c_out = torch.full_like(q, float("nan"))
                saved = torch.empty(info.saved_bytes, dtype=torch.uint8, device=self.device)
                fws = torch.empty(max(1, info.fwd_workspace_bytes), dtype=torch.uint8, device=self.device)
                bws = torch.empty(max(1, info.bwd_workspace_bytes), dtype=torch.uint8, device=self.device)
                c_grads = [torch.full_like(x, float("nan")) for x in (q, k, v)]
                stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else None
                with plan.lock:
                    plan.forward_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), c_out.data_ptr(), saved.data_ptr(),
                                     fws.data_ptr(), stream)
                    plan.backward_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), c_out.data_ptr(), dout.data_ptr(),
                                      saved.data_ptr(), *(g.data_ptr() for g in c_grads), bws.data_ptr(), stream)
                self.sync()
                for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), (c_out, *c_grads)):
                    self.assertSame(got, want, f"{dtype} {mode}: {name} against the plan's raw entry points")

    # ---- dense mode against SDPA ----

    def test_dense_against_sdpa(self):
        for dtype in self.dtypes:
            for layout, (h, hkv), scale in (("bnhd", (4, 4), None), ("bhnd", (4, 2), 0.2)):
                q, k, v = self.qkv(2, self.seq // 2, h, hkv, self.head_dim, dtype, layout)
                dout = self.randn(*q.shape, dtype=dtype)
                out = lt.attention(q, k, v, mode="dense", layout=layout, softmax_scale=scale)
                grads = torch.autograd.grad(out, (q, k, v), dout)
                leaves = [ref.to_bnhd(x.detach(), layout).float().requires_grad_() for x in (q, k, v)]
                want = ref.dense(*leaves, softmax_scale=scale)
                want_grads = torch.autograd.grad(want, leaves, ref.to_bnhd(dout, layout).float())
                tag = f"dense {dtype} {layout} H={h} Hkv={hkv} scale={scale}"
                self.assertClose(ref.to_bnhd(out, layout), want, self.bound[dtype], f"{tag}: out")
                for name, got, w in zip(("dq", "dk", "dv"), grads, want_grads):
                    self.assertClose(ref.to_bnhd(got, layout), w, self.bound[dtype], f"{tag}: {name}")

    # ---- torch.compile ----

    def test_compile_fullgraph(self):
        """A module using the op compiles with fullgraph=True (no graph break) and matches eager."""
        dtype = self.dtypes[0]
        dim = 4 * self.head_dim
        model = AttentionBlock(dim, heads=4, kv_heads=2, config=self.config).to(self.device, dtype)
        x = self.randn(2, self.seq, dim, dtype=dtype)
        compiled = torch.compile(model, fullgraph=True)
        for mode in ("lighthouse", "dense"):
            model.mode = mode
            torch._dynamo.reset()
            want = model(x.detach().requires_grad_())
            want_grads = torch.autograd.grad(want.float().square().sum(), list(model.parameters()))
            got = compiled(x.detach().requires_grad_())
            got_grads = torch.autograd.grad(got.float().square().sum(), list(model.parameters()))
            bound = 1e-4 if dtype == torch.float32 else 2e-2
            self.assertClose(got, want, bound, f"compiled {mode} out")
            for i, (g, w) in enumerate(zip(got_grads, want_grads)):
                self.assertClose(g, w, bound, f"compiled {mode} grad {i}")

    # ---- scorers (docs/spec.md section 10) ----

    def plan_scores(self, q, k, v, scorer):
        """The library's own scores of `scorer` for q, k, v (BNHD), through lh_scores_qkv."""
        plan = lt.get_plan(q, k, v, scorer=scorer, **self.config)
        i = plan.info
        sq = torch.empty(i.scores_q_shape, dtype=torch.float32, device=q.device)
        sk = torch.empty(i.scores_k_shape, dtype=torch.float32, device=q.device)
        ws = None if i.stage_workspace_bytes == 0 else torch.empty(i.stage_workspace_bytes, dtype=torch.uint8,
                                                                     device=q.device)
        with plan.lock:
            plan.scores_qkv_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), sq.data_ptr(), sk.data_ptr(),
                                None if ws is None else ws.data_ptr(), lt._plans.stream_of(q.device))
        self.sync()
        return sq, sk

    def test_external_scores_equal_norm(self):
        """The norm scorer's own scores given as the caller's: the norm path's out and gradients."""
        for dtype in self.dtypes:
            q, k, v = self.qkv(1, self.seq, 4, 2, self.head_dim, dtype)
            dout = self.randn(*q.shape, dtype=dtype)
            sq, sk = self.plan_scores(q.detach(), k.detach(), v.detach(), "norm")
            sq.requires_grad_()  # a learned scorer's scores: no gradient flows into them
            want = lt.attention(q, k, v, **self.config)
            got = lt.attention(q, k, v, scorer=(sq, sk), **self.config)
            self.assertTrue(torch.equal(got, want), f"{dtype}: external scores change out")
            for name, a, b in zip(("dq", "dk", "dv"), torch.autograd.grad(got, (q, k, v), dout),
                                  torch.autograd.grad(want, (q, k, v), dout)):
                self.assertSame(a, b, f"{dtype}: external {name}")
            self.assertTrue(torch.equal(lt.selection(q, k, scorer=(sq, sk), **self.config),
                                        lt.selection(q, k, **self.config)))

    def test_dilated_scorer(self):
        """The dilated scorer: its scores against plain PyTorch's (the reference's strided view), and
        out and gradients against plain PyTorch on the selection it makes."""
        cfg = self.config
        for dtype in self.dtypes:
            q, k, v = self.qkv(2, self.seq, 2, 2, self.head_dim, dtype)
            dout = self.randn(*q.shape, dtype=dtype)
            scorer = ("dilated", 8)
            sq, sk = self.plan_scores(q.detach(), k.detach(), v.detach(), scorer)
            wq, wk = ref.dilated_scores(q.detach(), k.detach(), v.detach(), cfg["levels"], cfg["pooling"], 8)
            tag = f"{dtype} dilated d=8"
            errs = [self.assertClose(sq, wq, self.bound[dtype], f"{tag}: scores_q"),
                    self.assertClose(sk, wk, self.bound[dtype], f"{tag}: scores_k")]
            out = lt.attention(q, k, v, scorer=scorer, **cfg)
            grads = torch.autograd.grad(out, (q, k, v), dout)
            indices = lt.selection(q.detach(), k.detach(), v.detach(), scorer=scorer, **cfg)
            leaves = [x.detach().float().requires_grad_() for x in (q, k, v)]
            want = ref.lighthouse(*leaves, indices, cfg["levels"], cfg["pooling"])
            errs.append(self.assertClose(out, want, self.bound[dtype], f"{tag}: out"))
            for name, got, w in zip(("dq", "dk", "dv"), grads, torch.autograd.grad(want, leaves, dout.float())):
                errs.append(self.assertClose(got, w, self.bound[dtype], f"{tag}: {name}"))
            print(f"  {tag}: scores_q/scores_k/out/dq/dk/dv errors " + " ".join(f"{e:.1e}" for e in errs),
                  flush=True)

    # ---- errors carry the library's sentence ----

    def test_refusals(self):
        dtype = self.dtypes[0]
        q, k, v = self.qkv(1, self.seq, 2, 2, self.head_dim, dtype, grad=False)
        q4 = torch.cat([q, q], 2)
        with self.assertRaises(lighthouse.InvalidArgumentError) as e:
            lt.attention(q, k, v, levels=2, pooling=4, topk=100)
        self.assertIn("TOPK must be a positive multiple of 128", str(e.exception))
        self.assertEqual(e.exception.status, lighthouse.Status.TOPK)
        with self.assertRaises(lighthouse.InvalidArgumentError) as e:
            lt.attention(q[:, :-1], k[:, :-1], v[:, :-1], **self.config)
        self.assertEqual(e.exception.status, lighthouse.Status.SEQ_DIVISIBILITY)
        self.assertIn("SEQ_LEN", e.exception.message)
        with self.assertRaises(lighthouse.InvalidArgumentError) as e:
            lt.attention(q, k, v, levels=2, pooling=3, topk=128)
        self.assertEqual(e.exception.status, lighthouse.Status.POOLING)
        with self.assertRaises(ValueError) as e:
            lt.attention(q, k[:, :1024], v[:, :1024])
        self.assertIn("k has shape", str(e.exception))
        with self.assertRaises(TypeError):
            lt.attention(q.double(), k.double(), v.double())
        with self.assertRaises(ValueError):
            lt.attention(q, k, v, layout="nbhd")
        with self.assertRaises(ValueError) as e:
            lt.attention(q, k, v, scorer="gla2")
        self.assertIn("unknown scorer", str(e.exception))
        with self.assertRaises(lighthouse.LighthouseError) as e:  # H = 4, Hkv = 2
            lt.attention(q4, k, v, scorer="dilated", **self.config)
        self.assertEqual(e.exception.status, lighthouse.Status.HEADS_MISMATCH)
        with self.assertRaises(ValueError) as e:
            lt.attention(q, k, v, scorer=(torch.zeros(3), torch.zeros(3)), **self.config)
        self.assertIn("scores_q must be float32", str(e.exception))
        # a dtype the backend does not run: the library's own refusal
        other = torch.bfloat16 if self.device.type == "cpu" else torch.float32
        with self.assertRaises(lighthouse.UnsupportedError) as e:
            lt.attention(q.to(other), k.to(other), v.to(other), **self.config)
        self.assertEqual(e.exception.status, lighthouse.Status.UNSUPPORTED_DTYPE)
        self.assertTrue(e.exception.message.startswith("lh_plan_finalize"), e.exception.message)
        # under torch.compile the same sentence reaches the caller
        bad = torch.compile(lambda a, b, c: lt.attention(a, b, c, levels=2, pooling=4, topk=100), fullgraph=True)
        with self.assertRaises(Exception) as e:
            bad(q, k, v)
        self.assertIn("TOPK must be a positive multiple of 128", str(e.exception))

    # ---- context parallelism: a ring of ranks in this process ----

    def test_local_ring(self):
        """W = 2 ranks of an in-process ring, one thread each, against plain PyTorch over the whole
        sequence (each chunk's own selection); dense mode against SDPA over the whole sequence."""
        world, dtype = 2, self.dtypes[0]
        config = dict(levels=2, pooling=4, topk=128 * 2 * world)
        n = 2 * world * 1024
        for mode in ("lighthouse", "dense"):
            q, k, v = self.qkv(1, n, 4, 2, self.head_dim, dtype, grad=False)
            dout = self.randn(*q.shape, dtype=dtype)
            ranks = lt.local_ring(world, self.device)
            outs, grads = run_ring(ranks, q, k, v, dout, mode=mode, autograd=self.device.type == "cpu", **config)
            out = lt.unshard_sequence(outs)
            got_grads = [lt.unshard_sequence([g[i] for g in grads]) for i in range(3)]
            leaves = [x.float().requires_grad_() for x in (q, k, v)]
            if mode == "dense":
                want = ref.dense(*leaves)
            else:
                chunk_cfg = dict(levels=config["levels"], pooling=config["pooling"], topk=config["topk"] // (2 * world))
                indices = [lt.selection(qc, kc, **chunk_cfg)
                           for qc, kc in zip(q.chunk(2 * world, 1), k.chunk(2 * world, 1))]
                want = ref.lighthouse_ring(*leaves, indices, config["levels"], config["pooling"])
            want_grads = torch.autograd.grad(want, leaves, dout.float())
            tag = f"ring W={world} {mode} {dtype}"
            self.assertClose(out, want, self.bound[dtype], f"{tag}: out")
            for name, g, w in zip(("dq", "dk", "dv"), got_grads, want_grads):
                self.assertClose(g, w, self.bound[dtype], f"{tag}: {name}")
            for r in ranks:
                r.close()


class AttentionBlock(torch.nn.Module):
    """Projections around lighthouse.torch.attention, as a model would use it."""

    def __init__(self, dim, heads, kv_heads, config):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q = torch.nn.Linear(dim, dim, bias=False)
        self.kv = torch.nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.o = torch.nn.Linear(dim, dim, bias=False)
        self.config = config
        self.mode = "lighthouse"

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.head_dim)
        k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.head_dim).unbind(2)
        y = lt.attention(q, k, v, mode=self.mode, **self.config)
        return self.o(y.reshape(b, n, -1)) + x


def run_ring(ranks, q, k, v, dout, *, mode, autograd, **config):
    """Each rank's forward and backward on its shard, one thread per rank (and per CUDA stream).
    autograd=False calls the backward op directly: PyTorch runs the backward of one device's
    tensors on one worker thread, so two ranks on one GPU cannot both wait inside it."""
    world = len(ranks)
    outs, grads, errors = [None] * world, [None] * world, []

    def rank_main(r):
        try:
            shard = [lt.shard_sequence(x, r, world) for x in (q, k, v, dout)]
            stream = None
            if q.device.type == "cuda":  # the rank's own stream, after the shards are written
                stream = torch.cuda.Stream(q.device)
                stream.wait_stream(torch.cuda.current_stream(q.device))
            with torch.cuda.stream(stream) if stream is not None else _nothing():
                if autograd:
                    leaves = [x.requires_grad_() for x in shard[:3]]
                    out = lt.attention(*leaves, mode=mode, ring=ranks[r], **config)
                    grads[r] = torch.autograd.grad(out, leaves, shard[3])
                else:
                    args = (mode, config["levels"], config["pooling"], config["topk"], "norm", "bnhd", None, False,
                            ranks[r].id)
                    out, saved = torch.ops.lighthouse.attention_forward(*shard[:3], *args)
                    grads[r] = torch.ops.lighthouse.attention_backward(
                        *shard[:3], out if mode == "dense" else None, shard[3], saved, *args)
                outs[r] = out.detach()
            if stream is not None:
                stream.synchronize()
        except BaseException as e:  # reported by the main thread
            errors.append((r, e))

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0][1]
    return outs, grads


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
