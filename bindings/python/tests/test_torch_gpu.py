"""lighthouse.torch on a GPU (bfloat16 and float16): the checks of torch_checks.py (forward and
gradients against plain PyTorch and against the plan's own C path, both layouts, grouped-query
heads, dense mode against SDPA, torch.compile(fullgraph=True), the library's refusals, a W = 2
ring in this process), plus what only a GPU has: PyTorch's current stream, CUDA-graph capture
and replay, torch.compile's CUDA graphs, NCCL rings through torch.distributed.

Run by tests/gpu/run_gpu_tests.sh (section `torch`), with LIGHTHOUSE_LIB naming the library.
Exits 77 (skipped) without PyTorch or a GPU. LIGHTHOUSE_TORCH_TEST_DEVICE=cpu runs the same file
on the CPU backend in float32 (the GPU-only tests skip), to check the file itself without a GPU."""
import os

import _support

torch = _support.require("torch", "the PyTorch layer's GPU tests need PyTorch")
ON_CPU = os.environ.get("LIGHTHOUSE_TORCH_TEST_DEVICE") == "cpu"
if not ON_CPU and not torch.cuda.is_available():
    print("SKIP: the PyTorch layer's GPU tests need a CUDA device (torch.cuda.is_available() is False)")
    raise SystemExit(_support.SKIP)

import shutil  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import unittest  # noqa: E402

import lighthouse  # noqa: E402
import lighthouse.torch as lt  # noqa: E402
import torch_reference as ref  # noqa: E402
from torch_checks import DEEP, AttentionBlock, AttentionChecks, run_ring  # noqa: E402

DEVICE = torch.device("cpu") if ON_CPU else torch.device("cuda", 0)
DTYPES = (torch.float32,) if ON_CPU else (torch.bfloat16, torch.float16)
LOW = DTYPES[0]  # the dtype of the single-dtype tests
# The bounds of tests/gpu (max|gpu - ref| / max|ref| against an fp32 reference).
BOUND = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 2e-5}
gpu_only = unittest.skipIf(ON_CPU, "a CUDA-only test (LIGHTHOUSE_TORCH_TEST_DEVICE=cpu)")


def inductor_can_build():
    """Inductor's GPU code (Triton) builds its launchers with a C compiler and Python's headers."""
    compiler = any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang"))
    return compiler and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))


print(f"device: {'CPU' if ON_CPU else torch.cuda.get_device_name(DEVICE)}; torch {torch.__version__}; "
      f"liblighthouse {lighthouse.version_string()} from {lighthouse.library_path()[0]}", flush=True)


class CudaAttention(AttentionChecks, unittest.TestCase):
    device = DEVICE
    dtypes = DTYPES
    bound = BOUND
    seq = 4096
    head_dim = 32 if ON_CPU else 64
    config = DEEP

    def test_compile_fullgraph(self):
        if not inductor_can_build():
            self.skipTest("no C compiler or Python.h for Inductor/Triton: see test_compile_fullgraph_aot_eager")
        super().test_compile_fullgraph()

    def test_compile_fullgraph_aot_eager(self):
        """fullgraph=True through AOTAutograd without code generation (no compiler needed)."""
        model = AttentionBlock(4 * self.head_dim, heads=4, kv_heads=2, config=self.config).to(DEVICE, LOW)
        x = self.randn(1, self.seq, 4 * self.head_dim, dtype=LOW)
        want = model(x)
        got = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
        self.assertSame(got, want, "aot_eager against eager")

    def test_opcheck(self):
        """torch.library.opcheck of both ops on CUDA tensors."""
        cfg = ("lighthouse", DEEP["levels"], DEEP["pooling"], DEEP["topk"], "norm", "bnhd", None, False, 0)
        q, k, v = self.qkv(1, self.seq, 4, 2, self.head_dim, LOW)
        torch.library.opcheck(torch.ops.lighthouse.attention_forward.default, (q, k, v, *cfg))
        q, k, v = (x.detach() for x in (q, k, v))
        out, saved = torch.ops.lighthouse.attention_forward(q, k, v, *cfg)
        torch.library.opcheck(torch.ops.lighthouse.attention_backward.default,
                              (q, k, v, None, torch.randn_like(q), saved, *cfg))

    @gpu_only
    def test_runs_on_current_stream(self):
        """The op runs on PyTorch's current stream: inputs written on a side stream behind a
        long sleep are what it reads (another stream would read them too early)."""
        for mode in ("lighthouse", "dense"):
            q, k, v = self.qkv(1, self.seq, 4, 2, self.head_dim, LOW, grad=False)
            fresh = [self.randn(*x.shape, dtype=x.dtype) for x in (q, k, v)]
            want = lt.attention(*fresh, mode=mode, **self.config)
            side = torch.cuda.Stream(DEVICE)
            side.wait_stream(torch.cuda.current_stream(DEVICE))
            with torch.cuda.stream(side):
                torch.cuda._sleep(200_000_000)  # about 0.1 s of GPU time
                for x, f in zip((q, k, v), fresh):
                    x.copy_(f)
                got = lt.attention(q, k, v, mode=mode, **self.config)
            side.synchronize()
            self.assertSame(got, want, f"{mode}: the op on a side stream (another stream reads stale inputs)")

    @gpu_only
    def test_autocast(self):
        """Under torch.autocast, float32 inputs run in the autocast dtype (as SDPA does) and their
        gradients come back in float32."""
        for dtype in self.dtypes:
            q, k, v = self.qkv(1, self.seq, 4, 2, self.head_dim, torch.float32)
            with torch.autocast("cuda", dtype=dtype):
                out = lt.attention(q, k, v, **self.config)
            self.assertEqual(out.dtype, dtype)
            grads = torch.autograd.grad(out.float().sum(), (q, k, v))
            self.assertEqual([g.dtype for g in grads], [torch.float32] * 3)
            self.assertSame(out, lt.attention(*(x.detach().to(dtype) for x in (q, k, v)), **self.config),
                            f"autocast {dtype}")

    @gpu_only
    def test_cuda_graph_capture_and_replay(self):
        """Forward and backward captured into one CUDA graph, replayed on new inputs, equal eager
        calls (the plan is made by the warm-up: making one inside capture is refused)."""
        for mode in ("lighthouse", "dense"):
            q, k, v = self.qkv(1, self.seq, 4, 2, self.head_dim, LOW)
            dout = self.randn(*q.shape, dtype=LOW)
            side = torch.cuda.Stream(DEVICE)
            side.wait_stream(torch.cuda.current_stream(DEVICE))
            with torch.cuda.stream(side):  # warm-up on a side stream, as PyTorch recommends
                for _ in range(2):
                    torch.autograd.grad(lt.attention(q, k, v, mode=mode, **self.config), (q, k, v), dout)
            torch.cuda.current_stream(DEVICE).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = lt.attention(q, k, v, mode=mode, **self.config)
                static_grads = torch.autograd.grad(static_out, (q, k, v), dout)
            for trial in range(2):
                with torch.no_grad():
                    for x in (q, k, v, dout):
                        x.copy_(self.randn(*x.shape, dtype=x.dtype))
                graph.replay()
                want = lt.attention(q, k, v, mode=mode, **self.config)
                want_grads = torch.autograd.grad(want, (q, k, v), dout)
                torch.cuda.synchronize(DEVICE)
                for name, g, w in zip(("out", "dq", "dk", "dv"), (static_out, *static_grads), (want, *want_grads)):
                    self.assertSame(g, w, f"{mode} replay {trial}: {name} against eager")

    @gpu_only
    def test_capture_without_plan_is_refused(self):
        """Making a plan inside capture is refused with a sentence that says to warm up first."""
        q, k, v = self.qkv(1, self.seq, 2, 2, self.head_dim, LOW, grad=False)
        graph, refusal = torch.cuda.CUDAGraph(), None
        with torch.cuda.graph(graph):
            try:  # a softmax scale no other test uses: no plan exists for it
                lt.attention(q, k, v, softmax_scale=0.123, **self.config)
            except RuntimeError as e:
                refusal = e
        self.assertIsNotNone(refusal, "a plan was made during capture")
        self.assertIn("during CUDA-graph capture", str(refusal))

    @gpu_only
    def test_compile_reduce_overhead(self):
        """torch.compile(mode="reduce-overhead"): PyTorch's own CUDA graphs around the op, forward
        and backward, over several steps with new inputs, equal eager."""
        model = AttentionBlock(4 * self.head_dim, heads=4, kv_heads=2, config=self.config).to(DEVICE, LOW)
        if inductor_can_build():
            compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
        else:
            print("NOTE: no C compiler or Python.h: the cudagraphs backend (no Inductor code generation)", flush=True)
            compiled = torch.compile(model, fullgraph=True, backend="cudagraphs")
        for step in range(4):
            x = self.randn(1, self.seq, 4 * self.head_dim, dtype=LOW)
            eager_x, compiled_x = x.clone().requires_grad_(), x.clone().requires_grad_()
            want = model(eager_x)
            want_grad = torch.autograd.grad(want.float().square().sum(), eager_x)[0]
            torch.compiler.cudagraph_mark_step_begin()
            got = compiled(compiled_x)
            got_grad = torch.autograd.grad(got.float().square().sum(), compiled_x)[0]
            self.assertClose(got.clone(), want, 2e-2, f"step {step}: out")
            self.assertClose(got_grad.clone(), want_grad, 2e-2, f"step {step}: dx")

    def test_local_ring_equals_cpu_ring(self):
        """A W = 2 ring of this GPU equals the CPU backend's ring on the same (rounded) inputs."""
        world, config = 2, dict(levels=2, pooling=4, topk=512)
        for mode in ("lighthouse", "dense"):
            q, k, v = self.qkv(1, 4096, 4, 2, self.head_dim, LOW, grad=False)
            dout = self.randn(*q.shape, dtype=LOW)
            gpu = lt.local_ring(world, DEVICE)
            cpu = lt.local_ring(world, "cpu")
            got, got_grads = run_ring(gpu, q, k, v, dout, mode=mode, autograd=False, **config)
            want, want_grads = run_ring(cpu, *(x.float().cpu() for x in (q, k, v, dout)), mode=mode, autograd=True,
                                        **config)
            for r in range(world):
                self.assertClose(got[r], want[r], 2e-2, f"{mode} rank {r}: out")
                for name, g, w in zip(("dq", "dk", "dv"), got_grads[r], want_grads[r]):
                    self.assertClose(g, w, 2e-2, f"{mode} rank {r}: {name}")
            for handle in gpu + cpu:
                handle.close()


class CudaDistributed(unittest.TestCase):
    """NCCL rings made by nccl_ring for a torch.distributed process group."""

    @gpu_only
    def test_nccl_ring_one_rank(self):
        """A one-rank NCCL group: its ring equals the one-rank in-process ring (1e-3)."""
        import torch.distributed as dist
        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group("nccl", init_method=f"file://{tmp}/store", rank=0, world_size=1,
                                    device_id=DEVICE)
            try:
                try:
                    nccl = lt.nccl_ring()
                except lighthouse.BackendUnavailableError as e:
                    self.skipTest(f"NOTE: the library cannot load NCCL here: {e}")
                local = lt.local_ring(1, DEVICE)
                gen = torch.Generator().manual_seed(7)
                q, k, v, dout = (torch.randn(1, 4096, h, 64, generator=gen).to(DEVICE, LOW)
                                 for h in (4, 2, 2, 4))
                config = dict(levels=2, pooling=4, topk=256)
                for mode in ("lighthouse", "dense"):
                    got, got_grads = run_ring([nccl], q, k, v, dout, mode=mode, autograd=True, **config)
                    want, want_grads = run_ring(local, q, k, v, dout, mode=mode, autograd=True, **config)
                    self.assertLessEqual(ref.rel_max(got[0], want[0]), 1e-3, f"{mode}: out")
                    for name, g, w in zip(("dq", "dk", "dv"), got_grads[0], want_grads[0]):
                        self.assertLessEqual(ref.rel_max(g, w), 1e-3, f"{mode}: {name}")
                nccl.close()
                local[0].close()
            finally:
                dist.destroy_process_group()

    @gpu_only
    @unittest.skipIf(ON_CPU or torch.cuda.device_count() < 2, "needs two GPUs (one process each)")
    def test_nccl_ring_two_processes(self):
        """Two processes, one GPU each, one NCCL ring of W = 2: each rank's shard of out and
        gradients equals the same W = 2 ring run in-process on its own GPU (1e-3)."""
        import torch.multiprocessing as mp
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(_nccl_rank, args=(f"file://{tmp}/store",), nprocs=2, join=True)


def _nccl_rank(rank, store):
    import torch.distributed as dist
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method=store, rank=rank, world_size=2, device_id=device)
    try:
        gen = torch.Generator().manual_seed(11)
        q, k, v, dout = (torch.randn(1, 8192, h, 64, generator=gen).to(device, LOW) for h in (4, 2, 2, 4))
        nccl = lt.nccl_ring()
        config = dict(levels=2, pooling=4, topk=512)
        for mode in ("lighthouse", "dense"):
            shard = [lt.shard_sequence(x, rank, 2).requires_grad_(i < 3) for i, x in enumerate((q, k, v, dout))]
            out = lt.attention(*shard[:3], mode=mode, ring=nccl, **config)
            grads = torch.autograd.grad(out, shard[:3], shard[3])
            local = lt.local_ring(2, device)
            want, want_grads = run_ring(local, q, k, v, dout, mode=mode, autograd=False, **config)
            for name, g, w in zip(("out", "dq", "dk", "dv"), (out, *grads), (want[rank], *want_grads[rank])):
                err = ref.rel_max(g, w)
                if not err <= 1e-3:
                    raise AssertionError(f"rank {rank} {mode}: {name} error {err:.3e} > 1e-3")
            for handle in local:
                handle.close()
        nccl.close()
    finally:
        dist.destroy_process_group()


class DeviceDescription(unittest.TestCase):
    """Context.save_device and lighthouse.precompile_device end to end: this GPU described, the
    kernels and cuDNN plans of a configuration built for the description on a CPU context, and a
    CUDA plan of that configuration on that cache directory restoring them (no graph or
    heuristics time) and computing what a plan built here computes."""

    @gpu_only
    def test_plans_built_for_the_description_are_restored(self):
        params = dict(batch=1, seq_len=8192, heads=4, kv_heads=2, head_dim=64, dtype="bfloat16",
                      topk=512)
        with tempfile.TemporaryDirectory() as built_dir, tempfile.TemporaryDirectory() as aot_dir:
            path = os.path.join(built_dir, "gpu.dev")
            here = lighthouse.Context("cuda")
            here.set_cache_dir(built_dir)
            here.save_device(path)
            with open(path) as f:
                self.assertEqual(f.readline(), "LHDEV1\n")
            cpu = lighthouse.Context("cpu")
            cpu.set_cache_dir(aot_dir)
            kernels, cudnn_plans = lighthouse.precompile_device(cpu, path, **params)
            self.assertGreater(kernels, 0)
            self.assertEqual(cudnn_plans, 2)  # the attention step's forward and backward
            self.assertEqual(lighthouse.precompile_device(cpu, path, **params), (0, 0))

            there = lighthouse.Context("cuda")
            there.set_cache_dir(aot_dir)
            restored, built = there.plan(**params), here.plan(**params)
            for query in (lighthouse._capi.LH_QUERY_SETUP_CUDNN_GRAPH_US,
                          lighthouse._capi.LH_QUERY_SETUP_CUDNN_HEURISTICS_US):
                self.assertEqual(restored.query(query), 0)
            self.assertGreater(built.query(lighthouse._capi.LH_QUERY_SETUP_CUDNN_HEURISTICS_US), 0)

            torch.manual_seed(3)
            q = torch.randn(1, 8192, 4, 64, device=DEVICE, dtype=torch.bfloat16)
            k = torch.randn(1, 8192, 2, 64, device=DEVICE, dtype=torch.bfloat16)
            v = torch.randn(1, 8192, 2, 64, device=DEVICE, dtype=torch.bfloat16)
            outs = []
            for plan in (restored, built):
                info = plan.info
                out = torch.full_like(q, float("nan"))  # poisoned: an unwritten element fails
                saved = torch.empty(info.saved_bytes, dtype=torch.uint8, device=DEVICE)
                ws = torch.empty(max(info.fwd_workspace_bytes, 1), dtype=torch.uint8, device=DEVICE)
                plan.forward_raw(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                 saved.data_ptr(), ws.data_ptr(), torch.cuda.current_stream().cuda_stream)
                outs.append(out)
            torch.cuda.synchronize()
            self.assertFalse(outs[0].isnan().any().item())
            self.assertTrue(torch.equal(outs[0], outs[1]), "the same engine gives the same bits")


if __name__ == "__main__":
    _support.run()
