"""The core of the Python binding without numpy or PyTorch: finding the library (and saying what
was tried), statuses and their exceptions, configuration errors with the library's sentences,
plan sizes and parameters, handle lifetimes, rings and hooks, the raw entry points on ctypes
buffers. Runs with the library named by LIGHTHOUSE_LIB (ctest sets it)."""
import _support

import array  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import unittest  # noqa: E402

import lighthouse as lh  # noqa: E402
from lighthouse import _capi  # noqa: E402

G1 = dict(seq_len=2048, heads=2, head_dim=32, levels=2, pooling=4, topk=128)


def probe(code, **env):
    """Runs `code` in a fresh interpreter with the package on its path and `env` replacing the
    library-finding variables; returns (exit status, output)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("LIGHTHOUSE_LIB", "LIGHTHOUSE_LIB_DIR", "PKG_CONFIG", "PKG_CONFIG_PATH", "LD_LIBRARY_PATH")}
    base.update(env)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(lh.__file__)))
    run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {pkg!r}); {code}"],
                         env=base, capture_output=True, text=True, timeout=120)
    return run.returncode, run.stdout + run.stderr


def floats(n, fill=None):
    """A 64-byte aligned float buffer of n elements (ctypes, no numpy): (address, array)."""
    raw = (ctypes.c_char * (4 * n + 64))()
    start = (-ctypes.addressof(raw)) % 64
    view = (ctypes.c_float * n).from_buffer(raw, start)
    if fill is not None:
        for i in range(n):
            view[i] = fill(i)
    return ctypes.addressof(view), (raw, view)


class Loading(unittest.TestCase):
    LIB = os.environ.get("LIGHTHOUSE_LIB") or lh.library_path()[0]

    def test_explicit_path(self):
        rc, out = probe("import lighthouse; print(lighthouse.library_path())", LIGHTHOUSE_LIB=self.LIB)
        self.assertEqual(rc, 0, out)
        self.assertIn("'LIGHTHOUSE_LIB'", out)

    def test_library_directory(self):
        rc, out = probe("import lighthouse; print(lighthouse.library_path(), lighthouse.version_string())",
                        LIGHTHOUSE_LIB_DIR=os.path.dirname(os.path.realpath(self.LIB)))
        self.assertEqual(rc, 0, out)
        self.assertIn("'LIGHTHOUSE_LIB_DIR'", out)

    def test_system_loader(self):
        rc, out = probe("import lighthouse; print(lighthouse.library_path())", PKG_CONFIG="/nonexistent/pkg-config",
                        LD_LIBRARY_PATH=os.path.dirname(os.path.realpath(self.LIB)))
        self.assertEqual(rc, 0, out)
        self.assertIn("'system loader'", out)

    def test_pkg_config(self):
        import shutil
        if shutil.which("pkg-config") is None:
            self.skipTest("pkg-config is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "lighthouse.pc"), "w") as f:
                f.write(f"libdir={os.path.dirname(os.path.realpath(self.LIB))}\nName: lighthouse\n"
                        "Description: test\nVersion: 0.1.0\nLibs: -L${libdir} -llighthouse\n")
            rc, out = probe("import lighthouse; print(lighthouse.library_path())", PKG_CONFIG_PATH=tmp)
        self.assertEqual(rc, 0, out)
        self.assertIn("'pkg-config'", out)

    def test_failure_lists_every_attempt(self):
        rc, out = probe("import lighthouse; lighthouse.Context('cpu')", LIGHTHOUSE_LIB="/nonexistent/liblighthouse.so")
        self.assertNotEqual(rc, 0)
        self.assertIn("LibraryNotFoundError", out)
        self.assertIn("LIGHTHOUSE_LIB: /nonexistent/liblighthouse.so", out)
        with tempfile.TemporaryDirectory() as empty:
            rc, out = probe("import lighthouse; lighthouse.version_string()", LIGHTHOUSE_LIB_DIR=empty)
            self.assertIn(f"{empty}/liblighthouse.so.0 does not exist", out)
        rc, out = probe("import lighthouse; lighthouse.version_string()", PKG_CONFIG="/nonexistent/pkg-config")
        for attempt in ("LIGHTHOUSE_LIB and LIGHTHOUSE_LIB_DIR are not set", "pkg-config: /nonexistent/pkg-config",
                        "system loader: liblighthouse.so.0", "system loader: liblighthouse.so:"):
            self.assertIn(attempt, out)

    def test_core_imports_neither_numpy_nor_torch(self):
        rc, out = probe("import sys, lighthouse; c = lighthouse.Context('cpu'); "
                        "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))", LIGHTHOUSE_LIB=self.LIB)
        self.assertEqual((rc, out.strip()), (0, "[]"), out)


class Coverage(unittest.TestCase):
    def test_every_function_is_reachable(self):
        """Each function of the ABI is bound by the loaded library and called by the package's
        Python API (not only declared in _capi.py)."""
        pkg = os.path.dirname(os.path.abspath(lh.__file__))
        sources = ""
        for root, _, files in os.walk(pkg):
            sources += "".join(open(os.path.join(root, f)).read() for f in files
                               if f.endswith(".py") and f != "_capi.py")
        for name, _, _ in _capi.FUNCTIONS:
            self.assertTrue(lh.has_function(name), name)
            self.assertTrue(f'"{name}"' in sources or f".{name}(" in sources, f"{name} is not used by the package")


class Statuses(unittest.TestCase):
    def test_version(self):
        self.assertEqual(lh.version_number(), _capi.LH_VERSION_NUMBER)
        self.assertEqual(lh.version_string(), lh.__version__)
        self.assertTrue(lh.version_matches())

    def test_every_status(self):
        for status in lh.Status:
            self.assertEqual(lh.status_string(status), "LH_OK" if status == 0 else f"LH_ERROR_{status.name}")
            if status == lh.Status.OK:
                continue
            e = lh.errors.error(status, "a sentence")
            self.assertIsInstance(e, lh.LighthouseError)
            self.assertEqual((e.status, e.name, e.message), (status, lh.status_string(status), "a sentence"))
            again = pickle.loads(pickle.dumps(e))
            self.assertEqual((type(again), again.status, again.message), (type(e), e.status, e.message))
        self.assertIsInstance(lh.errors.error(lh.Status.TOPK, ""), ValueError)
        self.assertIsInstance(lh.errors.error(lh.Status.OUT_OF_DEVICE_MEMORY, ""), MemoryError)
        self.assertIsInstance(lh.errors.error(lh.Status.IO, ""), OSError)
        self.assertIs(type(lh.errors.error(99, "")), lh.LighthouseError)  # a code newer than the binding

    def test_last_error_is_cleared_by_success(self):
        with self.assertRaises(lh.LighthouseError):
            lh.Context("cpu", device=-1)
        self.assertNotEqual(lh.last_error(), "")
        lh.Context("cpu")
        self.assertEqual(lh.last_error(), "")


class Configuration(unittest.TestCase):
    def setUp(self):
        self.ctx = lh.Context("cpu")

    def refused(self, status, words, **params):
        with self.assertRaises(lh.LighthouseError) as e:
            self.ctx.plan(**{**G1, **params})
        self.assertEqual(e.exception.status, status, e.exception)
        for w in words:
            self.assertIn(w, e.exception.message)
        self.assertEqual(str(e.exception), f"{lh.status_string(status)}: {e.exception.message}")
        return e.exception

    def test_rules_are_refused_with_sentences(self):
        self.refused(lh.Status.TOPK, ["TOPK", "100"], topk=100)
        self.refused(lh.Status.POOLING, ["POOLING", "3"], pooling=3)
        self.refused(lh.Status.LEVELS, ["LEVELS", "9"], levels=9)
        self.refused(lh.Status.SEQ_DIVISIBILITY, ["SEQ_LEN", "2046"], seq_len=2046)
        self.refused(lh.Status.TILE_TOO_SMALL, ["at least 128 entries"], seq_len=512, topk=256)
        self.refused(lh.Status.HEADS_MISMATCH, ["HEADS"], heads=3, kv_heads=2)
        self.refused(lh.Status.INVALID_VALUE, ["SEQ_LEN"], seq_len=0)
        self.refused(lh.Status.UNSUPPORTED_DTYPE, ["float32"], dtype="float16")
        self.refused(lh.Status.UNSUPPORTED, ["STAGE_TIMING"], stage_timing=True)
        e = self.refused(lh.Status.INVALID_VALUE, ["SOFTMAX_SCALE"], softmax_scale=-1.0)
        self.assertIsInstance(e, ValueError)

    def test_scorer_rules_are_refused_with_sentences(self):
        self.refused(lh.Status.INVALID_VALUE, ["DILATION", "at least 1"], scorer="dilated", dilation=0)
        self.refused(lh.Status.SEQ_DIVISIBILITY, ["DILATION = 3"], scorer="dilated", dilation=3)
        self.refused(lh.Status.HEADS_MISMATCH, ["HEADS == KV_HEADS"], scorer="dilated", kv_heads=1)
        self.refused(lh.Status.INVALID_VALUE, ["belongs to SCORER = DILATED"], dilation=8)
        self.refused(lh.Status.INVALID_VALUE, ["DENSE"], scorer="external", mode="dense")
        for unknown in ("gla", 7):  # the binding knows the scorers
            with self.assertRaises(ValueError):
                self.ctx.plan(**G1, scorer=unknown)
        plan = self.ctx.plan(**G1, scorer="dilated", dilation=8)
        self.assertEqual((plan.info.scorer, plan.info.dilation), (lh.Scorer.DILATED, 8))
        self.assertEqual(self.ctx.plan(**G1).info.scorer, lh.Scorer.NORM)
        ext = self.ctx.plan(**G1, scorer=lh.Scorer.EXTERNAL)
        self.assertEqual(ext.info.forward_scores_q_shape, (1, 1, 2, 2048 + 512))
        with self.assertRaises(lh.UnsupportedError) as e:  # an external plan needs its scores
            ext.forward_raw(1, 1, 1, 1, 1)
        self.assertIn("lh_forward_with_scores", e.exception.message)

    def test_binding_refusals(self):
        with self.assertRaises(TypeError):
            self.ctx.plan(seq_length=2048)
        with self.assertRaises(ValueError):
            self.ctx.plan(**G1, layout="nhd")
        with self.assertRaises(ValueError):
            lh.Context("tpu")

    def test_info_and_parameters(self):
        plan = self.ctx.plan(batch=2, kv_heads=1, layout="bhnd", **G1)
        i = plan.info
        self.assertEqual((i.subseq_len, i.pyramid_len), (2048 // 4 + 128 * 4, 2048 + 512))
        self.assertEqual((i.chunks, i.world, i.rank, i.local_seq_len), (1, 1, 0, 2048))
        self.assertEqual((i.backend, i.dtype, i.layout, i.mode), (lh.Backend.CPU, lh.Dtype.FLOAT32, lh.Layout.BHND,
                                                                   lh.Mode.LIGHTHOUSE))
        self.assertEqual((i.q_shape, i.kv_shape), ((2, 2, 2048, 32), (2, 1, 2048, 32)))
        self.assertEqual(i.indices_shape, (2, 2, 1024))
        self.assertAlmostEqual(plan.param("softmax_scale"), 1 / math.sqrt(32))
        self.assertEqual(plan.param("kv_heads"), 1)
        self.assertGreater(i.saved_bytes, 0)
        self.assertIn("S_sel=1024", repr(plan))
        dense = self.ctx.plan(mode="dense", softmax_scale=0.5, **G1)
        self.assertEqual((dense.info.subseq_len, dense.info.softmax_scale), (2048, 0.5))
        with self.assertRaises(lh.LighthouseError):  # CPU plans record no stage times
            plan.stage_ms("gather")

    def test_context_options(self):
        self.ctx.set_num_threads(1)
        self.ctx.set_cache_enabled(False)
        with tempfile.TemporaryDirectory() as tmp:
            self.ctx.set_cache_dir(tmp)
        with self.assertRaises(lh.InvalidArgumentError):
            self.ctx.set_num_threads(-1)
        self.assertEqual(self.ctx.backend, lh.Backend.CPU)


class Precompile(unittest.TestCase):
    def test_kernels_into_the_cache_without_a_gpu(self):
        ctx = lh.Context("cpu")
        gpu = dict(heads=2, head_dim=64, dtype="bfloat16", levels=2)
        with tempfile.TemporaryDirectory() as tmp:
            ctx.set_cache_dir(tmp)
            try:
                compiled = lh.precompile(ctx, "sm_90", **gpu)
            except lh.BackendUnavailableError as e:
                self.assertIn("without its kernel compiler", e.message)
                self.skipTest("a library built without its kernel compiler")
            self.assertGreater(compiled, 0)
            self.assertTrue(os.listdir(tmp))
            self.assertEqual(lh.precompile(ctx, "sm_90", **gpu), 0)  # all in the cache now
            with self.assertRaises(lh.InvalidArgumentError):
                lh.precompile(ctx, "not-a-chip", **gpu)
            with self.assertRaises(lh.UnsupportedError):  # float32 is not a GPU dtype
                ctx.plan(**G1).precompile("sm_90")

    def test_device_description_refusals_without_a_gpu(self):
        # Only the refusals: writing a description needs a GPU, and using one needs a file
        # written on a GPU.
        ctx = lh.Context("cpu")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "gpu.device")
            with self.assertRaises(lh.UnsupportedError) as caught:
                ctx.save_device(path)
            self.assertIn("no GPU to describe", caught.exception.message)
            self.assertFalse(os.path.exists(path))

            ctx.set_cache_dir(tmp)
            gpu = dict(seq_len=32768, heads=2, head_dim=64, dtype="bfloat16", topk=2048)
            with self.assertRaises(lh.LighthouseError) as caught:
                lh.precompile_device(ctx, path, **gpu)
            if isinstance(caught.exception, lh.BackendUnavailableError):
                self.skipTest("a library built without its kernel compiler")
            self.assertIsInstance(caught.exception, lh.LighthouseIOError)
            self.assertIn("cannot open the device description", caught.exception.message)
            # The plan's parameters are checked before the file is read.
            with self.assertRaises(lh.InvalidArgumentError):
                lh.precompile_device(ctx, path, **dict(gpu, seq_len=None))
            # A finalized plan goes the same way.
            with self.assertRaises(lh.LighthouseIOError):
                ctx.plan(**G1).precompile_device(path)


class Lifetimes(unittest.TestCase):
    def test_plan_keeps_its_context(self):
        plan = lh.Context("cpu").plan(**G1)  # the context object is dropped at once
        gc.collect()
        self.assertEqual(plan.context.backend, lh.Backend.CPU)
        run_forward(plan)

    def test_close_order_is_enforced_by_the_library(self):
        ctx = lh.Context("cpu")
        plan = ctx.plan(**G1)
        with self.assertRaises(lh.BadStateError) as e:
            ctx.close()
        self.assertIn("still alive", e.exception.message)
        plan.close()
        ctx.close()
        with self.assertRaises(ValueError):
            ctx.plan(**G1)
        self.assertIn("closed", repr(plan))

    def test_failed_plan_releases_its_handle(self):
        ctx = lh.Context("cpu")
        with self.assertRaises(lh.LighthouseError):
            ctx.plan(**{**G1, "topk": 100})
        gc.collect()
        ctx.close()  # no plan of it is alive


def run_forward(plan, hooks_check=None):
    """A forward and backward of `plan` on ctypes buffers; returns the output as a list."""
    i = plan.info
    nq = math.prod(i.q_shape)
    nk = math.prod(i.kv_shape)
    q, qb = floats(nq, lambda j: math.sin(j * 0.37))
    k, kb = floats(nk, lambda j: math.cos(j * 0.11))
    v, vb = floats(nk, lambda j: math.sin(j * 0.05 + 1))
    out, ob = floats(nq)
    dq, dqb = floats(nq)
    dk, dkb = floats(nk)
    dv, dvb = floats(nk)
    saved = (ctypes.c_char * (i.saved_bytes + 64))()
    ws = (ctypes.c_char * (max(i.fwd_workspace_bytes, i.bwd_workspace_bytes) + 64))()
    align = lambda buf: ctypes.addressof(buf) + (-ctypes.addressof(buf)) % 64  # noqa: E731
    plan.forward_raw(q, k, v, out, align(saved), align(ws))
    plan.backward_raw(q, k, v, out, out, align(saved), dq, dk, dv, align(ws))
    result = array.array("f", ob[1])
    assert all(math.isfinite(x) for x in result) and any(result)
    assert all(math.isfinite(x) for x in dqb[1])
    return result


class RawEntryPoints(unittest.TestCase):
    def test_forward_backward_on_ctypes_buffers(self):
        plan = lh.Context("cpu").plan(**G1)
        self.assertEqual(run_forward(plan), run_forward(plan))  # deterministic

    def test_bad_pointer_is_refused(self):
        plan = lh.Context("cpu").plan(**G1)
        with self.assertRaises(lh.InvalidArgumentError) as e:
            plan.forward_raw(None, None, None, None, None)
        self.assertEqual(e.exception.status, lh.Status.NULL_POINTER)


class Rings(unittest.TestCase):
    def test_local_ring(self):
        ring = lh.Ring.local(2)
        ctx = lh.Context("cpu")
        plans = [ctx.plan(seq_len=4096, heads=2, head_dim=32, levels=2, pooling=4, topk=512, ring=ring, rank=r)
                 for r in range(2)]
        self.assertEqual([(p.info.world, p.info.rank, p.info.chunks, p.info.local_seq_len) for p in plans],
                         [(2, 0, 2, 2048), (2, 1, 2, 2048)])
        with self.assertRaises(lh.BadStateError) as e:
            ring.close()
        self.assertIn("still alive", e.exception.message)
        for p in plans:
            p.close()
        ring.close()
        with self.assertRaises(ValueError):
            ctx.plan(**G1, ring=lh.Ring.local(2))  # a local ring needs the plan's rank
        with self.assertRaises(lh.InvalidArgumentError):
            lh.Ring.local(0)

    def test_nccl_needs_cuda(self):
        ctx = lh.Context("cpu")
        with self.assertRaises(lh.UnsupportedError):
            ctx.nccl_unique_id()
        with self.assertRaises(lh.UnsupportedError):
            lh.Ring.nccl_from_id(ctx, bytes(128), 0, 1)
        with self.assertRaises(ValueError):
            lh.Ring.nccl_from_id(ctx, bytes(12), 0, 1)


class Hooks(unittest.TestCase):
    def plan(self, forward, backward):
        return lh.Context("cpu").plan(**G1, attention_hooks=lh.AttentionHooks(forward, backward))

    def test_library_step_through_hooks_is_identical(self):
        seen = []

        def forward(call):
            seen.append((type(call).__name__, call.info.attention_shape, call.stream))
            call.run_library()

        def backward(call):
            seen.append((type(call).__name__, call.info.attention_shape, call.stream))
            call.run_library()

        want = run_forward(lh.Context("cpu").plan(**G1))
        self.assertEqual(run_forward(self.plan(forward, backward)), want)
        self.assertEqual(seen, [("AttentionForwardCall", (1, 1, 2, 1024, 32), 0),
                                ("AttentionBackwardCall", (1, 1, 2, 1024, 32), 0)])

    def test_hook_status_and_exception(self):
        plan = self.plan(lambda call: lh.Status.COMMUNICATION, lambda call: None)
        with self.assertRaises(lh.CommunicationError) as e:
            run_forward(plan)
        self.assertIn("forward hook returned status 19", e.exception.message)

        def broken(call):
            raise KeyError("from the hook")

        plan = self.plan(broken, broken)
        with self.assertRaises(KeyError):
            run_forward(plan)
        hooks = lh.AttentionHooks(broken, broken)
        with self.assertRaises(lh.LighthouseError):  # finalize fails: the hooks stay free
            lh.Context("cpu").plan(**{**G1, "seq_len": 2046}, attention_hooks=hooks)
        kept = lh.Context("cpu").plan(**G1, attention_hooks=hooks)
        with self.assertRaises(ValueError):  # one plan per AttentionHooks
            lh.Context("cpu").plan(**G1, attention_hooks=hooks)
        self.assertIs(kept._hooks, hooks)


if __name__ == "__main__":
    _support.run()
