"""lighthouse.torch on the CPU backend (float32): forward and gradients against plain PyTorch,
dense mode against SDPA, the op against the plan's raw entry points, torch.compile with
fullgraph=True, torch.library.opcheck, the library's refusals, an in-process ring with autograd.
Exits 77 (skipped) where PyTorch is not installed."""
import _support

_support.require("torch", "the PyTorch layer's tests need PyTorch")

import unittest  # noqa: E402

import torch  # noqa: E402

import lighthouse.torch as lt  # noqa: E402
from torch_checks import SMALL, AttentionChecks  # noqa: E402


class CpuAttention(AttentionChecks, unittest.TestCase):
    device = torch.device("cpu")
    dtypes = (torch.float32,)
    bound = {torch.float32: 2e-5}


class CpuOpcheck(unittest.TestCase):
    """torch.library.opcheck: schema, fake implementation against the real one (also under
    dynamic shapes), autograd registration, AOT dispatch."""

    def test_forward_op(self):
        for mode in ("lighthouse", "dense"):
            q, k, v = (torch.randn(1, 1024, h, 32, requires_grad=True) for h in (4, 2, 2))
            args = (q, k, v, mode, SMALL["levels"], SMALL["pooling"], SMALL["topk"], "norm", "bnhd", None, False, 0)
            torch.library.opcheck(torch.ops.lighthouse.attention_forward.default, args)

    def test_backward_op(self):
        for mode in ("lighthouse", "dense"):
            q, k, v = (torch.randn(1, 1024, h, 32) for h in (4, 2, 2))
            cfg = (mode, SMALL["levels"], SMALL["pooling"], SMALL["topk"], "norm", "bnhd", None, False, 0)
            out, saved = torch.ops.lighthouse.attention_forward(q, k, v, *cfg)
            dout = torch.randn_like(q)
            torch.library.opcheck(torch.ops.lighthouse.attention_backward.default,
                                  (q, k, v, out if mode == "dense" else None, dout, saved, *cfg))


class CpuBehaviour(unittest.TestCase):
    def test_plan_cache(self):
        """One plan per configuration and device, reused by every call."""
        q = torch.randn(1, 1024, 2, 32)
        a = lt.get_plan(q, q, **SMALL)
        self.assertIs(a, lt.get_plan(q, q, **SMALL))
        self.assertIsNot(a, lt.get_plan(q, q, mode="dense"))
        self.assertEqual(a.info.subseq_len, 1024 // 4 + 128 * 4)

    def test_non_contiguous_inputs(self):
        """Strided inputs (a transposed view) give what their contiguous copies give."""
        base = torch.randn(1, 2, 1024, 32)
        q = base.transpose(1, 2)  # [B, N, H, D] view, not contiguous
        self.assertFalse(q.is_contiguous())
        self.assertTrue(torch.equal(lt.attention(q, q, q, **SMALL), lt.attention(q.contiguous(), q.contiguous(),
                                                                                 q.contiguous(), **SMALL)))

    def test_saved_output_needs_no_gradient(self):
        q = torch.randn(1, 1024, 2, 32, requires_grad=True)
        out, saved = torch.ops.lighthouse.attention_forward(q, q, q, "lighthouse", 2, 4, 128, "norm", "bnhd", None,
                                                             False, 0)
        self.assertTrue(out.requires_grad)
        self.assertFalse(saved.requires_grad)
        self.assertEqual(saved.dtype, torch.uint8)

    def test_cpu_autocast_keeps_float32(self):
        """CPU autocast does not cast: the CPU backend computes in float32."""
        q = torch.randn(1, 1024, 2, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = lt.attention(q, q, q, **SMALL)
        self.assertEqual(out.dtype, torch.float32)
        self.assertTrue(torch.equal(out, lt.attention(q, q, q, **SMALL)))

    def test_local_ring_rank_changes_configuration(self):
        """One RingRank, Lighthouse then dense then Lighthouse again: a rank of a local ring has one
        live plan, so each new configuration replaces the cached one."""
        from torch_checks import run_ring
        q, k, v, dout = (torch.randn(1, 4096, 2, 32) for _ in range(4))
        ranks = lt.local_ring(2, "cpu")
        config = dict(levels=2, pooling=4, topk=512)
        first = run_ring(ranks, q, k, v, dout, mode="lighthouse", autograd=True, **config)
        run_ring(ranks, q, k, v, dout, mode="dense", autograd=True, **config)
        again = run_ring(ranks, q, k, v, dout, mode="lighthouse", autograd=True, **config)
        for a, b in zip(first[0] + [g for r in first[1] for g in r], again[0] + [g for r in again[1] for g in r]):
            self.assertTrue(torch.equal(a, b))
        for r in ranks:
            r.close()

    def test_compile_caches_are_keyed_on_the_library(self):
        """torch.compile's on-disk caches key on the loaded library, whose sizes traced graphs keep."""
        import os
        from lighthouse import library_path, version_string
        tag = torch.compiler.config.cache_key_tag
        self.assertIn(f"liblighthouse-{version_string()}-{os.stat(library_path()[0]).st_size}-", tag)

    def test_shard_roundtrip(self):
        x = torch.arange(2 * 16 * 3).reshape(2, 16, 3, 1)
        shards = [lt.shard_sequence(x, r, 2) for r in range(2)]
        self.assertEqual(shards[0][0, :, 0, 0].tolist(), [0, 3, 6, 9, 36, 39, 42, 45])  # chunks 0 and 3
        self.assertTrue(torch.equal(lt.unshard_sequence(shards), x))
        y = x.transpose(1, 2)
        self.assertTrue(torch.equal(lt.unshard_sequence([lt.shard_sequence(y, r, 2, "bhnd") for r in range(2)],
                                                        "bhnd"), y))

    def test_nccl_ring_over_two_processes(self):
        """nccl_ring's id broadcast through a two-process (gloo) group: every rank gets rank 0's
        value, and on a CPU context rank 0's refusal (the library's sentence) reaches both."""
        import tempfile
        import torch.multiprocessing as mp
        with tempfile.TemporaryDirectory() as tmp:
            results = mp.get_context("spawn").Manager().dict()
            mp.spawn(_two_ranks, args=(f"file://{tmp}/store", results), nprocs=2, join=True)
            results = dict(results)
        self.assertEqual(results[0][0], results[1][0])
        for r in range(2):
            self.assertIn("NCCL rings need a CUDA context", results[r][1], f"rank {r}")


def _two_ranks(rank, store, results):
    import os
    import torch.distributed as dist
    from lighthouse.torch.distributed import broadcast_from_first
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2)
    try:
        shared = broadcast_from_first(lambda: os.urandom(128), None, torch.device("cpu"))
        try:
            lt.nccl_ring(device="cpu")
            refusal = "no error"
        except Exception as e:  # the same UnsupportedError on both ranks
            refusal = f"{type(e).__name__}: {e}"
        results[rank] = (shared, refusal)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _support.run()
