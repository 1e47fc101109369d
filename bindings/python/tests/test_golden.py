"""The binding's numpy entry points on the CPU backend against the golden vectors (tests/golden,
format in its README): scores within 1e-5, selection indices identical (from the library's scores
and from the stored ones), out, dq, dk, dv within 1e-5 relative (Frobenius norms); the stage entry
points and the attention step composed by hand equal forward; hooks see the sub-sequence as numpy
views; both layouts; a W = 2 local ring on two threads; the arrays' checks. Exits 77 (skipped)
where numpy is missing."""
import _support

np = _support.require("numpy", "the golden-vector tests run on numpy arrays")

import json  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import unittest  # noqa: E402

import lighthouse as lh  # noqa: E402

TOLERANCE = 1e-5


def rel(got, want):
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def cases():
    with open(os.path.join(_support.GOLDEN_DIR, "manifest.json")) as f:
        return json.load(f)


def load(case, what):
    spec = case["files"][what]
    dtype = np.int32 if what == "indices" else np.float32
    return np.fromfile(os.path.join(_support.GOLDEN_DIR, spec["file"]), dtype).reshape(spec["shape"])


def golden_plan(ctx, case, **extra):
    return ctx.plan(batch=case["B"], seq_len=case["N"], heads=case["H"], head_dim=case["D"], levels=case["levels"],
                    pooling=case["pooling"], topk=case["topk"], **extra)


class Golden(unittest.TestCase):
    def setUp(self):
        self.ctx = lh.Context("cpu")

    def test_forward_backward_and_selection(self):
        for case in cases():
            with self.subTest(case["name"]):
                plan = golden_plan(self.ctx, case)
                self.assertEqual(plan.info.subseq_len, case["S_sel"])
                q, k, v = (load(case, x) for x in "qkv")
                want_out = np.ascontiguousarray(load(case, "out").transpose(0, 2, 1, 3))  # stored [B,H,N,D]
                dout = np.ascontiguousarray(load(case, "dout").transpose(0, 2, 1, 3))

                sq, sk = plan.scores(q, k)
                self.assertLess(rel(sq, load(case, "scores_qk")), TOLERANCE)
                self.assertLess(rel(sk, load(case, "scores_kq")), TOLERANCE)
                want_idx = load(case, "indices")
                np.testing.assert_array_equal(plan.select(sq, sk), want_idx)
                np.testing.assert_array_equal(plan.select(load(case, "scores_qk"), load(case, "scores_kq")), want_idx)

                out, saved = plan.forward(q, k, v)
                dq, dk, dv = plan.backward(q, k, v, None, dout, saved)
                errors = {"out": rel(out, want_out), "dq": rel(dq, load(case, "dq")),
                          "dk": rel(dk, load(case, "dk")), "dv": rel(dv, load(case, "dv"))}
                print(f"  {case['name']}: " + " ".join(f"{n} {e:.1e}" for n, e in errors.items()), flush=True)
                for name, err in errors.items():
                    self.assertLess(err, TOLERANCE, f"{case['name']}: {name}")

    def test_dilated_scorer(self):
        """tests/golden-dilated: the dilated scorer's scores, selection, out and gradients."""
        path = os.path.join(_support.GOLDEN_DIR, "..", "golden-dilated")
        with open(os.path.join(path, "manifest.json")) as f:
            dilated = json.load(f)
        for case in dilated:
            with self.subTest(case["name"]):
                def get(what):
                    spec = case["files"][what]
                    dtype = np.int32 if what == "indices" else np.float32
                    return np.fromfile(os.path.join(path, spec["file"]), dtype).reshape(spec["shape"])
                plan = golden_plan(self.ctx, case, scorer="dilated", dilation=case["dilation"])
                q, k, v = (get(x) for x in "qkv")
                sq, sk = plan.scores_qkv(q, k, v)
                self.assertLess(rel(sq, get("scores_qk")), TOLERANCE)
                self.assertLess(rel(sk, get("scores_kq")), TOLERANCE)
                np.testing.assert_array_equal(plan.select(sq, sk), get("indices"))
                out, saved = plan.forward(q, k, v)
                dout = np.ascontiguousarray(get("dout").transpose(0, 2, 1, 3))
                dq, dk, dv = plan.backward(q, k, v, None, dout, saved)
                self.assertLess(rel(out, np.ascontiguousarray(get("out").transpose(0, 2, 1, 3))), TOLERANCE)
                for name, got in (("dq", dq), ("dk", dk), ("dv", dv)):
                    self.assertLess(rel(got, get(name)), TOLERANCE, f"{case['name']}: {name}")

    def test_external_scores_equal_the_norm_scorer(self):
        """The norm scorer's own scores through forward_with_scores: bit-identical results."""
        case = cases()[1]
        norm = golden_plan(self.ctx, case)
        ext = golden_plan(self.ctx, case, scorer="external")
        q, k, v = (load(case, x) for x in "qkv")
        dout = np.ascontiguousarray(load(case, "dout").transpose(0, 2, 1, 3))
        sq, sk = norm.scores(q, k)
        out, saved = norm.forward(q, k, v)
        grads = norm.backward(q, k, v, None, dout, saved)
        out2, saved2 = ext.forward_with_scores(q, k, v, sq[None], sk[None])
        grads2 = ext.backward(q, k, v, None, dout, saved2)
        np.testing.assert_array_equal(out2, out)
        for a, b in zip(grads2, grads):
            np.testing.assert_array_equal(a, b)
        index_bytes = case["B"] * case["H"] * case["S_sel"] * 4  # the CPU keeps them first in saved
        np.testing.assert_array_equal(saved2[:index_bytes], saved[:index_bytes])

    def test_stages_compose_to_forward(self):
        """scores -> select -> gather -> attention step -> scatter is forward taken apart."""
        case = cases()[0]
        plan = golden_plan(self.ctx, case)
        q, k, v = (load(case, x) for x in "qkv")
        indices = plan.select(*plan.scores(q, k))
        q_sel, k_sel, v_sel = plan.gather(q, k, v, indices)
        shape = plan.info.attention_shape  # [C = 1, B, H, S_sel, D] without a ring
        o_sel, lse = plan.attention_forward(*(x.reshape(shape) for x in (q_sel, k_sel, v_sel)))
        self.assertEqual(lse.shape, plan.info.lse_shape)
        out = plan.scatter(indices, o_sel.reshape(plan.info.selected_shape))
        want, _ = plan.forward(q, k, v)
        self.assertLess(rel(out, want), 1e-6)
        do_sel = np.ones_like(o_sel)
        dq_sel, dk_sel, dv_sel = plan.attention_backward(*(x.reshape(shape) for x in (q_sel, k_sel, v_sel)), o_sel, lse,
                                                         do_sel)
        self.assertTrue(all(np.isfinite(x).all() for x in (dq_sel, dk_sel, dv_sel)))

    def test_hooks_see_numpy_views(self):
        """A hook computing attention itself (numpy, float64) on the views it is given, against
        the library's own step."""
        case = cases()[0]
        scale = 1 / np.sqrt(case["D"])

        def forward(call):
            a = call.arrays()
            q, k, v = (a[n].astype(np.float64) for n in ("q_sel", "k_sel", "v_sel"))
            s = np.einsum("cbhsd,cbhtd->cbhst", q, k) * scale
            s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
            m = s.max(-1, keepdims=True)
            p = np.exp(s - m)
            a["o_sel"][...] = np.einsum("cbhst,cbhtd->cbhsd", p / p.sum(-1, keepdims=True), v)
            a["lse"][...] = (m[..., 0] + np.log(p.sum(-1)))

        plan = golden_plan(self.ctx, case, attention_hooks=lh.AttentionHooks(forward, lambda call: call.run_library()))
        q, k, v = (load(case, x) for x in "qkv")
        out, saved = plan.forward(q, k, v)
        want, want_saved = golden_plan(self.ctx, case).forward(q, k, v)
        self.assertLess(rel(out, want), 1e-5)
        dq, _, _ = plan.backward(q, k, v, out, np.ones_like(out), saved)
        want_dq, _, _ = golden_plan(self.ctx, case).backward(q, k, v, want, np.ones_like(want), want_saved)
        self.assertLess(rel(dq, want_dq), 1e-4)

    def test_layouts_agree(self):
        case = cases()[0]
        q, k, v = (load(case, x) for x in "qkv")
        bnhd, _ = golden_plan(self.ctx, case).forward(q, k, v)
        t = [np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q, k, v)]
        bhnd, _ = golden_plan(self.ctx, case, layout="bhnd").forward(*t)
        np.testing.assert_array_equal(bhnd.transpose(0, 2, 1, 3), bnhd)

    def test_array_checks(self):
        case = cases()[0]
        plan = golden_plan(self.ctx, case)
        q, k, v = (load(case, x) for x in "qkv")
        with self.assertRaises(TypeError):
            plan.forward(q.astype(np.float64), k, v)
        with self.assertRaises(ValueError):
            plan.forward(q[:, :1024], k, v)
        with self.assertRaises(ValueError):
            plan.forward(np.asfortranarray(q), k, v)
        out = np.empty_like(q)
        out.flags.writeable = False
        with self.assertRaises(ValueError):
            plan.forward(q, k, v, out=out)
        with self.assertRaises(TypeError):
            plan.forward(q.tolist(), k, v)


class LocalRing(unittest.TestCase):
    def test_two_ranks_on_two_threads(self):
        """W = 2: each rank's shard (chunks r and 3 - r) on its own thread; finite, and the same
        on a second run."""
        world, n = 2, 4096
        rng = np.random.default_rng(5)
        q, k, v, dout = (rng.standard_normal((1, n, 2, 32), dtype=np.float32) for _ in range(4))
        chunks = lambda x, r: np.ascontiguousarray(np.concatenate(  # noqa: E731
            [np.split(x, 2 * world, axis=1)[r], np.split(x, 2 * world, axis=1)[2 * world - 1 - r]], axis=1))

        def run():
            ring, ctx = lh.Ring.local(world), lh.Context("cpu")
            plans = [ctx.plan(seq_len=n, heads=2, head_dim=32, levels=2, pooling=4, topk=512, ring=ring, rank=r)
                     for r in range(world)]
            results, errors = [None] * world, []

            def rank_main(r):
                try:
                    args = [chunks(x, r) for x in (q, k, v)]
                    out, saved = plans[r].forward(*args)
                    results[r] = (out, *plans[r].backward(*args, out, chunks(dout, r), saved))
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            if errors:
                raise errors[0]
            return results

        first, second = run(), run()
        for r in range(world):
            for a, b in zip(first[r], second[r]):
                self.assertTrue(np.isfinite(a).all())
                np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
    _support.run()
